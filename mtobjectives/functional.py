r"""Functional form of the Multi NT-Xent contrastive loss (DMMSA, Eq. 3).

Two entry points share one definition of the loss:

- :func:`multi_nt_xent` takes each anchor with its own candidates (the paper's text-anchored
  pairs, Eq. 11-12): ``anchor [B, D]``, ``candidates [B, K, D]``, ``positive_mask [B, K]``.
  Its cost and memory are :math:`O(B K D)` and the loss itself works on ``[B, K]``.
- :func:`multi_nt_xent_from_labels` takes a batch of embeddings and integer labels
  (SupCon-like): every other sample is a candidate and those sharing the label are positives.
  It works on ``[N, N]`` tensors, with a fused backward pass, and never enumerates pairs of
  pairs.

Both compute cosine similarity, divide by the temperature and take masked log-sum-exps (never
``exp`` of raw logits), so that the loss is finite for finite inputs of any scale. A vector whose
L2 norm is below :data:`MIN_NORM` (1e-6; for a float16 loss below
:math:`\max(10^{-6}, 8 / (65504\,\tau))`, where its gradient would no longer fit float16) has
no direction: it counts as the zero vector, its cosine with everything is 0 and it receives a
gradient of exactly 0 (a dead ReLU, or a vanishing row, never sends a huge gradient into
gradient-norm clipping). Every other vector gets the exact gradient up to rounding, of size up
to about :math:`2 / (\tau \lVert x \rVert)`, which is finite. Half-precision inputs are
computed in float32 and the result is returned in the input dtype; inside a
:func:`torch.autocast` region autocast is switched off for the computation, so that holds there
too (and ``backward()`` may run inside or outside the region). A temperature
for which an anchor's loss (up to :math:`2 / \tau + \log K`) would overflow the returned dtype
(float16: :math:`\tau < 3 \cdot 10^{-5}`) raises :class:`ValueError`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal, overload

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from mtobjectives._misa import cmd, misa_diff_loss
from mtobjectives._validation import (
    check_choice,
    check_floating,
    check_positive,
    check_same_device,
    check_shape,
    check_tensor,
)

__all__ = ["MIN_NORM", "cmd", "misa_diff_loss", "multi_nt_xent", "multi_nt_xent_from_labels"]

Form = Literal["in", "out"]
Reduction = Literal["mean", "sum", "none"]

FORMS: tuple[str, ...] = ("in", "out")
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
NORMALIZE_EPS = 1e-12  # the ``eps`` of :func:`torch.nn.functional.normalize`
#: Embeddings whose L2 norm is below this carry no direction: they count as zero vectors (cosine
#: 0 with everything) and receive no gradient, so that a dead ReLU or a vanishing row gives a
#: finite, bounded gradient instead of one of size ``1 / (tau |x|)``.
MIN_NORM = 1e-6


# --------------------------------------------------------------------------------------------
# Per-anchor form
# --------------------------------------------------------------------------------------------


@overload
def multi_nt_xent(
    anchor: Tensor,
    candidates: Tensor,
    positive_mask: Tensor,
    *,
    valid_mask: Tensor | None = ...,
    temperature: float = ...,
    form: Form = ...,
    reduction: Reduction = ...,
    return_count: Literal[False] = ...,
) -> Tensor: ...


@overload
def multi_nt_xent(
    anchor: Tensor,
    candidates: Tensor,
    positive_mask: Tensor,
    *,
    valid_mask: Tensor | None = ...,
    temperature: float = ...,
    form: Form = ...,
    reduction: Reduction = ...,
    return_count: Literal[True],
) -> tuple[Tensor, Tensor]: ...


def multi_nt_xent(
    anchor: Tensor,
    candidates: Tensor,
    positive_mask: Tensor,
    *,
    valid_mask: Tensor | None = None,
    temperature: float = 0.5,
    form: Form = "in",
    reduction: Reduction = "mean",
    return_count: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Multi NT-Xent loss (DMMSA, Eq. 3) of anchors against their own candidates.

    For an anchor :math:`a` with positives :math:`P(a)` and negatives :math:`N(a)` among its
    candidates, the paper's form (``form="in"``, the default) is

    .. math::

        \mathcal{L}_{in}(a) = -\log
            \frac{\sum_{p \in P(a)} \exp(s(a, p) / \tau)}
                 {\sum_{k \in P(a) \cup N(a)} \exp(s(a, k) / \tau)}

    and SupCon's form (Khosla et al., 2020, ``form="out"``) averages the logarithm instead:

    .. math::

        \mathcal{L}_{out}(a) = -\frac{1}{|P(a)|} \sum_{p \in P(a)} \log
            \frac{\exp(s(a, p) / \tau)}{\sum_{k \in P(a) \cup N(a)} \exp(s(a, k) / \tau)}

    where

    - :math:`s(a, k) = a^\top k / (\lVert a \rVert \, \lVert k \rVert)` is the cosine
      similarity,
    - :math:`\tau` is ``temperature``,
    - :math:`P(a)` are the candidates where ``positive_mask & valid_mask`` holds and
      :math:`N(a)` those where ``valid_mask & ~positive_mask`` holds; candidates outside
      ``valid_mask`` are neither (a ``positive_mask`` entry outside ``valid_mask`` is ignored).

    With one positive both forms equal NT-Xent (Eq. 1). When the positives dominate,
    :math:`\mathcal{L}_{in} \to 0` for any :math:`|P(a)|` (Eq. 4), whereas
    :math:`\mathcal{L}_{out} \to \log |P(a)|`; by Jensen's inequality
    :math:`\mathcal{L}_{in} \le \mathcal{L}_{out}`.

    Anchors without a positive have no loss: they are 0 in ``reduction="none"``, add nothing to
    ``"sum"`` and are left out of the ``"mean"``, which divides by the number of anchors with a
    positive. If no anchor has one, the result is a zero that stays connected to the graph
    (its gradient is zero, not an error); ``return_count=True`` makes this observable.

    Numerics: masked log-sum-exps (never ``exp`` of raw logits), and each vector is divided by
    its largest absolute entry before it is normalised, so the value is finite for finite inputs
    of any scale and any :math:`\tau` whose inverse is finite. A vector of L2 norm below
    :data:`MIN_NORM` (1e-6; float16: :math:`\max(10^{-6}, 8 / (65504\,\tau))`) has no
    direction: its cosines are 0 and its gradient is exactly 0, so a zero row (a dead ReLU) or
    a vanishing one gives a finite, bounded gradient. Every other vector gets the exact
    gradient up to rounding, of size at most about :math:`2 / (\lVert x \rVert \tau)`.
    Half-precision inputs are computed in float32, also under :func:`torch.autocast`
    (switched off inside), and the loss is returned in their dtype, so a :math:`\tau` for which
    an anchor's loss (at most :math:`2 / \tau + \log K`) would overflow it raises
    :class:`ValueError` (float16: :math:`\tau \lesssim 3 \cdot 10^{-5}`); with
    ``reduction="sum"`` the sum over anchors can still exceed float16.

    A NaN or inf that takes part in the loss (in an anchor with a positive, or in one of its
    candidates inside ``valid_mask``) makes that anchor's loss, and so the mean and the sum,
    NaN; it is not checked, to avoid a device synchronisation. Entries that take no part
    (candidates outside ``valid_mask``, anchors without a positive and their candidates) are
    replaced by zeros before any arithmetic, so a non-finite value there changes neither the
    loss nor the gradient, which stay finite (that entry's own gradient is 0).

    Args:
        anchor: Anchor embeddings (any scale; they are L2-normalised here).
        candidates: ``K`` candidate embeddings per anchor.
        positive_mask: ``True`` where a candidate is a positive of its anchor.
        valid_mask: ``True`` where a candidate takes part at all (default: all of them).
        temperature: :math:`\tau > 0`, finite (a Python or NumPy number).
        form: ``"in"`` (the paper's Eq. 3) or ``"out"`` (SupCon's :math:`\mathcal{L}_{out}`).
        reduction: ``"mean"`` over anchors with a positive, ``"sum"`` or ``"none"``.
        return_count: Also return the number of anchors with at least one positive.

    Returns:
        The loss, in the dtype of the inputs (half-precision inputs are computed in float32);
        with ``return_count=True`` a tuple ``(loss, count)`` where ``count`` is a 0-d int64
        tensor.

    Raises:
        TypeError: If an input is not a tensor, the embeddings are not floating point or a mask
            is not bool.
        ValueError: If shapes, batch sizes, ``temperature``, ``form`` or ``reduction`` are
            invalid, or the tensors are on different devices.

    Shape:
        - anchor: :math:`(B, D)`.
        - candidates: :math:`(B, K, D)`.
        - positive_mask, valid_mask: :math:`(B, K)`, bool.
        - output: :math:`()` for ``"mean"`` and ``"sum"``, :math:`(B,)` for ``"none"``.

    Example:
        >>> import torch
        >>> from mtobjectives import functional as F
        >>> _ = torch.manual_seed(0)
        >>> anchor = torch.randn(4, 8)
        >>> candidates = torch.randn(4, 5, 8)
        >>> positive_mask = torch.tensor([True, True, False, False, False]).expand(4, 5)
        >>> loss, count = F.multi_nt_xent(anchor, candidates, positive_mask, return_count=True)
        >>> print(f"{loss.item():.4f}", count.item())
        0.6439 4
        >>> F.multi_nt_xent(anchor, candidates, positive_mask, reduction="none").shape
        torch.Size([4])
    """
    temperature = _check_options(temperature, form, reduction, return_count)
    check_floating("anchor", anchor)
    check_floating("candidates", candidates)
    check_shape("anchor", anchor, ("B", "D"))
    check_shape("candidates", candidates, ("B", "K", "D"))
    batch, dim = anchor.shape
    num_candidates = candidates.shape[1]
    _check_size("candidates", candidates, 0, batch, "the batch size B of anchor")
    _check_size("candidates", candidates, 2, dim, "the embedding size D of anchor")
    _check_mask("positive_mask", positive_mask, batch, num_candidates)
    if valid_mask is not None:
        _check_mask("valid_mask", valid_mask, batch, num_candidates)
    check_same_device(
        anchor=anchor, candidates=candidates, positive_mask=positive_mask, valid_mask=valid_mask
    )

    out_dtype = torch.promote_types(anchor.dtype, candidates.dtype)
    compute_dtype = _compute_dtype(out_dtype)
    _check_temperature_range(temperature, compute_dtype, out_dtype, num_candidates)

    valid = torch.ones_like(positive_mask) if valid_mask is None else valid_mask
    positive = positive_mask & valid
    has_positive = positive.any(dim=-1)
    # What takes no part in the loss is zeroed before any arithmetic (torch.where's backward
    # selects, it never multiplies), so a NaN there cannot reach the graph: a finite loss has
    # a finite gradient.
    taking_part = valid & has_positive.unsqueeze(-1)
    with _no_autocast(anchor.device):
        anchor = torch.where(has_positive.unsqueeze(-1), anchor.to(compute_dtype), 0.0)
        candidates = torch.where(taking_part.unsqueeze(-1), candidates.to(compute_dtype), 0.0)
        min_norm = _min_norm(out_dtype, temperature)
        cosine = _cosine_to_candidates(_unit(anchor, min_norm), candidates, min_norm)
        logits = cosine * (1.0 / temperature)  # [B, K]
        losses, _ = _anchor_losses(logits, taking_part, positive, form)
        return _reduce(losses, has_positive, reduction, out_dtype, return_count)


