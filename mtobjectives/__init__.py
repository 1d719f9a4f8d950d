"""mtobjectives: training objectives for multimodal sentiment analysis (DMMSA)."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Temporary lazy table while the modules are written in parallel; replaced by explicit imports.
_LAZY = {
    "MultiNTXentLoss": "contrastive",
    "ContrastivePairs": "contrastive",
    "text_anchored_pairs": "contrastive",
    "CoarseGrainedBinning": "binning",
    "Weighter": "weighting",
    "GDWGWeighter": "weighting",
    "DWAWeighter": "weighting",
    "EqualWeighter": "weighting",
    "MultiTaskObjective": "objective",
    "ObjectiveResult": "objective",
    "Task": "objective",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    if name in {"functional", "metrics", "heads"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mtobjectives' has no attribute {name!r}")
