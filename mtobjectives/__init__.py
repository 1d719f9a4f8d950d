"""mtobjectives: training objectives for multimodal sentiment analysis (DMMSA).

The four objectives of DMMSA as drop-in modules for any MSA backbone:

- :class:`MultiNTXentLoss` and :func:`text_anchored_pairs` (Eq. 3, 11-12),
- :class:`CoarseGrainedBinning` for the coarse classification task (Tables 7-8),
- :class:`GDWGWeighter` (Eq. 13-14), with :class:`DWAWeighter` and :class:`EqualWeighter`,
- :class:`MultiTaskObjective` and its :meth:`MultiTaskObjective.dmmsa` preset (Eq. 5),

plus :class:`heads.DecompositionHead` to attach them to an existing model, the functional forms in
:mod:`mtobjectives.functional`, and the field's metrics in :mod:`mtobjectives.metrics`.
"""

from __future__ import annotations

from mtobjectives import functional, heads, metrics
from mtobjectives.binning import CoarseGrainedBinning
from mtobjectives.contrastive import (
    ContrastivePairs,
    MultiNTXentLoss,
    has_text_anchored_pair,
    text_anchored_pairs,
)
from mtobjectives.heads import DecompositionHead, DMMSAOutputs
from mtobjectives.metrics import msa_metrics
from mtobjectives.objective import FEATURE_NAMES, MultiTaskObjective, ObjectiveResult, Task
from mtobjectives.weighting import DWAWeighter, EqualWeighter, GDWGWeighter, Weighter

__version__ = "0.1.0"

__all__ = [
    "FEATURE_NAMES",
    "CoarseGrainedBinning",
    "ContrastivePairs",
    "DMMSAOutputs",
    "DWAWeighter",
    "DecompositionHead",
    "EqualWeighter",
    "GDWGWeighter",
    "MultiNTXentLoss",
    "MultiTaskObjective",
    "ObjectiveResult",
    "Task",
    "Weighter",
    "__version__",
    "functional",
    "has_text_anchored_pair",
    "heads",
    "metrics",
    "msa_metrics",
    "text_anchored_pairs",
]