def _anchor_losses(
    logits: Tensor, valid: Tensor, positive: Tensor, form: str
) -> tuple[Tensor, Tensor]:
    """Per-anchor loss ``[B]`` (0 without a positive) and which anchors have a positive."""
    log_denominator = _masked_logsumexp(logits, valid)
    if form == "in":
        log_numerator = _masked_logsumexp(logits, positive)
    else:
        count = positive.sum(dim=-1).clamp_min(1)
        log_numerator = torch.where(positive, logits, 0.0).sum(dim=-1) / count
    has_positive = positive.any(dim=-1)
    losses = torch.where(has_positive, log_denominator - log_numerator, 0.0)
    return losses, has_positive


def _masked_logsumexp(logits: Tensor, mask: Tensor) -> Tensor:
    """``log(sum(exp(logits)))`` over the entries where ``mask`` holds, along the last dim.

    Rows without an entry give 0 (never ``-inf``). A NaN among a row's entries makes its
    result NaN; entries outside the mask never enter the sum.
    """
    if logits.shape[-1] == 0:
        return logits.sum(dim=-1)  # zeros, still connected to the graph
    has_entry = mask.any(dim=-1)
    shift = _row_shift(logits.detach().masked_fill(~mask, float("-inf")))
    shifted = torch.where(mask, logits - shift, 0.0)  # <= 0 inside the mask
    total = torch.where(mask, shifted.exp(), 0.0).sum(dim=-1)  # >= 1 (or NaN) with an entry
    return torch.where(has_entry, total, 1.0).log() + shift.squeeze(-1)


