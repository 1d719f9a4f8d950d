"""The evaluation metrics of multimodal sentiment analysis, identical to MMSA's ``MetricsTop``.

The field reports its results with the regression metrics of MMSA (``MMSA.utils.metricsTop``).
:func:`msa_metrics` reproduces them key for key and value for value with NumPy alone (the
library does not depend on scikit-learn), and defines the cases where MMSA crashes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from mtobjectives._validation import check_choice, check_int

__all__ = ["msa_metrics"]

_DATASETS = ("mosi", "mosei", "sims")
# Keys that MMSA computes with scikit-learn (a Python float, rounded by the builtin ``round``);
# all other values are NumPy scalars, rounded by ``np.round``. The two differ at some ties
# (e.g. 1/160 = 0.00625 gives 0.0063 and 0.0062), so each key keeps MMSA's own rounding.
_BUILTIN_ROUNDED = frozenset(
    {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "F1_score"}
)


def _as_array(name: str, value: object) -> np.ndarray:
    """Flatten ``value`` (tensor, array, list, number) to a 1-D floating NumPy array.

    Floating inputs keep their dtype (so comparisons with the bin edges happen in that
    precision, as in MMSA); ``bfloat16`` becomes ``float32`` (exact) and integers ``float64``.
    """
    if isinstance(value, Tensor):
        tensor = value.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {tensor.dtype}")
        array = tensor.cpu().numpy()
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as error:  # e.g. ragged nested lists
            raise TypeError(
                f"{name} must be a tensor, array or sequence of real numbers, got "
                f"{type(value).__name__} ({error})"
            ) from None
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold real numbers, got {type(value).__name__} of dtype {array.dtype}"
        )
    if array.dtype.kind in "iu":
        array = array.astype(np.float64)
    array = array.reshape(-1)
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"{name} must be finite, got {bad} non-finite value(s) (NaN or inf)")
    return array


def _bins_right_closed(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Class ids for intervals ``(e_{i-1}, e_i]``, the edges compared in ``values``' dtype."""
    return np.searchsorted(np.asarray(edges, dtype=values.dtype), values, side="left")


def _accuracy(pred_classes: np.ndarray, true_classes: np.ndarray) -> np.float64:
    """Fraction of equal entries, ``k / N`` in float64."""
    return np.sum(pred_classes == true_classes) / float(len(true_classes))


def _weighted_f1(true_classes: np.ndarray, pred_classes: np.ndarray) -> float:
    r"""Support-weighted F1 over the labels present in either argument.

    Same arithmetic as scikit-learn's ``f1_score(average="weighted")``: per label
    :math:`F_k = 2\,TP_k / (n_k + \hat{n}_k)` (true and predicted counts), averaged with the
    true counts :math:`n_k` as weights.
    """
    labels = np.union1d(true_classes, pred_classes)
    is_true = true_classes[:, None] == labels[None, :]
    is_pred = pred_classes[:, None] == labels[None, :]
    true_count = is_true.sum(axis=0)
    pred_count = is_pred.sum(axis=0)
    hits = (is_true & is_pred).sum(axis=0)
    per_label = (2.0 * hits.astype(np.float64)) / (
        1.0 * true_count.astype(np.float64) + pred_count.astype(np.float64)
    )
    return float(np.average(per_label, weights=true_count))


def _pearson(pred: np.ndarray, target: np.ndarray) -> float:
    """Pearson correlation as ``np.corrcoef``; NaN when either side is constant or N < 2."""
    if pred.size < 2 or np.all(pred == pred[0]) or np.all(target == target[0]):
        return math.nan
    with np.errstate(all="ignore"):
        return np.corrcoef(pred, target)[0][1]


def _mae(pred: np.ndarray, target: np.ndarray) -> np.float64:
    """Mean absolute error in the inputs' dtype, as MMSA; in float64 where that overflows.

    Finite values whose differences exceed the dtype (float16 holds at most 65504) would give
    ``inf`` with an overflow warning; they are computed in float64 instead.
    """
    with np.errstate(over="ignore"):
        mae = np.mean(np.absolute(pred - target)).astype(np.float64)
    if not np.isfinite(mae):
        mae = np.mean(np.absolute(pred.astype(np.float64) - target.astype(np.float64)))
    return mae


