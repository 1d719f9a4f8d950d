r"""The Multi NT-Xent loss as a module, and DMMSA's text-anchored pair builder (Eq. 11-12)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mtobjectives._validation import check_choice, check_floating, check_positive, check_shape
from mtobjectives.functional import (
    FORMS,
    REDUCTIONS,
    Form,
    Reduction,
    multi_nt_xent,
    multi_nt_xent_from_labels,
)

__all__ = [
    "ContrastivePairs",
    "MultiNTXentLoss",
    "PairBuilder",
    "has_text_anchored_pair",
    "text_anchored_pairs",
]

POSITIVE_NAMES: tuple[str, ...] = ("V_s", "A_s")


class MultiNTXentLoss(nn.Module):
    r"""Multi NT-Xent loss of DMMSA (Eq. 3), with SupCon's form as an option.

    For an anchor :math:`a` with positives :math:`P(a)` and negatives :math:`N(a)`:

    .. math::

        \mathcal{L}_{in}(a) = -\log
            \frac{\sum_{p \in P(a)} \exp(s(a, p) / \tau)}
                 {\sum_{k \in P(a) \cup N(a)} \exp(s(a, k) / \tau)}
        \qquad
        \mathcal{L}_{out}(a) = -\frac{1}{|P(a)|} \sum_{p \in P(a)} \log
            \frac{\exp(s(a, p) / \tau)}{\sum_{k \in P(a) \cup N(a)} \exp(s(a, k) / \tau)}

    where

    - :math:`s` is the cosine similarity and :math:`\tau` the ``temperature``,
    - :math:`\mathcal{L}_{in}` is the paper's loss (``form="in"``, default): it tends to 0 at
      convergence for any number of positives (Eq. 4),
    - :math:`\mathcal{L}_{out}` is the supervised contrastive loss of Khosla et al. (2020)
      (``form="out"``).

    :meth:`forward` takes each anchor with its own candidates (see
    :func:`~mtobjectives.functional.multi_nt_xent` and :func:`text_anchored_pairs`);
    :meth:`from_labels` takes a batch with integer labels (see
    :func:`~mtobjectives.functional.multi_nt_xent_from_labels`). Anchors without a positive are
    left out of the mean; the number of anchors used by the last call is kept in
    :attr:`anchors_used` (a 0-d int64 tensor), so a loss of zero because no anchor had a
    positive can be told apart from a genuinely small loss.

    Args:
        temperature: :math:`\tau > 0`. Default 0.5 (ConFEDE's setting, kept by the paper).
        form: ``"in"`` or ``"out"``.
        reduction: ``"mean"`` over anchors with a positive, ``"sum"`` or ``"none"``.

    Shape:
        - anchor: :math:`(B, D)`; candidates: :math:`(B, K, D)`;
          positive_mask, valid_mask: :math:`(B, K)` bool.
        - embeddings: :math:`(N, D)`; labels: :math:`(N,)` integer.
        - output: :math:`()`, or :math:`(B,)` / :math:`(N,)` with ``reduction="none"``.

    Example:
        >>> import torch
        >>> import mtobjectives as mt
        >>> _ = torch.manual_seed(0)
        >>> features = {name: torch.randn(8, 16) for name in ("T_s", "T_d", "A_s", "A_d")}
        >>> pairs = mt.text_anchored_pairs(**features)  # vision is missing: its pairs drop
        >>> pairs.candidate_names
        ('A_s', 'T_d', 'A_d')
        >>> criterion = mt.MultiNTXentLoss(temperature=0.5)
        >>> loss = criterion(pairs.anchor, pairs.candidates, pairs.positive_mask)
        >>> print(f"{loss.item():.4f}", criterion.anchors_used.item())
        1.3850 8
    """

    anchors_used: Tensor

    def __init__(
        self, temperature: float = 0.5, form: Form = "in", reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_choice("form", form, FORMS)
        check_choice("reduction", reduction, REDUCTIONS)
        self.temperature = float(temperature)
        self.form: Form = form
        self.reduction: Reduction = reduction
        self.register_buffer("anchors_used", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(
        self,
        anchor: Tensor,
        candidates: Tensor,
        positive_mask: Tensor,
        valid_mask: Tensor | None = None,
    ) -> Tensor:
        """Loss of anchors against their own candidates (see the class docstring)."""
        loss, count = multi_nt_xent(
            anchor,
            candidates,
            positive_mask,
            valid_mask=valid_mask,
            temperature=self.temperature,
            form=self.form,
            reduction=self.reduction,
            return_count=True,
        )
        self.anchors_used = count
        return loss

    def from_labels(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss over a labelled batch: positives share the label, self is excluded."""
        loss, count = multi_nt_xent_from_labels(
            embeddings,
            labels,
            temperature=self.temperature,
            form=self.form,
            reduction=self.reduction,
            return_count=True,
        )
        self.anchors_used = count
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, form={self.form!r}, reduction={self.reduction!r}"


class ContrastivePairs(NamedTuple):
    """Anchors with their candidates, ready for :class:`MultiNTXentLoss`.

    Attributes:
        anchor: ``[B, D]`` anchor embeddings.
        candidates: ``[B, K, D]`` candidate embeddings, in the order of ``candidate_names``.
        positive_mask: ``[B, K]`` bool, ``True`` for positives.
        valid_mask: ``[B, K]`` bool, ``True`` for candidates that take part.
        candidate_names: the name of each of the ``K`` candidates.
    """

    anchor: Tensor
    candidates: Tensor
    positive_mask: Tensor
    valid_mask: Tensor
    candidate_names: tuple[str, ...]


#: A pair builder: called with the decomposed features present in a batch as keyword arguments
#: (``T_s=..., A_s=..., ...``, see :data:`~mtobjectives.FEATURE_NAMES`), it returns the
#: :class:`ContrastivePairs` of the batch, or ``None`` when it forms none.
#: :func:`text_anchored_pairs` is one.
PairBuilder = Callable[..., ContrastivePairs | None]


def has_text_anchored_pair(names: Collection[str]) -> bool:
    r"""Whether features named ``names`` hold a text-anchored positive pair (Eq. 11).

    DMMSA's contrastive task needs the anchor :math:`T_s` and at least one positive,
    :math:`A_s` or :math:`V_s`; without them :math:`L_{CL}` is undefined (no anchor has a
    positive). For modalities, pass ``[m + "_s" for m in modalities]``.

    Args:
        names: feature names, e.g. the keys of ``outputs["features"]``.

    Returns:
        ``True`` when ``"T_s"`` and ``"A_s"`` or ``"V_s"`` are among ``names``.

    Example:
        >>> import mtobjectives as mt
        >>> mt.has_text_anchored_pair(["T_s", "T_d", "V_s"]), mt.has_text_anchored_pair(["T_s"])
        (True, False)
    """
    return "T_s" in names and any(name in names for name in POSITIVE_NAMES)


def text_anchored_pairs(
    T_s: Tensor | None,
    T_d: Tensor | None = None,
    A_s: Tensor | None = None,
    A_d: Tensor | None = None,
    V_s: Tensor | None = None,
    V_d: Tensor | None = None,
) -> ContrastivePairs:
    r"""DMMSA's text-anchored contrastive pairs (Eq. 11-12).

    The text similarity feature of each sample is the anchor; the pairs are formed within the
    sample:

    .. math::

        P = \{(T_s, V_s), (T_s, A_s)\}, \qquad N = \{(T_s, T_d), (T_s, V_d), (T_s, A_d)\}

    where :math:`M_s` and :math:`M_d` are the similarity and dissimilarity features of modality
    :math:`M \in \{T, A, V\}`. A feature given as ``None`` (a missing modality) drops its pair;
    with no candidate left ``K = 0`` and the loss is a zero connected to the graph.
    Candidates are ordered positives first: ``V_s, A_s, T_d, V_d, A_d`` (those present).

    Args:
        T_s: Text similarity features, the anchors (required).
        T_d: Text dissimilarity features (negative).
        A_s: Audio similarity features (positive).
        A_d: Audio dissimilarity features (negative).
        V_s: Vision similarity features (positive).
        V_d: Vision dissimilarity features (negative).

    Returns:
        :class:`ContrastivePairs` with ``valid_mask`` all ``True``.

    Raises:
        ValueError: If ``T_s`` is ``None`` or the features differ in shape.
        TypeError: If a feature is not a floating-point tensor.

    Shape:
        - every feature: :math:`(B, D)`.
        - anchor: :math:`(B, D)`; candidates: :math:`(B, K, D)`; masks: :math:`(B, K)`,
          with :math:`K \le 5` the number of features given besides ``T_s``.

    Example:
        >>> import torch
        >>> import mtobjectives as mt
        >>> features = {name: torch.randn(4, 8) for name in ("T_s", "T_d", "A_s", "V_s", "V_d")}
        >>> pairs = mt.text_anchored_pairs(**features)
        >>> pairs.candidate_names
        ('V_s', 'A_s', 'T_d', 'V_d')
        >>> pairs.candidates.shape
        torch.Size([4, 4, 8])
        >>> pairs.positive_mask[0].tolist()
        [True, True, False, False]
    """
    if T_s is None:
        raise ValueError("T_s must be a tensor [B, D] (it is the anchor), got None")
    check_floating("T_s", T_s)
    check_shape("T_s", T_s, ("B", "D"))
    given = {"V_s": V_s, "A_s": A_s, "T_d": T_d, "V_d": V_d, "A_d": A_d}
    present = {name: feature for name, feature in given.items() if feature is not None}
    for name, feature in present.items():
        check_floating(name, feature)
        if feature.shape != T_s.shape:
            raise ValueError(
                f"{name} must have the shape of T_s {tuple(T_s.shape)}, "
                f"got shape {tuple(feature.shape)}"
            )
        if feature.device != T_s.device:
            raise ValueError(
                f"{name} must be on the device of T_s ({T_s.device}), got {feature.device}"
            )
    names = tuple(present)  # positives first: V_s, A_s, then T_d, V_d, A_d

    batch, dim = T_s.shape
    if present:
        candidates = torch.stack(list(present.values()), dim=1)
    else:
        candidates = T_s.new_zeros((batch, 0, dim))
    is_positive = torch.tensor([name in POSITIVE_NAMES for name in names], dtype=torch.bool)
    positive_mask = is_positive.to(T_s.device).expand(batch, len(names)).contiguous()
    valid_mask = torch.ones_like(positive_mask)
    return ContrastivePairs(T_s, candidates, positive_mask, valid_mask, names)
