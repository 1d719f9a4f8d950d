"""Coarse-grained binning of sentiment intensity (the class labels of the MSC task).

The coarse-grained Multimodal Sentiment Classification task (MSC, Eq. 8-9 of the DMMSA paper)
needs class labels. :class:`CoarseGrainedBinning` maps a continuous sentiment intensity to the
class of the interval that holds it, with the divisions of Tables 7 (CH-SIMS) and 8
(CMU-MOSI/MOSEI) as presets, and offers what the classes mean (their intervals and centres) and
the optional "restricted prediction scope" of Fig. 6.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from mtobjectives._validation import (
    check_choice,
    check_floating,
    check_int,
    check_real,
    check_same_device,
    check_tensor,
)

__all__ = ["CoarseGrainedBinning"]

# (closed side, low, high, {num_classes: interior edges}) -- Tables 7 and 8 of the paper.
_MOSI_EDGES: dict[int, tuple[float, ...]] = {
    2: (0.0,),
    3: (-0.5, 0.5),
    5: (-1.5, -0.5, 0.5, 1.5),
    7: (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5),
}
_PRESETS: dict[str, tuple[str, float, float, dict[int, tuple[float, ...]]]] = {
    "sims": ("right", -1.0, 1.0, {2: (0.0,), 3: (-0.1, 0.1), 5: (-0.7, -0.1, 0.1, 0.7)}),
    "mosi": ("left", -3.0, 3.0, _MOSI_EDGES),
    "mosei": ("left", -3.0, 3.0, _MOSI_EDGES),
}


def _real(name: str, value: object) -> float:
    """Return ``value`` as a finite ``float``; reject bools, non-numbers and non-finite values."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    number = check_real(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number!r}")
    return number


def _reject_nan(name: str, value: Tensor) -> None:
    if bool(torch.isnan(value).any()):
        bad = int(torch.isnan(value).sum())
        raise ValueError(f"{name} must not contain NaN, got {bad} NaN value(s)")