def _mosi(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MMSA's ``__eval_mosei_regression`` (also used for MOSI)."""
    binary_truth = target >= 0
    binary_pred = pred >= 0
    non_zero = target != 0
    if np.any(non_zero):
        non0_truth = target[non_zero] > 0
        non0_pred = pred[non_zero] > 0
        non0_acc = float(np.mean(non0_truth == non0_pred))
        non0_f1 = _weighted_f1(non0_truth, non0_pred)
    else:  # MMSA raises IndexError here
        non0_acc = non0_f1 = math.nan
    mae = _mae(pred, target)
    return {
        "Has0_acc_2": float(np.mean(binary_truth == binary_pred)),
        "Has0_F1_score": _weighted_f1(binary_truth, binary_pred),
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _accuracy(
            np.round(np.clip(pred, -2.0, 2.0)), np.round(np.clip(target, -2.0, 2.0))
        ),
        "Mult_acc_7": _accuracy(
            np.round(np.clip(pred, -3.0, 3.0)), np.round(np.clip(target, -3.0, 3.0))
        ),
        "MAE": mae,
        "Corr": _pearson(pred, target),
    }


def _sims(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MMSA's ``__eval_sims_regression``: everything on values clipped to [-1, 1]."""
    pred = np.clip(pred, -1.0, 1.0)
    target = np.clip(target, -1.0, 1.0)

    def accuracy(edges: tuple[float, ...]) -> np.float64:
        return _accuracy(_bins_right_closed(pred, edges), _bins_right_closed(target, edges))

    mae = _mae(pred, target)
    return {
        "Mult_acc_2": accuracy((0.0,)),
        "Mult_acc_3": accuracy((-0.1, 0.1)),
        "Mult_acc_5": accuracy((-0.7, -0.1, 0.1, 0.7)),
        "F1_score": _weighted_f1(
            _bins_right_closed(target, (0.0,)), _bins_right_closed(pred, (0.0,))
        ),
        "MAE": mae,
        "Corr": _pearson(pred, target),
    }


_COMPUTE: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "mosi": _mosi,
    "mosei": _mosi,
    "sims": _sims,
}


def _round(key: str, value: float, decimals: int | None) -> float:
    if decimals is None:
        return float(value)
    if key in _BUILTIN_ROUNDED:
        return float(round(float(value), decimals))
    return float(np.round(np.float64(value), decimals))


def msa_metrics(
    pred: Tensor | np.ndarray | list[float],
    target: Tensor | np.ndarray | list[float],
    dataset: str,
    *,
    decimals: int | None = 4,
) -> dict[str, float]:
    r"""The regression metrics of MMSA's ``MetricsTop``, with the same keys and values.

    With predictions :math:`\hat{y}_i` and labels :math:`y_i`, :math:`i = 1..N`:

    .. math::

        \mathrm{Acc} = \frac{1}{N} \sum_{i=1}^{N} \mathbb{1}\bigl[c(\hat{y}_i) = c(y_i)\bigr],
        \qquad
        \mathrm{F1} = \sum_{k} \frac{n_k}{N} \, \frac{2\, TP_k}{n_k + \hat{n}_k},
        \qquad
        \mathrm{MAE} = \frac{1}{N} \sum_{i=1}^{N} \lvert \hat{y}_i - y_i \rvert,

    where

    - :math:`c` maps a value to its class (below, per key);
    - :math:`TP_k` counts samples of class :math:`k` predicted as :math:`k`, :math:`n_k` and
      :math:`\hat{n}_k` the samples whose label and prediction are in class :math:`k` (the F1
      is support-weighted, as scikit-learn's ``average="weighted"``);
    - ``Corr`` is Pearson's correlation of :math:`\hat{y}` and :math:`y` (``np.corrcoef``).

    Keys for ``"mosi"`` and ``"mosei"`` (no clipping unless stated):

    - ``Has0_acc_2``, ``Has0_F1_score``: classes :math:`y \ge 0` against :math:`y < 0`;
    - ``Non0_acc_2``, ``Non0_F1_score``: only samples with :math:`y \ne 0`, classes
      :math:`y > 0` against :math:`y < 0`;
    - ``Mult_acc_5`` / ``Mult_acc_7``: values clipped to :math:`[-2, 2]` / :math:`[-3, 3]`
      and rounded half to even (``np.round``; this differs from Table 8 at exact halves);
    - ``MAE``, ``Corr``.

    Keys for ``"sims"`` (both sides clipped to :math:`[-1, 1]` first):

    - ``Mult_acc_2``, ``Mult_acc_3``, ``Mult_acc_5``: right-closed bins with edges
      :math:`(0)`, :math:`(-0.1, 0.1)`, :math:`(-0.7, -0.1, 0.1, 0.7)` (0 is negative);
    - ``F1_score`` on the 2-class bins; ``MAE``, ``Corr``.

    Where MMSA fails, this function decides (everything else is identical to MMSA):

    - ``Corr`` is NaN when the predictions or the labels are constant (after clipping for
      SIMS) or :math:`N = 1`: the correlation is undefined. MMSA returns NaN or, when the
      mean of equal values is not exactly that value, a meaningless number.
    - ``Non0_acc_2`` and ``Non0_F1_score`` are NaN when no label is non-zero (MMSA raises
      ``IndexError``).

    Values are computed in the inputs' own floating precision, as MMSA does with the tensors
    it is given (the bin edges, e.g. ``0.1``, are compared in that dtype; ``MAE`` is a mean in
    that dtype, or in float64 where the differences overflow it, e.g. float16 values of
    :math:`\pm 6 \cdot 10^4`, where MMSA gives ``inf``). ``bfloat16`` is read as ``float32``
    and integers as ``float64``. Papers report accuracies and F1 multiplied by 100.

    Args:
        pred: predictions :math:`\hat{y}`: a tensor (any device, any floating dtype, any shape),
            a NumPy array or a list; flattened.
        target: labels :math:`y`, same number of elements as ``pred``.
        dataset: ``"mosi"``, ``"mosei"`` or ``"sims"`` (case-insensitive).
        decimals: round each value to this many decimals the way MMSA does (4 is MMSA's
            rounding); ``None`` returns unrounded values.

    Returns:
        A ``dict`` from MMSA's metric names, in MMSA's order, to plain Python floats.

    Raises:
        ValueError: different numbers of elements, no elements, NaN or infinite values
            (naming ``pred`` or ``target``), unknown ``dataset``, negative ``decimals``.
        TypeError: non-numeric or boolean inputs, non-integer ``decimals``.

    Shape:
        - ``pred``: ``[*]`` with :math:`N` elements.
        - ``target``: ``[*]`` with :math:`N` elements.

    Example:
        >>> import torch
        >>> from mtobjectives.metrics import msa_metrics
        >>> pred = torch.tensor([-1.3, 0.4, 2.2, -0.2, 0.6, -2.0])
        >>> target = torch.tensor([-1.0, 0.6, 1.8, 0.4, 0.0, -2.6])
        >>> for name, value in msa_metrics(pred, target, "mosi").items():
        ...     print(f"{name}: {value}")
        Has0_acc_2: 0.8333
        Has0_F1_score: 0.8381
        Non0_acc_2: 0.8
        Non0_F1_score: 0.8
        Mult_acc_5: 0.6667
        Mult_acc_7: 0.5
        MAE: 0.45
        Corr: 0.941
        >>> msa_metrics(pred / 3, target / 3, "sims")["Mult_acc_3"]
        0.6667
    """
    pred_array = _as_array("pred", pred)
    target_array = _as_array("target", target)
    if pred_array.size != target_array.size:
        raise ValueError(
            f"pred and target must have the same number of elements, "
            f"got {pred_array.size} and {target_array.size}"
        )
    if pred_array.size == 0:
        raise ValueError("pred and target must hold at least one element, got none")
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a string, got {type(dataset).__name__}")
    key = dataset.lower()
    check_choice("dataset", key, _DATASETS)
    if decimals is not None:
        decimals = check_int("decimals", decimals, expected="an int or None")
        if decimals < 0:
            raise ValueError(f"decimals must be >= 0 or None, got {decimals}")
    values = _COMPUTE[key](pred_array, target_array)
    return {name: _round(name, value, decimals) for name, value in values.items()}
