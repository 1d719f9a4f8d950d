"""The configuration's types: the experiment (:class:`ExperimentConfig` and its parts), what one
run trains (:class:`RunConfig`), :func:`freeze` and :func:`fingerprint`.

:mod:`dmmsa.configs` holds the presets (Table 6, the real-data presets, the synthetic default)
built from these types and re-exports them; it is the module to import.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ExperimentConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "RunConfig",
    "StageConfig",
    "TrainConfig",
    "fingerprint",
    "fingerprint_differences",
    "freeze",
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
        confede_sampler: ConFEDE's objective only: ``"as_written"`` (the ids its code hands
            out) or ``"intended"`` (the ids its ranking meant); ``mt.recipes.ConFEDESampler``.
        confede_rebuild_every: ConFEDE's objective only: epochs between sampler rebuilds.
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
    confede_sampler: str = "as_written"
    confede_rebuild_every: int = 2


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
        freeze_encoders: fix every encoder after the pre-training; the fusion trains the head
            (``dmmsa.feature_cache``).
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
    freeze_encoders: bool = False


def freeze(config: Any) -> Any:
    """A deep copy of ``config`` (any of this module's dataclasses) that refuses every change.

    Example:
        >>> from dmmsa.configs import get_config
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
        >>> from dmmsa.configs import get_config
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