# --------------------------------------------------------------------------------------------
# Label form
# --------------------------------------------------------------------------------------------


@overload
def multi_nt_xent_from_labels(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float = ...,
    form: Form = ...,
    reduction: Reduction = ...,
    return_count: Literal[False] = ...,
) -> Tensor: ...


@overload
def multi_nt_xent_from_labels(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float = ...,
    form: Form = ...,
    reduction: Reduction = ...,
    return_count: Literal[True],
) -> tuple[Tensor, Tensor]: ...


def multi_nt_xent_from_labels(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float = 0.5,
    form: Form = "in",
    reduction: Reduction = "mean",
    return_count: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Multi NT-Xent loss over a batch with integer labels (SupCon-like input).

    Every sample :math:`i` is an anchor; all other samples of the batch are its candidates,
    those sharing its label are the positives:

    .. math::

        P(i) = \{\, j \ne i : y_j = y_i \,\}, \qquad
        N(i) = \{\, j \ne i : y_j \ne y_i \,\}

    and the loss per anchor is :math:`\mathcal{L}_{in}` or :math:`\mathcal{L}_{out}` exactly as
    in :func:`multi_nt_xent`,

    .. math::

        \mathcal{L}_{in}(i) = -\log
            \frac{\sum_{p \in P(i)} \exp(s_{ip} / \tau)}
                 {\sum_{k \in P(i) \cup N(i)} \exp(s_{ik} / \tau)}, \qquad
        \mathcal{L}_{out}(i) = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log
            \frac{\exp(s_{ip} / \tau)}{\sum_{k \in P(i) \cup N(i)} \exp(s_{ik} / \tau)}

    where

    - :math:`s_{ij}` is the cosine similarity of embeddings :math:`i` and :math:`j`,
    - :math:`\tau` is ``temperature`` and :math:`y` are the ``labels``.

    Self-similarity is excluded from numerator and denominator. ``form="out"`` is the
    supervised contrastive loss of Khosla et al. (2020), equal to pytorch-metric-learning's
    ``SupConLoss(temperature=tau)`` (which also divides cosine similarity by :math:`\tau`;
    its default :math:`\tau` is 0.1, ours 0.5). Samples whose label occurs only once have no
    positive and are left out of the mean, as in :func:`multi_nt_xent`.

    The loss works on ``[N, N]`` tensors (memory :math:`O(N^2)`, never one entry per pair of
    pairs) and its backward pass is fused: one ``[N, N] x [N, D]`` matrix product plus a few
    elementwise passes. Second derivatives work too: when the backward pass
    is itself recorded (``create_graph=True``) it is computed by differentiable operations.

    Half-precision embeddings are computed in float32, also under :func:`torch.autocast`
    (switched off inside, in the forward and the backward pass). A NaN or inf in an embedding
    makes the loss NaN (it is not checked, to avoid a device synchronisation): every sample is
    a candidate of every other one. Zero-width embeddings (``D = 0``) are zero vectors: every
    cosine is 0 and an anchor's loss is :math:`\log((N - 1) / |P(i)|)` (``form="in"``), as in
    :func:`multi_nt_xent`.

    Args:
        embeddings: One embedding per sample (any scale; they are L2-normalised here).
        labels: Integer class of each sample (any integer values).
        temperature: :math:`\tau > 0`, finite.
        form: ``"in"`` (the paper's Eq. 3) or ``"out"`` (SupCon's :math:`\mathcal{L}_{out}`).
        reduction: ``"mean"`` over samples with a positive, ``"sum"`` or ``"none"``.
        return_count: Also return the number of samples with at least one positive.

    Returns:
        The loss in the dtype of ``embeddings`` (half precision is computed in float32); with
        ``return_count=True`` a tuple ``(loss, count)`` where ``count`` is a 0-d int64 tensor.

    Raises:
        TypeError: If ``embeddings`` is not floating point or ``labels`` not an integer tensor.
        ValueError: If shapes, ``temperature``, ``form`` or ``reduction`` are invalid, or the
            tensors are on different devices.

    Shape:
        - embeddings: :math:`(N, D)`.
        - labels: :math:`(N,)`, integer dtype.
        - output: :math:`()` for ``"mean"`` and ``"sum"``, :math:`(N,)` for ``"none"``.

    Example:
        >>> import torch
        >>> from mtobjectives import functional as F
        >>> _ = torch.manual_seed(0)
        >>> embeddings = torch.randn(6, 8)
        >>> labels = torch.tensor([0, 0, 1, 1, 1, 2])  # sample 5 has no positive
        >>> loss, count = F.multi_nt_xent_from_labels(
        ...     embeddings, labels, form="out", return_count=True
        ... )
        >>> print(f"{loss.item():.4f}", count.item())
        1.7380 5
    """
    temperature = _check_options(temperature, form, reduction, return_count)
    check_floating("embeddings", embeddings)
    check_shape("embeddings", embeddings, ("N", "D"))
    check_tensor("labels", labels)
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    check_shape("labels", labels, ("N",))
    _check_size("labels", labels, 0, embeddings.shape[0], "the batch size N of embeddings")
    check_same_device(embeddings=embeddings, labels=labels)

    out_dtype = embeddings.dtype
    compute_dtype = _compute_dtype(out_dtype)
    _check_temperature_range(temperature, compute_dtype, out_dtype, embeddings.shape[0] - 1)

    with _no_autocast(embeddings.device):
        x = embeddings.to(compute_dtype)
        if x.shape[0] < 2:  # no sample has a candidate, let alone a positive
            losses = x.sum(dim=1) * 0.0  # zeros that stay connected to the graph
            has_positive = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        else:
            losses, has_positive = _LabelMultiNTXent.apply(
                x, labels, 1.0 / temperature, form, _min_norm(out_dtype, temperature)
            )
        return _reduce(losses, has_positive, reduction, out_dtype, return_count)


class _LabelMultiNTXent(torch.autograd.Function):
    """Per-anchor loss of the label form, with a fused backward pass (requires ``N >= 2``).

    Forward: the unit embeddings ``U`` (as :func:`_unit`), ``logits = U U^T / tau``, the
    positive mask ``M`` (same label, diagonal excluded) as a float ``[N, N]`` tensor, and one
    row log-sum-exp computed in place, so that ``logits`` ends up holding ``E = exp(logits -
    shift)``. Backward, with ``g`` the incoming gradient and ``G = dL/dlogits``:
    ``G_ij = g_i (softmax_ij - w_ij)`` where ``w`` is the softmax over the positives
    (``form="in"``) or ``M_ij / |P(i)|`` (``form="out"``); then ``dL/dU = (G + G^T) U / tau``
    (one matrix product) and, through the normalisation ``u = x / |x|``,
    ``dL/dx = (dL/du - u (u . dL/du)) / |x|``.

    The shift is the row maximum, except for ``form="out"`` when ``exp(-2 / tau)`` (the
    smallest possible ratio to the largest logit) cannot underflow: then it is the constant
    ``1 / tau``, ``E`` is symmetric and ``G + G^T = E (a_i + a_j) - M (b_i + b_j)`` needs no
    transpose.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        labels: Tensor,
        inv_temperature: float,
        form: str,
        min_norm: float,
    ) -> tuple[Tensor, Tensor]:
        unit, length = _unit_and_length(x, min_norm)
        logits = torch.mm(unit * inv_temperature, unit.T)  # [N, N]
        group = _group_by_label(labels).to(unit.dtype)  # exact small integers
        positive = torch.eq(group.unsqueeze(1), group.unsqueeze(0), out=torch.empty_like(logits))
        positive.fill_diagonal_(0.0)  # self is neither positive nor negative
        count = positive.sum(dim=1)
        has_positive = count > 0

        symmetric = form == "out" and 2.0 * inv_temperature <= _safe_exponent(unit.dtype)
        if form == "out":  # the mean positive logit; w_ij = M_ij / |P(i)|
            log_numerator = torch.linalg.vecdot(logits, positive) / count.clamp_min(1.0)
            logits.fill_diagonal_(float("-inf"))
            positive_weights, positive_norm = positive, count
        else:  # the log-sum-exp over the positives; w is their softmax
            logits.fill_diagonal_(float("-inf"))
            positive_weights = torch.where(positive > 0, logits, float("-inf"))
            log_numerator, positive_norm = _logsumexp_in_place(positive_weights, has_positive)
        # The constant 1/tau (no logit exceeds it) when the symmetric backward applies, else
        # the row maximum (finite: every row has N - 1 >= 1 entries).
        shift = torch.full_like(count, inv_temperature) if symmetric else logits.amax(dim=1)
        exp = logits.sub_(shift.unsqueeze(1)).exp_()  # in place: 0 on the diagonal
        total = exp.sum(dim=1)  # > 0: no row can underflow entirely
        log_denominator = total.log() + shift

        losses = torch.where(has_positive, log_denominator - log_numerator, 0.0)
        ctx.save_for_backward(
            x, labels, unit, length, count, exp, total, positive_weights, positive_norm
        )
        ctx.inv_temperature = inv_temperature  # type: ignore[attr-defined]
        ctx.form = form  # type: ignore[attr-defined]
        ctx.min_norm = min_norm  # type: ignore[attr-defined]
        ctx.symmetric = symmetric  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(has_positive)
        return losses, has_positive

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_losses: Tensor, _grad_has_positive: Tensor | None
    ) -> tuple[Tensor | None, None, None, None, None]:
        with _no_autocast(grad_losses.device):  # backward() may run inside autocast
            return _LabelMultiNTXent._backward(ctx, grad_losses)

    @staticmethod
    def _backward(
        ctx: FunctionCtx, grad_losses: Tensor
    ) -> tuple[Tensor | None, None, None, None, None]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        x, labels, unit, length, count, exp, total, positive_weights, positive_norm = saved
        inv_temperature: float = ctx.inv_temperature  # type: ignore[attr-defined]
        if torch.is_grad_enabled():  # create_graph=True: differentiate a traceable version
            return _label_grad_traced(
                x, labels, inv_temperature, ctx.form, ctx.min_norm, grad_losses  # type: ignore[attr-defined]
            )
        # Anchors without a positive have the constant loss 0; 1/tau is folded in here.
        grad = torch.where(count > 0, grad_losses, 0.0) * inv_temperature
        a = grad / total  # G = E a_i - W b_i, with W the positive weights
        b = grad / positive_norm.clamp_min(1.0)
        if ctx.symmetric:  # type: ignore[attr-defined]
            grad_sum = exp * a.unsqueeze(1)  # one [N, N] allocation, then in place
            grad_sum.addcmul_(exp, a.unsqueeze(0))
            grad_sum.addcmul_(positive_weights, b.unsqueeze(1), value=-1.0)
            grad_sum.addcmul_(positive_weights, b.unsqueeze(0), value=-1.0)
        else:  # G + G^T, the transpose made contiguous first (much faster than adding it)
            grad_logits = exp * a.unsqueeze(1)
            grad_logits.addcmul_(positive_weights, b.unsqueeze(1), value=-1.0)
            grad_sum = grad_logits.T.contiguous().add_(grad_logits)
        grad_unit = torch.mm(grad_sum, unit)
        radial = torch.linalg.vecdot(unit, grad_unit).unsqueeze(1)
        return grad_unit.addcmul_(unit, radial, value=-1.0).div_(length), None, None, None, None


