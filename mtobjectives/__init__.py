"""mtobjectives: training objectives for multimodal sentiment analysis (DMMSA).

The four objectives of DMMSA as drop-in modules for any MSA backbone:

- :class:`MultiNTXentLoss` and :func:`text_anchored_pairs` (Eq. 3, 11-12),
- :class:`CoarseGrainedBinning` for the coarse classification task (Tables 7-8),
- :class:`GDWGWeighter` (Eq. 13-14), with :class:`DWAWeighter`, :class:`EqualWeighter` and
  :class:`UncertaintyWeighter`,
- :class:`MultiTaskObjective` and its :meth:`MultiTaskObjective.dmmsa` preset (Eq. 5), whose
  four terms are the public :func:`msr_loss`, :func:`msc_loss`, :func:`uni_loss` and
  :func:`cl_loss`, with per-task schedules such as :class:`WarmupSchedule`,

the field's other objectives as swappable recipes in :mod:`mtobjectives.recipes` (ConFEDE,
Self-MM, MISA, plain regression, beside DMMSA), plus :class:`heads.DecompositionHead` to attach
them to an existing model, the functional forms in
:mod:`mtobjectives.functional`, and the field's metrics in :mod:`mtobjectives.metrics`.
"""

from __future__ import annotations

from mtobjectives import adapters, functional, heads, metrics, recipes
from mtobjectives.binning import CoarseGrainedBinning
from mtobjectives.contrastive import (
    ContrastivePairs,
    MultiNTXentLoss,
    PairBuilder,
    has_text_anchored_pair,
    text_anchored_pairs,
)
from mtobjectives.heads import DecompositionHead, DMMSAOutputs
from mtobjectives.metrics import msa_metrics
from mtobjectives.objective import (
    FEATURE_NAMES,
    NUM_ANCHORS,
    BatchCheck,
    MultiTaskObjective,
    ObjectiveResult,
    Task,
)
from mtobjectives.recipes.dmmsa import check_dmmsa_batch, cl_loss, msc_loss, msr_loss, uni_loss
from mtobjectives.schedules import TaskSchedule, WarmupSchedule
from mtobjectives.weighting import (
    DWAWeighter,
    EqualWeighter,
    GDWGWeighter,
    UncertaintyWeighter,
    Weighter,
)

__version__ = "0.1.0"

__all__ = [
    "FEATURE_NAMES",
    "NUM_ANCHORS",
    "BatchCheck",
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
    "PairBuilder",
    "Task",
    "TaskSchedule",
    "UncertaintyWeighter",
    "WarmupSchedule",
    "Weighter",
    "__version__",
    "adapters",
    "check_dmmsa_batch",
    "cl_loss",
    "functional",
    "has_text_anchored_pair",
    "heads",
    "metrics",
    "msa_metrics",
    "msc_loss",
    "msr_loss",
    "recipes",
    "text_anchored_pairs",
    "uni_loss",
]