class CoarseGrainedBinning(nn.Module):
    r"""Map sentiment intensity to coarse classes by fixed interval edges (Tables 7 and 8).

    With interior edges :math:`e_1 < \dots < e_{C-1}` inside the label range :math:`[l, h]`,
    the class of an intensity :math:`y` counts the edges it passes:

    .. math::

        c(y) = \sum_{i=1}^{C-1} \mathbb{1}[y > e_i] \quad \text{(closed="right")}, \qquad
        c(y) = \sum_{i=1}^{C-1} \mathbb{1}[y \ge e_i] \quad \text{(closed="left")},

    where

    - :math:`C` is the number of classes (:attr:`num_classes`), class 0 holds the lowest values;
    - :math:`e_i` are the interior edges (the buffer :attr:`edges`);
    - :math:`[l, h]` is the label range: the intervals are
      :math:`[l, e_1], (e_1, e_2], \dots, (e_{C-1}, h]` for ``closed="right"`` and
      :math:`[l, e_1), [e_1, e_2), \dots, [e_{C-1}, h]` for ``closed="left"``.

    Values outside :math:`[l, h]` (infinities included) fall into the end classes (they are
    clipped); NaN raises :class:`ValueError`. Comparisons are made in the input's dtype: an
    edge is rounded to that dtype first, so a ``float32`` label ``0.1`` lies exactly on the
    edge ``0.1`` as Table 7 intends (comparing in ``float64`` would put it above the edge).
    Custom edges closer together than the input dtype can resolve coincide in that dtype, and
    the classes between them stay empty.

    The presets (:meth:`preset`) reproduce the paper's tables, boundaries included: CH-SIMS is
    closed on the right over :math:`[-1, 1]` (2, 3 or 5 classes), CMU-MOSI and CMU-MOSEI are
    closed on the left over :math:`[-3, 3]` (2, 3, 5 or 7 classes). The evaluation metrics
    (:func:`mtobjectives.metrics.msa_metrics`) follow MMSA instead, whose Acc-5/Acc-7 round
    half to even: they differ from Table 8 at exact half values.

    Args:
        edges: the interior edges :math:`e_1 < \dots < e_{C-1}` (at least one), finite and
            strictly inside ``(low, high)``.
        closed: ``"right"`` for intervals :math:`(e_{i-1}, e_i]`, ``"left"`` for
            :math:`[e_{i-1}, e_i)`; the outer ends :math:`l` and :math:`h` are always closed.
        low: the smallest label value :math:`l`.
        high: the largest label value :math:`h`.

    Attributes:
        edges: ``float64`` buffer ``[C - 1]`` (not saved in ``state_dict``: the binning is
            configuration, not learned state); it follows ``.to(device)``.
        closed: ``"right"`` or ``"left"``.
        low: :math:`l`.
        high: :math:`h`.

    Shape:
        - Input ``y``: ``[*]``, any floating dtype, any device.
        - Output: ``[*]``, ``torch.long``, on the input's device.

    Example:
        >>> import torch
        >>> from mtobjectives import CoarseGrainedBinning
        >>> binning = CoarseGrainedBinning.preset("sims", num_classes=3)
        >>> binning(torch.tensor([-1.5, -0.1, 0.0, 0.1, 0.5]))
        tensor([0, 0, 1, 1, 2])
        >>> binning.intervals
        [(-1.0, -0.1), (-0.1, 0.1), (0.1, 1.0)]
        >>> mosi = CoarseGrainedBinning.preset("mosi", num_classes=3)
        >>> mosi(torch.tensor([[-0.5, 0.5], [3.2, -0.6]]))
        tensor([[1, 2],
                [2, 0]])
        >>> custom = CoarseGrainedBinning([0.25], closed="left", low=0.0, high=1.0)
        >>> custom(torch.tensor([0.0, 0.25, 0.9])), custom.centers
        (tensor([0, 1, 1]), [0.125, 0.625])
    """

    edges: Tensor

    def __init__(
        self,
        edges: Iterable[float],
        *,
        closed: str = "right",
        low: float,
        high: float,
    ) -> None:
        super().__init__()
        check_choice("closed", closed, ("right", "left"))
        low = _real("low", low)
        high = _real("high", high)
        if not low < high:
            raise ValueError(f"low must be smaller than high, got low={low!r}, high={high!r}")
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
            raise TypeError(f"edges must be a sequence of real numbers, got {type(edges).__name__}")
        values = tuple(_real(f"edges[{i}]", e) for i, e in enumerate(edges))
        if not values:
            raise ValueError("edges must hold at least one edge (two classes), got none")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"edges must be strictly increasing, got {list(values)}")
        if not (low < values[0] and values[-1] < high):
            raise ValueError(
                f"edges must lie strictly inside (low, high) = ({low}, {high}), got {list(values)}"
            )
        self.closed = closed
        self.low = low
        self.high = high
        self._edge_values = values
        self.register_buffer("edges", torch.tensor(values, dtype=torch.float64), persistent=False)

    @classmethod
    def preset(cls, dataset: str, num_classes: int = 3) -> CoarseGrainedBinning:
        """The division of Table 7 (``"sims"``) or Table 8 (``"mosi"``, ``"mosei"``).

        Args:
            dataset: ``"sims"`` (CH-SIMS), ``"mosi"`` or ``"mosei"``; case-insensitive.
            num_classes: 2, 3 or 5 for CH-SIMS; 2, 3, 5 or 7 for MOSI/MOSEI. The MSC task's
                default is 3 (negative, neutral, positive).

        Returns:
            A :class:`CoarseGrainedBinning` with the table's edges, closed side and range.

        Example:
            >>> from mtobjectives import CoarseGrainedBinning
            >>> CoarseGrainedBinning.preset("mosei", num_classes=5)
            CoarseGrainedBinning(edges=[-1.5, -0.5, 0.5, 1.5], closed='left', low=-3.0, high=3.0)
        """
        if not isinstance(dataset, str):
            raise TypeError(f"dataset must be a string, got {type(dataset).__name__}")
        key = dataset.lower()
        check_choice("dataset", key, tuple(_PRESETS))
        closed, low, high, table = _PRESETS[key]
        num_classes = check_int("num_classes", num_classes)
        if num_classes not in table:
            options = " | ".join(str(c) for c in table)
            raise ValueError(
                f"num_classes for dataset {key!r} must be one of {options}, got {num_classes}"
            )
        return cls(table[num_classes], closed=closed, low=low, high=high)

    @property
    def num_classes(self) -> int:
        """The number of classes :math:`C` (one more than the number of edges)."""
        return len(self._edge_values) + 1

    @property
    def intervals(self) -> list[tuple[float, float]]:
        """The ``(lower, upper)`` bounds of each class's interval, class 0 first.

        Which end is open follows :attr:`closed`; the outer ends are :attr:`low` and
        :attr:`high`.
        """
        points = (self.low, *self._edge_values, self.high)
        return list(zip(points[:-1], points[1:]))

    @property
    def centers(self) -> list[float]:
        """The midpoint of each class's interval, class 0 first."""
        return [(lo + hi) / 2 for lo, hi in self.intervals]

    def _boundaries(self, like: Tensor) -> Tensor:
        """The edges in ``like``'s dtype and device (rounded once from their exact values)."""
        if self.edges.dtype != torch.float64:
            # The module was cast (e.g. by ``model.half()``): rebuild from the exact values.
            return torch.tensor(self._edge_values, dtype=like.dtype, device=like.device)
        return self.edges.to(device=like.device, dtype=like.dtype)

    def forward(self, y: Tensor) -> Tensor:
        """Class ids of the intensities ``y`` (see the class docstring for the rule).

        Args:
            y: sentiment intensities, floating point, any shape. No NaN.

        Returns:
            ``torch.long`` class ids in ``[0, num_classes)`` with the shape of ``y``.
        """
        check_floating("y", y)
        _reject_nan("y", y)
        return torch.bucketize(y.contiguous(), self._boundaries(y), right=self.closed == "left")

    def constrain(self, prediction: Tensor, classes_or_logits: Tensor) -> Tensor:
        r"""Clamp regression outputs into the interval of their predicted class.

        This is the "restricted prediction scope" of the paper's Fig. 6, as an inference-time
        option:

        .. math::

            \hat{y}' = \min\bigl(\max(\hat{y}, a_c), b_c\bigr), \qquad
            c = \arg\max_k z_k \ \text{(or given class ids)},

        where :math:`\hat{y}` is the regression output, :math:`z` the classifier's logits,
        :math:`[a_c, b_c]` the closure of class :math:`c`'s interval (:attr:`intervals`).

        It is off by default: nothing in the library calls it, and whether it helps depends on
        the classifier's accuracy, so measure its effect (e.g. MAE with and without it) before
        relying on it. Predictions already inside the interval are returned unchanged (bit for
        bit); predictions outside land on the nearer end, which may be an open end that
        :meth:`forward` assigns to the neighbouring class. Values outside ``[low, high]`` are
        clamped into it for the end classes.

        Args:
            prediction: regression outputs :math:`\hat{y}`, floating point, no NaN.
            classes_or_logits: integer class ids with the shape of ``prediction``, or
                floating-point logits with one more trailing dimension of size
                ``num_classes`` (the class is the argmax), on the same device.

        Returns:
            The clamped predictions, same shape, dtype and device as ``prediction``;
            differentiable with respect to ``prediction`` where it is inside the interval.

        Shape:
            - ``prediction``: ``[*]``.
            - ``classes_or_logits``: ``[*]`` (integer) or ``[*, C]`` (floating).
            - Output: ``[*]``.

        Example:
            >>> import torch
            >>> from mtobjectives import CoarseGrainedBinning
            >>> binning = CoarseGrainedBinning.preset("mosi", num_classes=3)
            >>> prediction = torch.tensor([-1.2, 0.3, 0.3])
            >>> binning.constrain(prediction, torch.tensor([1, 1, 2]))
            tensor([-0.5000,  0.3000,  0.5000])
            >>> logits = torch.tensor([[2.0, 0.1, 0.3], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
            >>> binning.constrain(prediction, logits)
            tensor([-1.2000,  0.3000,  0.5000])
        """
        check_floating("prediction", prediction)
        check_tensor("classes_or_logits", classes_or_logits)
        check_same_device(prediction=prediction, classes_or_logits=classes_or_logits)
        _reject_nan("prediction", prediction)
        num_classes = self.num_classes
        if classes_or_logits.is_floating_point():
            expected = (*prediction.shape, num_classes)
            if tuple(classes_or_logits.shape) != expected:
                raise ValueError(
                    f"classes_or_logits as logits must have shape {list(expected)} "
                    f"(prediction's shape plus num_classes), "
                    f"got {list(classes_or_logits.shape)}"
                )
            _reject_nan("classes_or_logits", classes_or_logits)
            classes = classes_or_logits.argmax(dim=-1)
        elif classes_or_logits.dtype == torch.bool or classes_or_logits.is_complex():
            raise TypeError(
                "classes_or_logits must be integer class ids or floating-point logits, "
                f"got dtype {classes_or_logits.dtype}"
            )
        else:
            if classes_or_logits.shape != prediction.shape:
                raise ValueError(
                    f"classes_or_logits as class ids must have prediction's shape "
                    f"{list(prediction.shape)}, got {list(classes_or_logits.shape)}"
                )
            classes = classes_or_logits.long()
            if classes.numel() and bool((classes < 0).any() | (classes >= num_classes).any()):
                raise ValueError(
                    f"classes_or_logits must hold class ids in [0, {num_classes}), "
                    f"got values in [{int(classes.min())}, {int(classes.max())}]"
                )
        inner = self._boundaries(prediction)
        lower = torch.cat([inner.new_full((1,), self.low), inner])
        upper = torch.cat([inner, inner.new_full((1,), self.high)])
        return torch.clamp(prediction, lower[classes], upper[classes])

    def extra_repr(self) -> str:
        return (
            f"edges={list(self._edge_values)}, closed={self.closed!r}, "
            f"low={self.low}, high={self.high}"
        )