def _label_grad_traced(
    x: Tensor,
    labels: Tensor,
    inv_temperature: float,
    form: str,
    min_norm: float,
    grad_losses: Tensor,
) -> tuple[Tensor, None, None, None, None]:
    """Backward of the label form built from differentiable operations (for higher derivatives).

    Used only when the backward pass itself is recorded (``create_graph=True``): the label form
    is rewritten as the per-anchor form over the ``[N, N]`` logits with masks.
    """
    unit = _unit(x, min_norm)
    logits = torch.mm(unit * inv_temperature, unit.T)
    valid = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    positive = (labels.unsqueeze(1) == labels.unsqueeze(0)) & valid
    losses, _ = _anchor_losses(logits, valid, positive, form)
    (grad_x,) = torch.autograd.grad(losses, x, grad_losses, create_graph=True)
    return grad_x, None, None, None, None


def _group_by_label(labels: Tensor) -> Tensor:
    """Dense group index of each label, in ``[0, N)``: equal labels, equal index.

    Like ``torch.unique(labels, return_inverse=True)[1]`` but with no output whose size depends
    on the data, so it never waits for the device to report the number of classes.
    """
    sorted_labels, order = labels.sort()
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    return torch.empty_like(order).scatter_(0, order, starts.cumsum(0) - 1)


