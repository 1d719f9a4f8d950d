r"""MISA's regularizers (Hazarika et al., 2020), as MMSA 2.2.1 computes them.

Re-exported by :mod:`mtobjectives.functional`: :func:`cmd` (central moment discrepancy, MISA's
similarity loss between shared representations) and :func:`misa_diff_loss` (the soft
orthogonality of two representations, MISA's difference loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtobjectives._validation import check_floating, check_int, check_same_device, check_shape

__all__ = ["cmd", "misa_diff_loss"]

#: MMSA's ``DiffLoss`` adds this to the detached row norms before dividing.
DIFF_EPS = 1e-6


def cmd(x: Tensor, y: Tensor, moments: int = 5) -> Tensor:
    r"""Central moment discrepancy of two batches of representations (MISA's similarity loss).

    .. math::

        \mathrm{CMD}_K(X, Y) = \lVert \mathrm{E}(X) - \mathrm{E}(Y) \rVert_2
            + \sum_{k=2}^{K} \lVert c_k(X) - c_k(Y) \rVert_2,
        \qquad c_k(X) = \mathrm{E}\big((X - \mathrm{E}(X))^k\big)

    where :math:`\mathrm{E}` is the mean over the batch (per dimension) and :math:`K` is
    ``moments``. It is MMSA's ``CMD`` (Zellinger et al., 2017, without their scaling by the
    range), which MISA averages over the three pairs of shared representations. One difference,
    at a single point: where two moments are exactly equal MMSA's square root has a NaN
    gradient, here the gradient of that norm is 0 (the value is the same).

    Args:
        x: representations :math:`X`, floating point.
        y: representations :math:`Y`, the same feature size (batch sizes may differ).
        moments: :math:`K \ge 1`, the highest central moment (MISA: 5).

    Returns:
        A 0-d tensor in the promoted dtype of ``x`` and ``y``.

    Shape:
        - x: :math:`(B_x, D)`; y: :math:`(B_y, D)`; output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives.functional import cmd
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
        >>> cmd(x, x)
        tensor(0.)
        >>> round(cmd(x, x + 1.0, moments=1).item(), 4)  # the means differ by (1, 1)
        1.4142
    """
    check_floating("x", x)
    check_floating("y", y)
    check_shape("x", x, ("B", "D"))
    check_shape("y", y, ("B", x.shape[1]))
    check_same_device(x=x, y=y)
    moments = check_int("moments", moments)
    if moments < 1:
        raise ValueError(f"moments must be >= 1, got {moments}")
    for name, value in (("x", x), ("y", y)):
        if value.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one row (moments are batch means), "
                             f"got shape {tuple(value.shape)}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return cmd_unchecked(x.to(dtype), y.to(dtype), moments)


def cmd_unchecked(x: Tensor, y: Tensor, moments: int) -> Tensor:
    """:func:`cmd` of inputs already checked (one dtype, ``[B, D]`` each, ``moments >= 1``)."""
    mean_x, mean_y = x.mean(dim=0), y.mean(dim=0)
    total = torch.linalg.vector_norm(mean_x - mean_y)
    centred_x, centred_y = x - mean_x, y - mean_y
    for k in range(2, moments + 1):
        total = total + torch.linalg.vector_norm(
            centred_x.pow(k).mean(dim=0) - centred_y.pow(k).mean(dim=0)
        )
    return total


def misa_diff_loss(private: Tensor, shared: Tensor) -> Tensor:
    r"""MISA's difference loss: the soft orthogonality of two representations of a batch.

    .. math::

        L_{diff}(P, S) = \frac{1}{D_P D_S} \sum_{i, j} \big(\hat{P}^\top \hat{S}\big)_{ij}^2,
        \qquad \hat{P}_b = \frac{P_b - \bar{P}}{\lVert P_b - \bar{P} \rVert + \epsilon}

    where :math:`\bar{P}` is the batch mean, :math:`\epsilon = 10^{-6}` and the same holds for
    :math:`S`: the rows are centred over the batch and L2-normalised, and the mean of the
    squared entries of the :math:`D_P \times D_S` cross-correlation is taken. As in MMSA's
    ``DiffLoss``, the row norms are **detached**: the gradient treats them as constants, so it
    is not the gradient of the formula above taken through the norms (this matches MMSA's
    backward pass, which is what training with MISA's objective does). Rows are flattened first
    (any trailing shape).

    Args:
        private: :math:`P`, e.g. a modality's private representation.
        shared: :math:`S`, e.g. its shared representation (or another private one), same batch.

    Returns:
        A 0-d tensor in the promoted dtype of the inputs.

    Shape:
        - private: :math:`(B, *)`; shared: :math:`(B, *)`; output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives.functional import misa_diff_loss
        >>> p = torch.tensor([[1.0], [-1.0], [0.0]])
        >>> s = torch.tensor([[1.0], [1.0], [-2.0]])
        >>> misa_diff_loss(p, s)                 # uncorrelated over the batch
        tensor(0.)
        >>> round(misa_diff_loss(p, p).item(), 4)  # (1 + 1 + 0)^2: each row normalised first
        4.0
    """
    check_floating("private", private)
    check_floating("shared", shared)
    check_same_device(private=private, shared=shared)
    if private.dim() < 1 or shared.dim() < 1 or private.shape[0] != shared.shape[0]:
        raise ValueError(f"private and shared must hold the same batch (first dimension), got "
                         f"shapes {tuple(private.shape)} and {tuple(shared.shape)}")
    if private.shape[0] == 0:
        raise ValueError("private and shared must hold at least one row, got an empty batch")
    dtype = torch.promote_types(private.dtype, shared.dtype)
    return diff_unchecked(private.reshape(private.shape[0], -1).to(dtype),
                          shared.reshape(shared.shape[0], -1).to(dtype))


def diff_unchecked(private: Tensor, shared: Tensor) -> Tensor:
    """:func:`misa_diff_loss` of inputs already checked (one dtype, ``[B, D]`` each)."""
    a, b = _centred_unit_rows(private), _centred_unit_rows(shared)
    return torch.mm(a.T, b).pow(2).mean()


def _centred_unit_rows(x: Tensor) -> Tensor:
    """Rows centred over the batch, divided by their (detached) norm plus ``DIFF_EPS``."""
    centred = x - x.mean(dim=0, keepdim=True)
    norms = torch.linalg.vector_norm(centred, dim=1, keepdim=True).detach()
    return centred / (norms + DIFF_EPS)