def _logsumexp_in_place(masked_logits: Tensor, has_entry: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise log-sum-exp of logits whose excluded entries are ``-inf``.

    Overwrites ``masked_logits`` with ``exp(logits - row max)`` (0 where excluded) and returns
    the log-sum-exp (0 on rows without an entry, ``has_entry`` false; NaN stays NaN) and the
    row sums of the overwritten tensor.
    """
    shift = _row_shift(masked_logits)
    exp = masked_logits.sub_(shift).exp_()
    total = exp.sum(dim=1)
    return torch.where(has_entry, total, 1.0).log() + shift.squeeze(1), total


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _prescale(x: Tensor) -> Tensor:
    """Divide each vector (last dimension) by its largest absolute entry.

    The divisor is a detached constant and cosine similarity is scale invariant, so values and
    gradients are unchanged, but squared norms can no longer overflow or underflow: the loss is
    finite for finite inputs of any scale (the gradient, of size about ``1 / |x|``, only where
    the dtype holds it).
    """
    return _prescale_with_scale(x)[0]


def _prescale_with_scale(x: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_prescale` of ``x`` and the divisor ``[..., 1]`` it used (1 for a zero vector)."""
    if x.shape[-1] == 0:
        return x, x.new_ones((*x.shape[:-1], 1))
    scale = x.detach().abs().amax(dim=-1, keepdim=True)
    scale = torch.where(scale > 0, scale, 1.0)
    return x / scale, scale


def _min_norm(dtype: torch.dtype, temperature: float) -> float:
    r"""The norm below which a vector has no direction, for a loss returned in ``dtype``.

    :data:`MIN_NORM`, or more where the gradient of a cosine at that norm, of size up to
    :math:`2 / (\tau \lVert x \rVert)` per use, would not fit ``dtype`` (float16, whose
    largest value is 65504: :math:`8 / (\tau \cdot 65504)`, 2.4e-4 at :math:`\tau = 0.5`).
    """
    return max(MIN_NORM, 8.0 / (temperature * torch.finfo(dtype).max))


def _unit(x: Tensor, min_norm: float = MIN_NORM) -> Tensor:
    """L2-normalise the last dimension, any scale; vectors of norm below ``min_norm`` -> 0.

    The zero vectors are selected by ``torch.where``, whose backward pass selects and never
    multiplies: they receive an exact zero gradient, whatever their scale (subnormal included).
    """
    scaled, scale = _prescale_with_scale(x)
    unit = torch.nn.functional.normalize(scaled, dim=-1, eps=NORMALIZE_EPS)
    return torch.where(_has_direction(scaled, scale, min_norm), unit, 0.0)


def _has_direction(scaled: Tensor, scale: Tensor, min_norm: float) -> Tensor:
    """``[..., 1]``: whether the vector ``scaled * scale`` has a norm of at least ``min_norm``.

    A NaN norm counts as a direction, so that a NaN taking part in the loss is never hidden.
    """
    norm = torch.linalg.vector_norm(scaled.detach(), dim=-1, keepdim=True)
    return ~(norm * scale < min_norm)


def _unit_and_length(x: Tensor, min_norm: float = MIN_NORM) -> tuple[Tensor, Tensor]:
    """:func:`_unit` of ``x [N, D]`` without autograd, and the divisor ``[N, 1]`` it used.

    ``unit = x / length`` with ``length = s * max(|x / s|, eps)`` and ``s`` the largest
    absolute entry (1 for a zero vector), so ``d unit / d x = (I - unit unit^T) / length``.
    Zero-width embeddings (``D = 0``) are zero vectors: ``unit`` is empty, ``length`` 1.
    """
    if x.shape[1] == 0:
        return x.clone(), x.new_ones((x.shape[0], 1))
    scale = x.abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, 1.0)
    scaled = x / scale
    length = torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_min_(NORMALIZE_EPS)
    unit = scaled.div_(length)
    length.mul_(scale)
    # No direction (norm below min_norm): unit 0 and an infinite divisor, so d unit / d x = 0.
    degenerate = length < min_norm
    return unit.masked_fill_(degenerate, 0.0), length.masked_fill_(degenerate, float("inf"))


def _cosine_to_candidates(
    unit_anchor: Tensor, candidates: Tensor, min_norm: float = MIN_NORM
) -> Tensor:
    """Cosine similarity ``[B, K]`` of unit anchors ``[B, D]`` with candidates ``[B, K, D]``.

    The candidates are never normalised as a ``[B, K, D]`` tensor: the dot products are divided
    by the ``[B, K]`` norms, which keeps forward and backward to a few passes over them. The
    dot products are a broadcast multiply and a sum: on CPU, ``bmm`` of ``[K, D] x [D, 1]``
    blocks, and the outer products of its backward pass, are several times slower.
    """
    scaled, scale = _prescale_with_scale(candidates)
    norms = torch.linalg.vector_norm(scaled, dim=-1).clamp_min(NORMALIZE_EPS)
    cosine = (scaled * unit_anchor.unsqueeze(-2)).sum(dim=-1) / norms
    # A candidate without direction (norm below min_norm) has cosine 0 and no gradient.
    return torch.where(_has_direction(scaled, scale, min_norm).squeeze(-1), cosine, 0.0)


def _safe_exponent(dtype: torch.dtype) -> float:
    """How far below 0 an exponent may go with ``exp`` still a normal number (with margin)."""
    return -math.log(torch.finfo(dtype).tiny) - 10.0


def _row_shift(masked_logits: Tensor) -> Tensor:
    """Row maximum ``[..., 1]`` for a stable log-sum-exp; 0 on rows that are all ``-inf``.

    A NaN in a row makes its maximum, and so its log-sum-exp, NaN (it is never hidden). Logits
    are finite or NaN, so ``-inf`` only comes from rows without an entry.
    """
    if masked_logits.shape[-1] == 0:
        return masked_logits.new_zeros((*masked_logits.shape[:-1], 1))
    shift = masked_logits.amax(dim=-1, keepdim=True)
    return torch.where(shift == float("-inf"), 0.0, shift)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """A region where autocast is off on ``device`` (nothing for device types without it)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _reduce(
    losses: Tensor,
    has_positive: Tensor,
    reduction: str,
    out_dtype: torch.dtype,
    return_count: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    count = has_positive.sum()
    if reduction == "none":
        result = losses
    elif reduction == "sum":
        result = losses.sum()
    else:
        result = losses.sum() / count.clamp_min(1)
    result = result.to(out_dtype)
    return (result, count) if return_count else result


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_options(temperature: float, form: str, reduction: str, return_count: bool) -> float:
    """Check the options; return ``temperature`` as a Python ``float`` (it may be NumPy's)."""
    temperature = check_positive("temperature", temperature)
    check_choice("form", form, FORMS)
    check_choice("reduction", reduction, REDUCTIONS)
    if not isinstance(return_count, bool):
        raise TypeError(f"return_count must be a bool, got {type(return_count).__name__}")
    return temperature


def _check_temperature_range(
    temperature: float, compute_dtype: torch.dtype, out_dtype: torch.dtype, num_candidates: int
) -> None:
    """Require ``1 / temperature`` to be representable in the dtype the loss is computed in,
    and every anchor's loss in the dtype it is returned in.

    An anchor's loss is at most ``2 / temperature + log K`` (its logits lie in
    ``[-1 / temperature, 1 / temperature]``), a bound that a float16 loss exceeds for
    temperatures below about 3e-5.
    """
    largest = torch.finfo(compute_dtype).max
    if 1.0 / temperature > largest:
        raise ValueError(
            f"temperature must be >= {1.0 / largest:.3g} for {compute_dtype} computation "
            f"(1 / temperature overflows), got {temperature!r}"
        )
    log_k = math.log(max(num_candidates, 1))
    returned = torch.finfo(out_dtype).max
    if 2.0 / temperature + log_k > returned:
        raise ValueError(
            f"temperature must be >= {2.0 / (returned - log_k):.3g} for a {out_dtype} loss "
            f"(an anchor's loss can reach 2 / temperature + log K, more than {out_dtype} "
            f"holds), got {temperature!r}"
        )


def _check_mask(name: str, mask: Tensor, batch: int, num_candidates: int) -> None:
    check_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    check_shape(name, mask, ("B", "K"))
    _check_size(name, mask, 0, batch, "the batch size B of anchor")
    _check_size(name, mask, 1, num_candidates, "the number of candidates K")


def _check_size(name: str, value: Tensor, dim: int, expected: int, meaning: str) -> None:
    if value.shape[dim] != expected:
        raise ValueError(
            f"{name} must have {meaning} ({expected}) in dimension {dim}, "
            f"got shape {tuple(value.shape)}"
        )
