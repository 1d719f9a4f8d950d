"""Every bad input tried on the library and on the example's data loader, and what the user gets.

Three tables, one parametrized test each: :data:`LIBRARY_ROWS` (the objectives, the head, the
metrics), :data:`LOADER_ROWS` (``examples/dmmsa/data.py``) and :data:`TRAIN_ROWS` (the command
line, resume and checkpoints of ``examples/dmmsa/train.py``). A row either expects an exception
of a given type whose message names the argument (a regex), or it is an input that works and the
row checks what it returns (a batch of one, identical labels, an empty batch, ...). Rows whose
current behaviour is a known library bug are ``xfail(strict=True)`` with the reason; each xfail
also pins how the library fails today (``raises=``), so a change in the failure is noticed.

``docs/robustness.rst`` lists every row by its test id; the last test keeps the two in sync.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt
from dmmsa import batching, data, objectives, synthetic, train, training
from mtobjectives import functional as F
from mtobjectives.heads import DecompositionHead
from mtobjectives.metrics import msa_metrics
from mtobjectives.weighting import DWAWeighter, EqualWeighter, GDWGWeighter

ROOT = Path(__file__).resolve().parents[1]


DOCS_PAGE = ROOT / "docs" / "robustness.rst"
NAN, INF = math.nan, math.inf
META = torch.device("meta")  # a second device that every machine has

# --------------------------------------------------------------------------- shared inputs
_GEN = torch.Generator().manual_seed(0)
B, K, D = 4, 3, 5
ANCHOR = torch.randn(B, D, generator=_GEN)
CANDIDATES = torch.randn(B, K, D, generator=_GEN)
POSITIVE = torch.tensor([True, False, False]).expand(B, K).contiguous()  # 1 positive, 2 negatives
EMBEDDINGS = torch.randn(6, D, generator=_GEN)
LABELS = torch.tensor([0, 0, 1, 1, 2, 3])  # samples 4 and 5 have no positive
FEATURE_NAMES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def _outputs(batch: int) -> dict[str, Any]:
    """DMMSA outputs (as a DecompositionHead returns them) for ``batch`` samples, 3 classes."""
    gen = torch.Generator().manual_seed(batch)
    return {
        "prediction": torch.randn(batch, generator=gen),
        "logits": torch.randn(batch, 3, generator=gen),
        "features": {f: torch.randn(batch, 8, generator=gen) for f in FEATURE_NAMES},
        "unimodal": {f: torch.randn(batch, generator=gen) for f in FEATURE_NAMES},
    }


OUTPUTS = _outputs(B)
TARGETS = {"M": torch.tensor([-0.8, -0.05, 0.3, 0.9])}


def _dmmsa(**kwargs: Any) -> mt.MultiTaskObjective:
    return mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("sims"), **kwargs)


def _head() -> DecompositionHead:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return DecompositionHead(
            {"T": 6, "A": 4, "V": 5}, feature_dim=8, fusion_hidden=(8,), unimodal_hidden=(4,)
        )


def _head_inputs(batch: int = 2, **override: torch.Tensor) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    features = {m: torch.randn(batch, d, generator=gen) for m, d in (("T", 6), ("A", 4), ("V", 5))}
    return {**features, **override}


def _with(tensor: torch.Tensor, index: tuple[int, ...], value: float) -> torch.Tensor:
    """A copy of ``tensor`` with one entry replaced."""
    out = tensor.clone()
    out[index] = value
    return out


def _weighter(kind: type = GDWGWeighter) -> Any:
    return kind(2, task_names=["Uni", "CL"])


def _stages(kind: type, *stage_losses: list[float], present: list[bool] | None = None) -> Any:
    """A weighter fed one batch per stage, with ``step()`` at the end of each stage."""
    weighter = _weighter(kind)
    mask = None if present is None else torch.tensor(present)
    for losses in stage_losses:
        weighter(torch.tensor(losses), present=mask)
        weighter.step()
    return weighter


# ------------------------------------------------------------------ independent references
def _cosine_logits(anchor: torch.Tensor, others: torch.Tensor, tau: float) -> list[float]:
    return [
        torch_F.cosine_similarity(anchor.double(), o.double(), dim=0).item() / tau for o in others
    ]


def _lse(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _anchor_reference(logits: list[float], positive: list[bool], form: str) -> float:
    """One anchor's loss from its candidate logits, by Eq. 3 (``in``) and SupCon's ``out``."""
    pos = [v for v, p in zip(logits, positive) if p]
    if form == "in":
        return _lse(logits) - _lse(pos)
    return _lse(logits) - sum(pos) / len(pos)


def _batch_of_one_reference() -> float:
    logits = _cosine_logits(ANCHOR[0], CANDIDATES[0], 0.5)
    return _anchor_reference(logits, POSITIVE[0].tolist(), "in")


def _identical_labels_out_reference() -> float:
    """SupCon (L_out) when every sample shares the label: all N - 1 others are positives."""
    n = EMBEDDINGS.shape[0]
    losses = []
    for i in range(n):
        others = [EMBEDDINGS[j] for j in range(n) if j != i]
        logits = _cosine_logits(EMBEDDINGS[i], others, 0.5)
        losses.append(_anchor_reference(logits, [True] * (n - 1), "out"))
    return sum(losses) / n


# ------------------------------------------------------------------------- result checks
def _zero_and_count(expected_count: int) -> Callable[[Any], bool]:
    def check(result: tuple[torch.Tensor, torch.Tensor]) -> bool:
        loss, count = result
        return loss.item() == 0.0 and count.item() == expected_count

    return check


def _close(expected: float, tol: float = 1e-5) -> Callable[[Any], bool]:
    def check(result: torch.Tensor) -> bool:
        return math.isclose(float(result), expected, rel_tol=tol, abs_tol=tol)

    return check


def _non_finite(result: torch.Tensor) -> bool:
    return not bool(torch.isfinite(result).all())


def _loss_and_gradient_agree(result: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """A finite loss has a finite gradient (else the optimiser silently writes NaN)."""
    loss, grad = result
    return bool(torch.isfinite(loss)) == bool(torch.isfinite(grad).all())


def _loss_and_anchor_grad(
    anchor: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    anchor = anchor.clone().requires_grad_()
    loss = F.multi_nt_xent(anchor, candidates, positive, **kwargs)
    loss.backward()
    return loss.detach(), anchor.grad


def _tiny_gradients(form: str, labels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and input gradient for float32 embeddings at the subnormal scale 1e-40."""
    if labels:
        embeddings = (EMBEDDINGS * 1e-40).requires_grad_()
        loss = F.multi_nt_xent_from_labels(embeddings, LABELS, form=form)
    else:
        embeddings = (ANCHOR * 1e-40).requires_grad_()
        loss = F.multi_nt_xent(embeddings, CANDIDATES * 1e-40, POSITIVE, form=form)
    loss.backward()
    return loss.detach(), embeddings.grad


def _finite_loss_zero_gradient(result: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Vectors below MIN_NORM have no direction: a finite loss and an exactly zero gradient
    (the exact one, about 1e40 here, would round to inf in float32)."""
    loss, grad = result
    return bool(torch.isfinite(loss)) and bool((grad == 0).all())


def _without_warnings(call: Callable[[], Any]) -> Any:
    """``call()`` with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def _saved_weighter_state(**settings: Any) -> dict[str, torch.Tensor]:
    """The state of a GDWG weighter (names Uni, CL) after one stage, built with ``settings``."""
    weighter = GDWGWeighter(2, task_names=["Uni", "CL"], **settings)
    weighter(torch.tensor([1.0, 2.0]))
    weighter.step()
    return weighter.state_dict()


def _two_device_objective() -> mt.MultiTaskObjective:
    return mt.MultiTaskObjective(
        {"Uni": lambda o, t: torch.tensor(1.0), "CL": lambda o, t: torch.tensor(1.0, device=META)},
        dynamic=["Uni", "CL"],
    )


def _head_outputs_agree(dtype: torch.dtype) -> bool:
    """A float32 head on ``dtype`` features: float32 outputs, as on the features cast first."""
    head, inputs = _head().eval(), _head_inputs()
    out = head({m: x.to(dtype) for m, x in inputs.items()})
    cast = head({m: x.to(dtype).float() for m, x in inputs.items()})
    return out["prediction"].dtype == torch.float32 and torch.equal(
        out["prediction"], cast["prediction"]
    )


# --------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class Case:
    """One bad input: how to make the call, and what the user gets."""

    call: Callable[..., Any]
    raises: type[BaseException] | None = None
    match: str | None = None  # the message names the argument
    returns: Callable[[Any], bool] | None = None  # for inputs that work


def row(
    test_id: str,
    call: Callable[..., Any],
    *,
    raises: type[BaseException] | None = None,
    match: str | None = None,
    returns: Callable[[Any], bool] | None = None,
    bug: str | None = None,
    fails_with: type[BaseException] | tuple[type[BaseException], ...] = AssertionError,
) -> Any:
    """A table row; ``bug`` marks a known library bug (strict xfail failing with ``fails_with``)."""
    assert (raises is None) != (returns is None), test_id
    assert raises is None or match, f"{test_id}: an error row must say what the message names"
    marks = () if bug is None else pytest.mark.xfail(strict=True, reason=bug, raises=fails_with)
    return pytest.param(Case(call, raises, match, returns), id=test_id, marks=marks)


DID_NOT_RAISE = pytest.fail.Exception  # fails_with for a bug row where nothing is raised

NTX = mt.MultiNTXentLoss()

LIBRARY_ROWS = [
    # ------------------------------------------------ Multi NT-Xent, per-anchor form (Eq. 3)
    row("ntx-anchor-not-a-tensor", lambda: NTX(ANCHOR.tolist(), CANDIDATES, POSITIVE),
        raises=TypeError, match=r"anchor must be a torch\.Tensor"),
    row("ntx-anchor-rank-1", lambda: NTX(ANCHOR[0], CANDIDATES, POSITIVE),
        raises=ValueError, match=r"anchor must have 2 dimensions \[B, D\]"),
    row("ntx-candidates-rank-2", lambda: NTX(ANCHOR, CANDIDATES[:, 0], POSITIVE),
        raises=ValueError, match=r"candidates must have 3 dimensions \[B, K, D\]"),
    row("ntx-batch-mismatch", lambda: NTX(ANCHOR[:3], CANDIDATES, POSITIVE),
        raises=ValueError, match=r"candidates must have the batch size B of anchor \(3\)"),
    row("ntx-embedding-size-mismatch", lambda: NTX(ANCHOR[:, :4], CANDIDATES, POSITIVE),
        raises=ValueError, match=r"candidates must have the embedding size D of anchor \(4\)"),
    row("ntx-positive-mask-batch-mismatch", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE[:3]),
        raises=ValueError, match=r"positive_mask must have the batch size B"),
    row("ntx-positive-mask-k-mismatch", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE[:, :2]),
        raises=ValueError, match=r"positive_mask must have the number of candidates K \(3\)"),
    row("ntx-positive-mask-rank-1", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE[0]),
        raises=ValueError, match=r"positive_mask must have 2 dimensions \[B, K\]"),
    row("ntx-valid-mask-k-mismatch",
        lambda: NTX(ANCHOR, CANDIDATES, POSITIVE, POSITIVE[:, :2]),
        raises=ValueError, match=r"valid_mask must have the number of candidates K"),
    row("ntx-int-anchor", lambda: NTX(ANCHOR.long(), CANDIDATES, POSITIVE),
        raises=TypeError, match=r"anchor must be a floating-point tensor, got dtype torch\.int64"),
    row("ntx-int-candidates", lambda: NTX(ANCHOR, CANDIDATES.long(), POSITIVE),
        raises=TypeError, match=r"candidates must be a floating-point tensor"),
    row("ntx-float-positive-mask", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE.float()),
        raises=TypeError, match=r"positive_mask must be a bool tensor, got dtype torch\.float32"),
    row("ntx-int-positive-mask", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE.long()),
        raises=TypeError, match=r"positive_mask must be a bool tensor, got dtype torch\.int64"),
    row("ntx-float-valid-mask", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE, POSITIVE.float()),
        raises=TypeError, match=r"valid_mask must be a bool tensor"),
    row("ntx-candidates-on-other-device", lambda: NTX(ANCHOR, CANDIDATES.to(META), POSITIVE),
        raises=ValueError, match=r"same device.*candidates on meta"),
    row("ntx-mask-on-other-device", lambda: NTX(ANCHOR, CANDIDATES, POSITIVE.to(META)),
        raises=ValueError, match=r"same device.*positive_mask on meta"),
    *[
        row(f"ntx-temperature-{name}", lambda t=t: mt.MultiNTXentLoss(temperature=t),
            raises=ValueError, match=r"temperature must be a finite number > 0")
        for name, t in (("zero", 0.0), ("negative", -0.5), ("nan", NAN), ("inf", INF))
    ],
    row("ntx-temperature-bool", lambda: mt.MultiNTXentLoss(temperature=True),
        raises=TypeError, match=r"temperature must be a real number, got bool"),
    row("ntx-temperature-tensor",
        lambda: F.multi_nt_xent(ANCHOR, CANDIDATES, POSITIVE, temperature=torch.tensor(0.5)),
        raises=TypeError, match=r"temperature must be a real number, got Tensor"),
    row("ntx-temperature-overflows-float32",
        lambda: F.multi_nt_xent(ANCHOR, CANDIDATES, POSITIVE, temperature=1e-40),
        raises=ValueError, match=r"temperature must be >= .* for torch\.float32"),
    row("ntx-unknown-form", lambda: mt.MultiNTXentLoss(form="IN"),
        raises=ValueError, match=r"form must be one of 'in' \| 'out', got 'IN'"),
    row("ntx-unknown-reduction", lambda: mt.MultiNTXentLoss(reduction="avg"),
        raises=ValueError, match=r"reduction must be one of .*, got 'avg'"),
    row("ntx-return-count-not-bool",
        lambda: F.multi_nt_xent(ANCHOR, CANDIDATES, POSITIVE, return_count=1),
        raises=TypeError, match=r"return_count must be a bool"),
    row("ntx-temperature-numpy-float32",
        lambda: mt.MultiNTXentLoss(temperature=np.float32(0.5))(ANCHOR, CANDIDATES, POSITIVE),
        returns=lambda loss: torch.equal(loss, NTX(ANCHOR, CANDIDATES, POSITIVE))),
    row("ntx-temperature-numpy-bool", lambda: mt.MultiNTXentLoss(temperature=np.True_),
        raises=TypeError, match=r"temperature must be a real number, got bool"),
    row("ntx-float16-temperature-overflows-float16",
        lambda: F.multi_nt_xent(ANCHOR.half(), CANDIDATES.half(), POSITIVE, temperature=1e-5),
        raises=ValueError,
        match=r"temperature must be >= 3\.05e-05 for a torch\.float16 loss \(an anchor's loss "
        r"can reach 2 / temperature \+ log K"),
    row("ntx-subnormal-embeddings-in", lambda: _tiny_gradients("in"),
        returns=_finite_loss_zero_gradient),
    row("ntx-subnormal-embeddings-out", lambda: _tiny_gradients("out"),
        returns=_finite_loss_zero_gradient),
    row("ntx-empty-batch",
        lambda: F.multi_nt_xent(ANCHOR[:0], CANDIDATES[:0], POSITIVE[:0], return_count=True),
        returns=_zero_and_count(0)),
    row("ntx-batch-of-one", lambda: NTX(ANCHOR[:1], CANDIDATES[:1], POSITIVE[:1]),
        returns=_close(_batch_of_one_reference())),
    row("ntx-no-candidates",
        lambda: F.multi_nt_xent(ANCHOR, CANDIDATES[:, :0], POSITIVE[:, :0], return_count=True),
        returns=_zero_and_count(0)),
    row("ntx-no-positive",
        lambda: F.multi_nt_xent(ANCHOR, CANDIDATES, torch.zeros(B, K, dtype=torch.bool),
                                return_count=True),
        returns=_zero_and_count(0)),
    row("ntx-all-positive-in",
        lambda: F.multi_nt_xent(ANCHOR, CANDIDATES, torch.ones(B, K, dtype=torch.bool),
                                return_count=True),
        returns=_zero_and_count(B)),
    row("ntx-zero-width-embeddings",
        lambda: F.multi_nt_xent(ANCHOR[:, :0], CANDIDATES[:, :, :0], POSITIVE),
        returns=_close(math.log(K))),
    *[
        row(f"ntx-{value_name}-in-{where}-{form}",
            lambda index=index, value=value, form=form: F.multi_nt_xent(
                _with(ANCHOR, index, value) if len(index) == 2 else ANCHOR,
                _with(CANDIDATES, index, value) if len(index) == 3 else CANDIDATES,
                POSITIVE, form=form),
            returns=_non_finite)
        for where, index in (("anchor", (1, 2)), ("positive", (1, 0, 2)), ("negative", (1, 2, 2)))
        for value_name, value in (("nan", NAN), ("inf", INF))
        for form in ("in", "out")
    ],
    row("ntx-nan-in-candidate-outside-valid-mask",
        lambda: _loss_and_anchor_grad(
            ANCHOR, _with(CANDIDATES, (0, 2, 1), NAN), POSITIVE,
            valid_mask=torch.tensor([True, True, False]).expand(B, K)),
        returns=_loss_and_gradient_agree),
    row("ntx-nan-in-anchor-without-positive",
        lambda: _loss_and_anchor_grad(
            _with(ANCHOR, (0, 1), NAN), CANDIDATES, _with(POSITIVE, (0, 0), False)),
        returns=_loss_and_gradient_agree),
    # ------------------------------------------------------- Multi NT-Xent, label form
    row("ntx-labels-float-labels", lambda: NTX.from_labels(EMBEDDINGS, LABELS.float()),
        raises=TypeError, match=r"labels must be an integer tensor, got dtype torch\.float32"),
    row("ntx-labels-nan-labels",
        lambda: NTX.from_labels(EMBEDDINGS, _with(LABELS.double(), (0,), NAN)),
        raises=TypeError, match=r"labels must be an integer tensor"),
    row("ntx-labels-bool-labels", lambda: NTX.from_labels(EMBEDDINGS, LABELS > 0),
        raises=TypeError, match=r"labels must be an integer tensor, got dtype torch\.bool"),
    row("ntx-labels-labels-not-a-tensor", lambda: NTX.from_labels(EMBEDDINGS, LABELS.tolist()),
        raises=TypeError, match=r"labels must be a torch\.Tensor"),
    row("ntx-labels-labels-rank-2", lambda: NTX.from_labels(EMBEDDINGS, LABELS[:, None]),
        raises=ValueError, match=r"labels must have 1 dimensions \[N\]"),
    row("ntx-labels-embeddings-rank-1", lambda: NTX.from_labels(EMBEDDINGS[:, 0], LABELS),
        raises=ValueError, match=r"embeddings must have 2 dimensions \[N, D\]"),
    row("ntx-labels-int-embeddings", lambda: NTX.from_labels(EMBEDDINGS.long(), LABELS),
        raises=TypeError, match=r"embeddings must be a floating-point tensor"),
    row("ntx-labels-batch-mismatch", lambda: NTX.from_labels(EMBEDDINGS, LABELS[:5]),
        raises=ValueError, match=r"labels must have the batch size N of embeddings \(6\)"),
    row("ntx-labels-on-other-device", lambda: NTX.from_labels(EMBEDDINGS, LABELS.to(META)),
        raises=ValueError, match=r"same device.*labels on meta"),
    row("ntx-labels-temperature-overflows-float32",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS, LABELS, temperature=1e-40),
        raises=ValueError, match=r"temperature must be >= "),
    row("ntx-labels-float16-temperature-overflows-float16",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS.half(), LABELS, temperature=1e-5),
        raises=ValueError, match=r"temperature must be >= 3\.05e-05 for a torch\.float16 loss"),
    row("ntx-labels-subnormal-embeddings", lambda: _tiny_gradients("in", labels=True),
        returns=_finite_loss_zero_gradient),
    row("ntx-labels-empty-batch",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS[:0], LABELS[:0], return_count=True),
        returns=_zero_and_count(0)),
    row("ntx-labels-batch-of-one",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS[:1], LABELS[:1], return_count=True),
        returns=_zero_and_count(0)),
    row("ntx-labels-all-identical-in",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS, torch.zeros(6, dtype=torch.long),
                                            return_count=True),
        returns=_zero_and_count(6)),
    row("ntx-labels-all-identical-out",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS, torch.zeros(6, dtype=torch.long),
                                            form="out"),
        returns=_close(_identical_labels_out_reference())),
    row("ntx-labels-all-distinct",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS, torch.arange(6), return_count=True),
        returns=_zero_and_count(0)),
    *[
        row(f"ntx-labels-{value_name}-in-embeddings-{form}",
            lambda value=value, form=form: F.multi_nt_xent_from_labels(
                _with(EMBEDDINGS, (5, 1), value), LABELS, form=form),
            returns=_non_finite)
        for value_name, value in (("nan", NAN), ("inf", INF))
        for form in ("in", "out")
    ],
    row("ntx-labels-zero-width-embeddings",
        lambda: F.multi_nt_xent_from_labels(EMBEDDINGS[:, :0], LABELS),
        returns=_close(math.log(5))),
    # ---------------------------------------------------------------- text_anchored_pairs
    row("pairs-no-anchor", lambda: mt.text_anchored_pairs(None, T_d=ANCHOR),
        raises=ValueError, match=r"T_s must be a tensor \[B, D\] \(it is the anchor\)"),
    row("pairs-anchor-rank-1", lambda: mt.text_anchored_pairs(ANCHOR[0]),
        raises=ValueError, match=r"T_s must have 2 dimensions"),
    row("pairs-shape-mismatch", lambda: mt.text_anchored_pairs(ANCHOR, A_s=ANCHOR[:3]),
        raises=ValueError, match=r"A_s must have the shape of T_s \(4, 5\)"),
    row("pairs-int-feature", lambda: mt.text_anchored_pairs(ANCHOR, V_s=ANCHOR.long()),
        raises=TypeError, match=r"V_s must be a floating-point tensor"),
    row("pairs-feature-on-other-device",
        lambda: mt.text_anchored_pairs(ANCHOR, A_d=ANCHOR.to(META)),
        raises=ValueError, match=r"A_d must be on the device of T_s"),
    row("pairs-anchor-only",
        lambda: mt.text_anchored_pairs(ANCHOR).candidates.shape,
        returns=lambda shape: shape == (B, 0, D)),
    # ------------------------------------------------------------ CoarseGrainedBinning
    row("binning-nan", lambda: mt.CoarseGrainedBinning.preset("sims")(torch.tensor([0.0, NAN])),
        raises=ValueError, match=r"y must not contain NaN, got 1 NaN value"),
    row("binning-inf-clipped",
        lambda: mt.CoarseGrainedBinning.preset("mosi")(torch.tensor([INF, -INF])),
        returns=lambda ids: ids.tolist() == [2, 0]),
    row("binning-int-input", lambda: mt.CoarseGrainedBinning.preset("sims")(torch.tensor([0, 1])),
        raises=TypeError, match=r"y must be a floating-point tensor"),
    row("binning-list-input", lambda: mt.CoarseGrainedBinning.preset("sims")([0.5]),
        raises=TypeError, match=r"y must be a torch\.Tensor"),
    row("binning-empty", lambda: mt.CoarseGrainedBinning.preset("sims")(torch.zeros(0)),
        returns=lambda ids: ids.shape == (0,) and ids.dtype == torch.long),
    row("binning-unknown-dataset", lambda: mt.CoarseGrainedBinning.preset("iemocap"),
        raises=ValueError, match=r"dataset must be one of 'sims' \| 'mosi' \| 'mosei'"),
    row("binning-dataset-not-a-string", lambda: mt.CoarseGrainedBinning.preset(3),
        raises=TypeError, match=r"dataset must be a string"),
    row("binning-unknown-num-classes", lambda: mt.CoarseGrainedBinning.preset("sims", 7),
        raises=ValueError, match=r"num_classes for dataset 'sims' must be one of 2 \| 3 \| 5"),
    row("binning-float-num-classes", lambda: mt.CoarseGrainedBinning.preset("mosi", 3.0),
        raises=TypeError, match=r"num_classes must be an int"),
    row("binning-numpy-int64-num-classes",
        lambda: mt.CoarseGrainedBinning.preset("mosi", np.int64(3)),
        returns=lambda binning: binning.num_classes == 3),
    row("binning-no-edges", lambda: mt.CoarseGrainedBinning([], low=-1, high=1),
        raises=ValueError, match=r"edges must hold at least one edge"),
    row("binning-nan-edge", lambda: mt.CoarseGrainedBinning([NAN], low=-1, high=1),
        raises=ValueError, match=r"edges\[0\] must be finite"),
    row("binning-unsorted-edges", lambda: mt.CoarseGrainedBinning([0.5, 0.1], low=-1, high=1),
        raises=ValueError, match=r"edges must be strictly increasing"),
    row("binning-edge-outside-range", lambda: mt.CoarseGrainedBinning([2.0], low=-1, high=1),
        raises=ValueError, match=r"edges must lie strictly inside \(low, high\)"),
    row("binning-edges-string", lambda: mt.CoarseGrainedBinning("0.1", low=-1, high=1),
        raises=TypeError, match=r"edges must be a sequence of real numbers"),
    row("binning-low-not-below-high", lambda: mt.CoarseGrainedBinning([0.0], low=1, high=-1),
        raises=ValueError, match=r"low must be smaller than high"),
    row("binning-nan-low", lambda: mt.CoarseGrainedBinning([0.0], low=NAN, high=1),
        raises=ValueError, match=r"low must be finite"),
    row("binning-unknown-closed",
        lambda: mt.CoarseGrainedBinning([0.0], low=-1, high=1, closed="both"),
        raises=ValueError, match=r"closed must be one of 'right' \| 'left'"),
    row("binning-constrain-nan-prediction",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([NAN]), torch.tensor([0])),
        raises=ValueError, match=r"prediction must not contain NaN"),
    row("binning-constrain-int-prediction",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0]), torch.tensor([0])),
        raises=TypeError, match=r"prediction must be a floating-point tensor"),
    row("binning-constrain-class-out-of-range",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0.0]), torch.tensor([3])),
        raises=ValueError, match=r"classes_or_logits must hold class ids in \[0, 3\)"),
    row("binning-constrain-bool-classes",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0.0]), torch.tensor([True])),
        raises=TypeError, match=r"classes_or_logits must be integer class ids or floating"),
    row("binning-constrain-class-shape",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0.0, 0.5]), torch.tensor([0])),
        raises=ValueError, match=r"classes_or_logits as class ids must have prediction's shape"),
    row("binning-constrain-logits-wrong-classes",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0.0]), torch.zeros(1, 2)),
        raises=ValueError, match=r"classes_or_logits as logits must have shape \[1, 3\]"),
    row("binning-constrain-nan-logits",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0.0]), torch.full((1, 3), NAN)),
        raises=ValueError, match=r"classes_or_logits must not contain NaN"),
    row("binning-constrain-other-device",
        lambda: mt.CoarseGrainedBinning.preset("sims").constrain(
            torch.tensor([0.0]), torch.tensor([0], device=META)),
        raises=ValueError, match=r"same device.*classes_or_logits on meta"),
    # --------------------------------------------------------------------- msa_metrics
    row("metrics-nan-pred",
        lambda: msa_metrics(torch.tensor([NAN, 0.0, 1.0]), torch.zeros(3), "mosi"),
        raises=ValueError, match=r"pred must be finite, got 1 non-finite"),
    row("metrics-inf-target",
        lambda: msa_metrics(torch.zeros(3), torch.tensor([INF, 0.0, 1.0]), "mosi"),
        raises=ValueError, match=r"target must be finite"),
    row("metrics-length-mismatch", lambda: msa_metrics(torch.zeros(3), torch.zeros(2), "mosi"),
        raises=ValueError, match=r"pred and target must have the same number of elements"),
    row("metrics-empty", lambda: msa_metrics(torch.zeros(0), torch.zeros(0), "mosi"),
        raises=ValueError, match=r"pred and target must hold at least one element"),
    row("metrics-unknown-dataset", lambda: msa_metrics(torch.zeros(3), torch.zeros(3), "imdb"),
        raises=ValueError, match=r"dataset must be one of 'mosi' \| 'mosei' \| 'sims'"),
    row("metrics-dataset-not-a-string", lambda: msa_metrics(torch.zeros(3), torch.zeros(3), None),
        raises=TypeError, match=r"dataset must be a string"),
    row("metrics-bool-pred", lambda: msa_metrics(torch.ones(3) > 0, torch.zeros(3), "mosi"),
        raises=TypeError, match=r"pred must hold real numbers"),
    row("metrics-string-pred", lambda: msa_metrics(["a", "b"], [0.0, 1.0], "mosi"),
        raises=TypeError, match=r"pred must hold real numbers"),
    row("metrics-ragged-pred", lambda: msa_metrics([[1.0], [1.0, 2.0]], [0.0, 1.0], "mosi"),
        raises=TypeError, match=r"pred must be a tensor, array or sequence"),
    row("metrics-negative-decimals",
        lambda: msa_metrics(torch.zeros(3), torch.zeros(3), "mosi", decimals=-1),
        raises=ValueError, match=r"decimals must be >= 0 or None"),
    row("metrics-float-decimals",
        lambda: msa_metrics(torch.zeros(3), torch.zeros(3), "mosi", decimals=2.0),
        raises=TypeError, match=r"decimals must be an int or None"),
    row("metrics-numpy-int64-decimals",
        lambda: msa_metrics(torch.tensor([0.4]), torch.tensor([0.6]), "mosi",
                            decimals=np.int64(1)),
        returns=lambda m: m["MAE"] == 0.2),
    row("metrics-float16-differences-overflow",
        lambda: _without_warnings(lambda: msa_metrics(
            torch.tensor([6e4, -6e4], dtype=torch.float16),
            torch.tensor([-6e4, 6e4], dtype=torch.float16), "mosi")),
        returns=lambda m: m["MAE"] == 120000.0),
    row("metrics-batch-of-one",
        lambda: msa_metrics(torch.tensor([0.4]), torch.tensor([0.6]), "mosi"),
        returns=lambda m: m["Has0_acc_2"] == 1.0 and m["MAE"] == 0.2 and math.isnan(m["Corr"])),
    row("metrics-all-zero-labels",
        lambda: msa_metrics(torch.tensor([0.4, -0.2]), torch.zeros(2), "mosi"),
        returns=lambda m: math.isnan(m["Non0_acc_2"]) and math.isnan(m["Non0_F1_score"])
        and m["Has0_acc_2"] == 0.5),
    row("metrics-constant-predictions",
        lambda: msa_metrics(torch.zeros(3), torch.tensor([-0.5, 0.0, 0.5]), "sims"),
        returns=lambda m: math.isnan(m["Corr"]) and m["Mult_acc_3"] == 0.3333),
    # ------------------------------------------------------------------------ weighters
    *[
        row(f"weighter-{name}-wrong-number-of-losses",
            lambda kind=kind: _weighter(kind)(torch.ones(3)),
            raises=ValueError, match=r"losses must have shape \[2\] with size 2 in dimension 0")
        for name, kind in (("gdwg", GDWGWeighter), ("dwa", DWAWeighter), ("equal", EqualWeighter))
    ],
    row("weighter-scalar-loss", lambda: _weighter()(torch.tensor(1.0)),
        raises=ValueError, match=r"losses must have 1 dimensions \[2\]"),
    row("weighter-int-losses", lambda: _weighter()(torch.ones(2, dtype=torch.long)),
        raises=TypeError, match=r"losses must be a floating-point tensor"),
    row("weighter-losses-not-a-tensor", lambda: _weighter()([1.0, 2.0]),
        raises=TypeError, match=r"losses must be a torch\.Tensor"),
    row("weighter-float-present",
        lambda: _weighter()(torch.ones(2), present=torch.ones(2)),
        raises=TypeError, match=r"present must be a bool tensor"),
    row("weighter-present-wrong-size",
        lambda: _weighter()(torch.ones(2), present=torch.ones(3, dtype=torch.bool)),
        raises=ValueError, match=r"present must have shape \[2\]"),
    row("weighter-present-on-other-device",
        lambda: _weighter()(torch.ones(2), present=torch.ones(2, dtype=torch.bool, device=META)),
        raises=ValueError, match=r"present must be on the device of losses"),
    row("weighter-losses-on-other-device", lambda: _weighter()(torch.ones(2, device=META)),
        raises=ValueError, match=r"losses is on meta but the GDWGWeighter's state is on cpu"),
    row("weighter-nan-loss-propagates", lambda: _weighter()(torch.tensor([NAN, 1.0])),
        returns=lambda total: bool(torch.isnan(total))),
    row("weighter-nan-loss-of-absent-task-ignored",
        lambda: _weighter()(torch.tensor([NAN, 1.0]), present=torch.tensor([False, True])),
        returns=lambda total: total.item() == 0.5),
    *[
        row(f"weighter-{name}-step-{what}-stage-mean",
            lambda kind=kind, value=value: _stages(kind, [value, 1.0]),
            raises=ValueError,
            match=r"baseline L_k\(1\) of task 'Uni' \(index 0\) is " + re.escape(repr(value)))
        for name, kind in (("gdwg", GDWGWeighter), ("dwa", DWAWeighter))
        for what, value in (("nan", NAN), ("inf", INF), ("zero", 0.0), ("negative", -1.0))
    ],
    row("weighter-gdwg-step-nan-in-later-stage",
        lambda: _stages(GDWGWeighter, [1.0, 1.0], [1.0, NAN]),
        raises=ValueError, match=r"stage mean L_k\(2\) of task 'CL' \(index 1\) is nan"),
    row("weighter-gdwg-step-task-never-present",
        lambda: _stages(GDWGWeighter, [1.0, 1.0], present=[True, False]),
        raises=ValueError, match=r"task 'CL' \(index 1\) was not present in any batch"),
    row("weighter-gdwg-step-without-losses", lambda: _weighter().step(),
        raises=ValueError, match=r"no loss was recorded in stage 1"),
    row("weighter-equal-step-nan-stage-mean",
        lambda: _stages(EqualWeighter, [NAN, 1.0], [1.0, 1.0]).weights,
        returns=lambda weights: weights.tolist() == [0.5, 0.5]),
    row("weighter-zero-tasks", lambda: GDWGWeighter(0),
        raises=ValueError, match=r"num_tasks must be >= 1"),
    row("weighter-float-num-tasks", lambda: GDWGWeighter(2.0),
        raises=TypeError, match=r"num_tasks must be an int"),
    row("weighter-numpy-int64-num-tasks", lambda: GDWGWeighter(np.int64(2)).weights,
        returns=lambda weights: weights.tolist() == [0.5, 0.5]),
    row("weighter-numpy-float32-temperature",
        lambda: GDWGWeighter(2, temperature=np.float32(0.5)).temperature,
        returns=lambda temperature: type(temperature) is float and temperature == 0.5),
    *[
        row(f"weighter-{name}-temperature-{what}", lambda kind=kind, t=t: kind(2, temperature=t),
            raises=ValueError, match=r"temperature must be a finite number > 0")
        for name, kind in (("gdwg", GDWGWeighter), ("dwa", DWAWeighter))
        for what, t in (("zero", 0.0), ("negative", -2.0), ("nan", NAN), ("inf", INF))
    ],
    row("weighter-unknown-scale", lambda: GDWGWeighter(2, scale="sum"),
        raises=ValueError, match=r"scale must be one of 'sum_one' \| 'num_tasks'"),
    row("weighter-wrong-number-of-task-names", lambda: GDWGWeighter(2, task_names=["Uni"]),
        raises=ValueError, match=r"task_names must hold 2 distinct names"),
    row("weighter-state-of-other-scale",
        lambda: GDWGWeighter(2, task_names=["Uni", "CL"], scale="num_tasks").load_state_dict(
            _saved_weighter_state(scale="sum_one")),
        raises=ValueError,
        match=r"the state was saved with other settings: scale 'sum_one' \(saved\) != "
        r"'num_tasks' \(this weighter\)"),
    row("weighter-state-of-other-temperature",
        lambda: GDWGWeighter(2, task_names=["Uni", "CL"], temperature=1.0).load_state_dict(
            _saved_weighter_state(temperature=2.0)),
        raises=ValueError, match=r"temperature 2\.0 \(saved\) != 1\.0 \(this weighter\)"),
    row("weighter-state-of-other-task-order",
        lambda: GDWGWeighter(2, task_names=["CL", "Uni"]).load_state_dict(
            _saved_weighter_state()),
        raises=ValueError,
        match=r"task_names \['Uni', 'CL'\] \(saved\) != \['CL', 'Uni'\] \(this weighter\)"),
    row("weighter-state-of-other-kind",
        lambda: DWAWeighter(2, task_names=["Uni", "CL"], scale="sum_one").load_state_dict(
            _saved_weighter_state()),
        raises=ValueError, match=r"weighter 'GDWGWeighter' \(saved\) != 'DWAWeighter'"),
    # --------------------------------------------------------------- MultiTaskObjective
    row("objective-weighter-wrong-number-of-tasks",
        lambda: mt.MultiTaskObjective(
            {"a": lambda o, t: None, "b": lambda o, t: None}, dynamic=["a", "b"],
            weighter=GDWGWeighter(3)),
        raises=ValueError, match=r"weighter must weight the 2 dynamic task\(s\) \['a', 'b'\]"),
    row("objective-no-tasks", lambda: mt.MultiTaskObjective({}),
        raises=ValueError, match=r"tasks must hold at least one task"),
    row("objective-unknown-dynamic-task",
        lambda: mt.MultiTaskObjective({"a": lambda o, t: None}, dynamic=["b"]),
        raises=ValueError, match=r"dynamic must list distinct names among the tasks"),
    row("objective-negative-fixed-weight",
        lambda: mt.MultiTaskObjective({"a": lambda o, t: None}, fixed={"a": -1.0}),
        raises=ValueError, match=r"fixed\['a'\] must be a finite number >= 0"),
    row("objective-numpy-float32-fixed-weight",
        lambda: mt.MultiTaskObjective({"a": lambda o, t: torch.tensor(3.0)},
                                      fixed={"a": np.float32(0.5)})({}, {}).loss,
        returns=lambda loss: loss.item() == 1.5),
    row("objective-losses-on-two-devices", lambda: _two_device_objective()({}, {}),
        raises=ValueError,
        match=r"every task must return its loss on one device, got 'Uni' on cpu, 'CL' on meta"),
    row("objective-every-task-absent",
        lambda: mt.MultiTaskObjective({"a": lambda o, t: None})({}, {}),
        raises=ValueError, match=r"no task produced a loss for this batch"),
    row("objective-task-returns-vector",
        lambda: mt.MultiTaskObjective({"a": lambda o, t: torch.ones(2)})({}, {}),
        raises=ValueError, match=r"task 'a' must return a scalar \(0-d\) loss"),
    row("objective-task-returns-int",
        lambda: mt.MultiTaskObjective({"a": lambda o, t: torch.tensor(1)})({}, {}),
        raises=TypeError, match=r"task 'a' must return a floating-point tensor or None"),
    row("dmmsa-unknown-weighting", lambda: _dmmsa(weighting="kendall"),
        raises=ValueError, match=r"weighting must be one of 'gdwg' \| 'equal' \| 'dwa' \| 'unc"),
    row("dmmsa-unknown-form", lambda: _dmmsa(form="both"),
        raises=ValueError, match=r"form must be one of 'in' \| 'out'"),
    row("dmmsa-temperature-zero", lambda: _dmmsa(temperature=0.0),
        raises=ValueError, match=r"temperature must be a finite number > 0"),
    row("dmmsa-beta-zero", lambda: _dmmsa(beta=0.0),
        raises=ValueError, match=r"beta must be a finite number > 0"),
    row("dmmsa-unknown-scale", lambda: _dmmsa(scale="k"),
        raises=ValueError, match=r"scale must be one of 'sum_one' \| 'num_tasks'"),
    row("dmmsa-no-binning-with-msc", lambda: mt.MultiTaskObjective.dmmsa(binning=None),
        raises=TypeError, match=r"binning must be a CoarseGrainedBinning when msc=True"),
    row("dmmsa-outputs-not-a-mapping", lambda: _dmmsa()([OUTPUTS], TARGETS),
        raises=TypeError, match=r"outputs must be a mapping"),
    row("dmmsa-missing-label", lambda: _dmmsa()(OUTPUTS, {}),
        raises=ValueError, match=r"targets is missing the required key 'M'"),
    row("dmmsa-label-batch-mismatch", lambda: _dmmsa()(OUTPUTS, {"M": TARGETS["M"][:3]}),
        raises=ValueError, match=r"targets\['M'\] must have shape \[4\]"),
    row("dmmsa-int-label", lambda: _dmmsa()(OUTPUTS, {"M": torch.zeros(B, dtype=torch.long)}),
        raises=TypeError, match=r"targets\['M'\] must be a floating-point tensor"),
    row("dmmsa-label-rank-2", lambda: _dmmsa()(OUTPUTS, {"M": TARGETS["M"][:, None]}),
        raises=ValueError, match=r"targets\['M'\] must have 1 dimensions"),
    row("dmmsa-prediction-b-by-1",
        lambda: _dmmsa()({**OUTPUTS, "prediction": OUTPUTS["prediction"][:, None]}, TARGETS),
        raises=ValueError, match=r"outputs\['prediction'\] must have shape \[B\], got \(4, 1\)"),
    row("dmmsa-logits-wrong-classes",
        lambda: _dmmsa()({**OUTPUTS, "logits": OUTPUTS["logits"][:, :2]}, TARGETS),
        raises=ValueError, match=r"outputs\['logits'\] must have shape \[4, 3\]"),
    row("dmmsa-unknown-feature",
        lambda: _dmmsa()({**OUTPUTS, "features": {"X_s": ANCHOR}}, TARGETS),
        raises=ValueError, match=r"outputs\['features'\] has unknown keys \['X_s'\]"),
    row("dmmsa-feature-batch-mismatch",
        lambda: _dmmsa()(
            {**OUTPUTS, "features": {**OUTPUTS["features"], "A_s": torch.zeros(3, 8)}}, TARGETS),
        raises=ValueError, match=r"outputs\['features'\]\['A_s'\] must have shape \[4, \*\]"),
    row("dmmsa-unimodal-label-batch-mismatch",
        lambda: _dmmsa()(OUTPUTS, {**TARGETS, "T": TARGETS["M"][:3]}),
        raises=ValueError, match=r"targets\['T'\] must have shape \[4\]"),
    row("dmmsa-batch-of-one",
        lambda: _dmmsa()(_outputs(1), {"M": TARGETS["M"][:1]}),
        returns=lambda r: set(r.terms) == {"MSR", "MSC", "Uni", "CL"}
        and all(bool(torch.isfinite(v)) for v in r.terms.values())),
    row("dmmsa-empty-batch", lambda: _dmmsa()(_outputs(0), {"M": TARGETS["M"][:0]}),
        raises=ValueError, match=r"outputs\['prediction'\] must hold at least one sample"),
    row("dmmsa-nan-label-with-msc",
        lambda: _dmmsa()(OUTPUTS, {"M": _with(TARGETS["M"], (0,), NAN)}),
        raises=ValueError, match=r"targets\['M'\] must be finite.*got 1 NaN"),
    row("dmmsa-nan-label-without-msc",
        lambda: mt.MultiTaskObjective.dmmsa(binning=None, msc=False)(
            OUTPUTS, {"M": _with(TARGETS["M"], (0,), NAN)}),
        raises=ValueError, match=r"targets\['M'\] must be finite.*got 1 NaN"),
    row("dmmsa-nan-text-feature",
        lambda: _dmmsa()(
            {**OUTPUTS, "features": {**OUTPUTS["features"], "T_s": torch.full((B, 8), NAN)}},
            TARGETS).terms["CL"],
        returns=_non_finite),
    row("dmmsa-label-on-other-device", lambda: _dmmsa()(OUTPUTS, {"M": TARGETS["M"].to(META)}),
        raises=ValueError, match=r"targets\['M'\] must be on the device of the outputs \(cpu\)"),
    row("dmmsa-large-label-float16-prediction",
        lambda: _dmmsa()({**OUTPUTS, "prediction": OUTPUTS["prediction"].half(),
                          "unimodal": {f: u.half() for f, u in OUTPUTS["unimodal"].items()}},
                         {"M": torch.tensor([1e6, -0.05, 0.3, 0.9])}).terms,
        returns=lambda terms: all(
            terms[k].dtype == torch.float32 and bool(torch.isfinite(terms[k]))
            for k in ("MSR", "Uni"))),
    # ------------------------------------------------------------------ DecompositionHead
    row("head-missing-modality", lambda: _head()({"A": torch.zeros(2, 4), "V": torch.zeros(2, 5)}),
        raises=ValueError, match=r"features must have exactly the keys \['T', 'A', 'V'\]"),
    row("head-wrong-width", lambda: _head()(_head_inputs(T=torch.zeros(2, 7))),
        raises=ValueError, match=r"features\['T'\] must have shape \[B, 6\]"),
    row("head-batch-mismatch", lambda: _head()(_head_inputs(T=torch.zeros(3, 6))),
        raises=ValueError, match=r"features must share the batch size B"),
    row("head-int-features", lambda: _head()(_head_inputs(T=torch.zeros(2, 6, dtype=torch.long))),
        raises=TypeError, match=r"features\['T'\] must be a floating-point tensor"),
    row("head-rank-3-features", lambda: _head()(_head_inputs(T=torch.zeros(2, 1, 6))),
        raises=ValueError, match=r"features\['T'\] must have 2 dimensions"),
    row("head-features-on-other-device",
        lambda: _head()(_head_inputs(T=torch.zeros(2, 6, device=META))),
        raises=ValueError, match=r"same device.*features\['T'\] on meta"),
    row("head-on-other-device-than-features",
        lambda: _head()({m: x.to(META) for m, x in _head_inputs().items()}),
        raises=ValueError,
        match=r"features must be on the device of the head's parameters \(cpu\), got "
        r"features\['T'\] on meta"),
    row("head-float64-features", lambda: _head_outputs_agree(torch.float64),
        returns=lambda agree: agree),
    row("head-float16-features", lambda: _head_outputs_agree(torch.float16),
        returns=lambda agree: agree),
    row("head-numpy-int64-feature-dim",
        lambda: DecompositionHead({"T": np.int64(3)}, feature_dim=np.int64(4)).feature_dim,
        returns=lambda width: type(width) is int and width == 4),
    row("head-numpy-float32-dropout",
        lambda: DecompositionHead({"T": 3}, dropout=np.float32(0.25)).similarity["T"][3].p,
        returns=lambda p: p == 0.25),
    row("head-float-width", lambda: DecompositionHead({"T": 3}, feature_dim=4.0),
        raises=TypeError, match=r"feature_dim must be a positive int, got float"),
    row("head-unknown-modality", lambda: DecompositionHead({"X": 3}),
        raises=ValueError, match=r"in_dims must have a non-empty subset of \['T', 'A', 'V'\]"),
    row("head-zero-width", lambda: DecompositionHead({"T": 0}),
        raises=ValueError, match=r"in_dims\['T'\] must be a positive int"),
    row("head-dropout-one", lambda: DecompositionHead({"T": 3}, dropout=1.0),
        raises=ValueError, match=r"dropout must be in \[0, 1\)"),
    row("head-one-class", lambda: DecompositionHead({"T": 3}, num_classes=1),
        raises=ValueError, match=r"num_classes must be >= 2"),
    row("head-empty-batch", lambda: _head()(_head_inputs(0)),
        returns=lambda out: out["prediction"].shape == (0,) and out["logits"].shape == (0, 3)),
]


@pytest.mark.parametrize("case", LIBRARY_ROWS)
def test_library_bad_input(case: Case) -> None:
    if case.raises is not None:
        with pytest.raises(case.raises, match=case.match):
            case.call()
    else:
        result = case.call()
        assert case.returns(result), f"unexpected result: {result!r}"


# ------------------------------------------------------------- NumPy numbers everywhere
NUMPY_INTEGERS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                  np.uint64)
NUMPY_FLOATS = (np.float16, np.float32, np.float64, np.longdouble)


def _stage_weights(weighter: Any) -> list[float]:
    for losses in ([1.0, 2.0], [0.5, 2.0], [0.25, 1.0]):
        weighter(torch.tensor(losses))
        weighter.step()
    return weighter.weights.tolist()


def _head_layout(head: DecompositionHead) -> tuple[Any, ...]:
    return (head.in_dims, head.feature_dim, head.num_classes, head.similarity["T"][3].p,
            [tuple(p.shape) for p in head.parameters()])


#: Every argument that takes a number: (what it is, a call taking the number, an integer value
#: and a value for floating types; ``None`` for integer-only arguments), all exact in float16.
NUMBER_ARGUMENTS: dict[str, tuple[Callable[[Any], Any], int, float | None]] = {
    "MultiNTXentLoss(temperature)":
        (lambda v: mt.MultiNTXentLoss(temperature=v)(ANCHOR, CANDIDATES, POSITIVE), 2, 0.5),
    "multi_nt_xent_from_labels(temperature)":
        (lambda v: F.multi_nt_xent_from_labels(EMBEDDINGS, LABELS, temperature=v), 2, 0.25),
    "GDWGWeighter(temperature)": (lambda v: _stage_weights(GDWGWeighter(2, temperature=v)),
                                  1, 0.5),
    "DWAWeighter(temperature)": (lambda v: _stage_weights(DWAWeighter(2, temperature=v)),
                                 3, 1.5),
    "GDWGWeighter(num_tasks)": (lambda v: GDWGWeighter(v).weights.tolist(), 2, None),
    "MultiTaskObjective(fixed)":
        (lambda v: mt.MultiTaskObjective({"a": lambda o, t: torch.tensor(3.0)},
                                         fixed={"a": v})({}, {}).loss.item(), 2, 0.5),
    "dmmsa(beta, weighting_temperature)":
        (lambda v: {k: t.item() for k, t in _dmmsa(beta=v, weighting_temperature=v)(
            OUTPUTS, TARGETS).terms.items()}, 1, 0.5),
    "DecompositionHead(in_dims, feature_dim, num_classes)":
        (lambda v: _head_layout(DecompositionHead({"T": v}, feature_dim=v, num_classes=v)),
         3, None),
    "DecompositionHead(dropout)": (lambda v: _head_layout(DecompositionHead({"T": 3}, dropout=v)),
                                   0, 0.25),
    "CoarseGrainedBinning.preset(num_classes)":
        (lambda v: mt.CoarseGrainedBinning.preset("mosi", v).edges.tolist(), 5, None),
    "CoarseGrainedBinning(edges, low, high)":
        (lambda v: mt.CoarseGrainedBinning([v], low=-4, high=4).edges.tolist(), 1, 0.5),
    "msa_metrics(decimals)":
        (lambda v: msa_metrics(torch.tensor([0.123, -1.4]), torch.tensor([0.5, -1.0]), "mosi",
                               decimals=v), 2, None),
}


@pytest.mark.parametrize("argument", list(NUMBER_ARGUMENTS))
@given(kind=st.sampled_from(NUMPY_INTEGERS + NUMPY_FLOATS + (np.bool_,)))
def test_numpy_numbers_are_taken_wherever_a_number_is(argument: str, kind: type) -> None:
    """A NumPy number gives what the same Python number gives; where a Python float is refused
    (an integer argument) a NumPy float is refused too, and bools are refused everywhere."""
    call, integer, real = NUMBER_ARGUMENTS[argument]
    if kind is np.bool_:
        with pytest.raises(TypeError, match=r"must be .*, got bool"):
            call(np.bool_(True))
        return
    if issubclass(kind, np.floating) and real is None:
        with pytest.raises(TypeError, match=r"must be an? .*int.*, got " + kind.__name__):
            call(kind(integer))
        return
    value = integer if issubclass(kind, np.integer) else real
    assert call(kind(value)) == call(value)


# ------------------------------------------------------------------------- data loader
SPLITS = ("train", "valid", "test")


def _tiny_split(n: int, seed: int) -> dict[str, Any]:
    """A valid MMSA split of ``n`` samples (unaligned, with CH-SIMS's unimodal labels)."""
    rng = np.random.default_rng(seed)
    steps = {"text": 4, "audio": 5, "vision": 6}
    ids = rng.integers(1, 50, (n, steps["text"]))
    mask = np.ones_like(ids)
    split = {
        "id": [f"vid{seed}$_${i}" for i in range(n)],
        "raw_text": [f"clip {i}" for i in range(n)],
        "text": rng.standard_normal((n, steps["text"], 8)).astype(np.float32),
        "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1),
        "audio": rng.standard_normal((n, steps["audio"], 3)).astype(np.float32),
        "vision": rng.standard_normal((n, steps["vision"], 4)).astype(np.float32),
        "audio_lengths": np.full(n, steps["audio"]),
        "vision_lengths": np.full(n, steps["vision"] - 1),
        "regression_labels": np.linspace(-1.0, 1.0, n).astype(np.float32),
    }
    for m in "TAV":
        split[f"regression_labels_{m}"] = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    return split


@dataclass
class Files:
    """Tiny MMSA files in a temporary folder, for the loader rows."""

    folder: Path

    def raw(self) -> dict[str, dict[str, Any]]:
        return {name: _tiny_split(4, seed) for seed, name in enumerate(SPLITS)}

    def write(self, content: object, name: str = "features.pkl") -> Path:
        path = self.folder / name
        with open(path, "wb") as f:
            pickle.dump(content, f, protocol=4)
        return path

    def load(self, content: object, **kwargs: Any) -> dict[str, data.MMSASplit]:
        return data.load_mmsa(self.write(content), **kwargs)

    def changed(self, split: str, key: str, change: Callable[[Any], Any], **kwargs: Any) -> Any:
        """Load a file whose ``split[key]`` is replaced by ``change(old value)``."""
        raw = self.raw()
        raw[split][key] = change(raw[split][key])
        return self.load(raw, **kwargs)

    def garbage(self) -> Path:
        path = self.folder / "x.pkl"
        path.write_bytes(b"not a pickle")
        return path

    def truncated(self, fraction: float) -> Path:
        whole = self.write(self.raw()).read_bytes()
        path = self.folder / "truncated.pkl"
        path.write_bytes(whole[: int(len(whole) * fraction)])
        return path


def _renamed(files: Files, old: str, new: str) -> dict[str, Any]:
    raw = files.raw()
    raw[new] = raw.pop(old)
    return raw


def _nan_audio_is_zeroed_with_a_warning(files: Files) -> float:
    raw = files.raw()
    raw["train"]["audio"][0, 0, 0] = NAN
    message = r"split 'train'.*replaced 1 value\(s\) of 'audio'"
    with pytest.warns(data.MMSADataWarning, match=message):
        splits = files.load(raw)
    return float(splits["train"].audio[0, 0, 0])


def _loaded(files: Files) -> dict[str, data.MMSASplit]:
    return files.load(files.raw())


def _nan_at_1(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[1] = NAN
    return values


def _inf_at_1(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[1] = INF
    return values


def _test_ids_copied_from_train(files: Files) -> int:
    raw = files.raw()
    raw["test"]["id"] = list(raw["train"]["id"])
    with pytest.warns(data.MMSADataWarning, match=r"splits 'train' and 'test' share 4 clip id"):
        splits = files.load(raw)
    return len(splits)


class _RunsCode:
    """A value whose pickle calls ``os.system`` when loaded with ``pickle.load``."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo this ran",))


def _with_code(files: Files) -> dict[str, Any]:
    raw = files.raw()
    raw["train"]["id"] = _RunsCode()
    return raw


def _huge_memo_index(files: Files) -> Path:
    path = files.folder / "corrupt.pkl"
    path.write_bytes(b"\x80\x04N\x72\xff\xff\xff\x7f.")  # LONG_BINPUT 2**31 - 1
    return path


LOADER_ROWS = [
    row("data-truncated-pickle", lambda f: data.load_mmsa(f.truncated(0.5)),
        raises=data.MMSADataError, match=r"truncated\.pkl: not a readable pickle, or truncated"),
    row("data-empty-file", lambda f: data.load_mmsa(f.truncated(0.0)),
        raises=data.MMSADataError,
        match=r"truncated\.pkl: not a readable pickle, or truncated \(the file is empty\)"),
    row("data-not-a-pickle", lambda f: data.load_mmsa(f.garbage()),
        raises=data.MMSADataError, match=r"x\.pkl: not a readable pickle"),
    row("data-missing-file", lambda f: data.load_mmsa(f.folder / "absent.pkl"),
        raises=data.MMSADataError, match=r"absent\.pkl: not a file \(does not exist\)"),
    row("data-directory", lambda f: data.load_mmsa(f.folder),
        raises=data.MMSADataError, match=r"not a file \(is a directory\)"),
    row("data-code-in-pickle", lambda f: f.load(_with_code(f)),
        raises=data.MMSADataError,
        match=r"features\.pkl: refused: the pickle refers to the global '(posix|nt)\.system'"),
    row("data-torch-tensors",
        lambda f: f.load({s: {**v, "audio": torch.from_numpy(v["audio"])}
                          for s, v in f.raw().items()}),
        raises=data.MMSADataError, match=r"holds PyTorch tensors .*export it with "
        r"return_type='np'"),
    row("data-corrupt-memo-index", lambda f: data.load_mmsa(_huge_memo_index(f)),
        raises=data.MMSADataError,
        match=r"corrupt\.pkl: not a readable pickle, or truncated \(ValueError: memo index "
        r"2147483647 at byte 3 is out of sequence\)"),
    row("data-path-none", lambda f: data.load_mmsa(None),
        raises=TypeError, match=r"path must be a str or os.PathLike naming an MMSA feature "
        r"pickle, got NoneType"),
    row("data-splits-one-string", lambda f: f.load(f.raw(), splits="train"),
        returns=lambda splits: list(splits) == ["train"]),
    row("data-splits-not-strings", lambda f: f.load(f.raw(), splits=("train", 1)),
        raises=TypeError, match=r"splits must be a split name or a sequence of split names"),
    row("data-splits-empty", lambda f: f.load(f.raw(), splits=()),
        raises=ValueError, match=r"splits must name at least one split, each once, got \(\)"),
    row("data-bool-labels",
        lambda f: f.changed("train", "regression_labels", lambda v: v > 0),
        raises=data.MMSADataError, match=r"split 'train': key 'regression_labels' holds "
        r"booleans; labels must be real-valued sentiment scores"),
    row("data-test-ids-in-train", _test_ids_copied_from_train, returns=lambda n: n == 3),
    row("data-not-a-dict-of-splits", lambda f: f.load([1, 2, 3]),
        raises=data.MMSADataError, match=r"features\.pkl: must hold a dict of splits"),
    row("data-split-named-dev", lambda f: f.load(_renamed(f, "valid", "dev")),
        raises=data.MMSADataError, match=r"missing split 'valid'.*rename 'dev' to 'valid'"),
    row("data-split-wrong-case", lambda f: f.load(_renamed(f, "train", "Train")),
        raises=data.MMSADataError, match=r"missing split 'train'; the file has .*'Train'"),
    row("data-unknown-split-requested", lambda f: f.load(f.raw(), splits=("train", "validation")),
        raises=data.MMSADataError, match=r"missing split 'validation'"),
    row("data-fewer-labels", lambda f: f.changed("train", "regression_labels", lambda v: v[:3]),
        raises=data.MMSADataError,
        match=r"split 'train': key 'id' has 4 samples but key 'regression_labels' has 3"),
    row("data-fewer-audio", lambda f: f.changed("valid", "audio", lambda v: v[:3]),
        raises=data.MMSADataError, match=r"split 'valid': key 'audio' has 3 samples"),
    row("data-fewer-ids", lambda f: f.changed("test", "id", lambda v: v[:3]),
        raises=data.MMSADataError, match=r"split 'test': key 'id' has 3 samples"),
    row("data-nan-label", lambda f: f.changed("train", "regression_labels", _nan_at_1),
        raises=data.MMSADataError,
        match=r"'regression_labels' holds 1 non-finite label\(s\) \(1 NaN, 0 inf\), first at "
        r"index 1"),
    row("data-inf-unimodal-label", lambda f: f.changed("train", "regression_labels_T", _inf_at_1),
        raises=data.MMSADataError, match=r"'regression_labels_T' holds 1 non-finite.*1 inf"),
    row("data-label-out-of-range",
        lambda f: f.changed("train", "regression_labels", lambda v: v * 2, label_range="sims"),
        raises=data.MMSADataError,
        match=r"'regression_labels' holds 2 label\(s\) outside label_range \[-1, 1\]"),
    row("data-label-out-of-range-unchecked",
        lambda f: f.changed("train", "regression_labels", lambda v: v * 5),
        returns=lambda splits: float(splits["train"].labels["M"].max()) == 5.0),
    row("data-string-labels",
        lambda f: f.changed("train", "regression_labels", lambda v: np.array(["a"] * 4)),
        raises=data.MMSADataError, match=r"'regression_labels' must be a numeric array"),
    row("data-labels-rank-2",
        lambda f: f.changed("train", "regression_labels", lambda v: v.reshape(2, 2)),
        raises=data.MMSADataError, match=r"'regression_labels' must have 1 dimension\(s\) \[N\]"),
    row("data-missing-labels",
        lambda f: f.load({s: {k: v for k, v in split.items() if k != "regression_labels"}
                          for s, split in f.raw().items()}),
        raises=data.MMSADataError, match=r"split 'train': missing key\(s\) 'regression_labels'"),
    row("data-audio-rank-2", lambda f: f.changed("train", "audio", lambda v: v[:, :, 0]),
        raises=data.MMSADataError, match=r"'audio' must have 3 dimension\(s\) \[N, La, da\]"),
    row("data-lengths-out-of-range",
        lambda f: f.changed("train", "audio_lengths", lambda v: v + 100),
        raises=data.MMSADataError, match=r"'audio_lengths' holds 4 length\(s\) outside \[0, 5\]"),
    row("data-text-bert-shape", lambda f: f.changed("train", "text_bert", lambda v: v[:, :2]),
        raises=data.MMSADataError, match=r"'text_bert' must have shape \[N, 3, L\]"),
    row("data-text-bert-negative-ids", lambda f: f.changed("train", "text_bert", lambda v: -v),
        raises=data.MMSADataError, match=r"'text_bert' holds negative token ids"),
    row("data-feature-size-differs-between-splits",
        lambda f: f.changed("valid", "vision", lambda v: v[:, :, :2]),
        raises=data.MMSADataError, match=r"key 'vision' has 4 features in split 'train' but 2"),
    row("data-empty-split", lambda f: f.load({**f.raw(), "test": {
            k: v[:0] for k, v in f.raw()["test"].items()}}),
        raises=data.MMSADataError, match=r"split 'test': has no samples"),
    row("data-nan-audio-zeroed", _nan_audio_is_zeroed_with_a_warning,
        returns=lambda value: value == 0.0),
    row("data-unknown-label-range", lambda f: f.load(f.raw(), label_range="imdb"),
        raises=ValueError, match=r"label_range must be a number, a pair or one of"),
    row("data-negative-label-range", lambda f: f.load(f.raw(), label_range=-1.0),
        raises=ValueError, match=r"label_range must be a finite number > 0"),
    row("data-zero-max-abs", lambda f: f.load(f.raw(), max_abs=0),
        raises=ValueError, match=r"max_abs must be a number > 0"),
    row("data-numpy-float32-label-range-and-max-abs",
        lambda f: f.load(f.raw(), label_range=np.float32(1.0), max_abs=np.float32(1e3)),
        returns=lambda splits: float(splits["train"].labels["M"].max()) == 1.0),
    row("data-unknown-text-source",
        lambda f: batching.MSADataset(_loaded(f)["train"], text_source="tokens"),
        raises=ValueError, match=r"text_source must be one of 'auto' \| 'bert' \| 'features'"),
    row("data-zero-batch-size", lambda f: batching.make_loader(_loaded(f)["train"], batch_size=0),
        raises=ValueError, match=r"batch_size must be an int > 0"),
    row("data-shuffle-with-sampler",
        lambda f: batching.make_loader(_loaded(f)["train"], batch_size=2, shuffle=True,
                                   sampler=[0, 1]),
        raises=ValueError, match=r"shuffle=True cannot be combined with a sampler"),
    row("data-index-out-of-range", lambda f: batching.MSADataset(_loaded(f)["train"])[4],
        raises=IndexError, match=r"index 4 is out of range for 4 samples"),
]


@pytest.mark.parametrize("case", LOADER_ROWS)
def test_data_loader_bad_input(case: Case, tmp_path: Path) -> None:
    files = Files(tmp_path)
    if case.raises is not None:
        with pytest.raises(case.raises, match=case.match):
            case.call(files)
    else:
        result = case.call(files)
        assert case.returns(result), f"unexpected result: {result!r}"


def test_loader_errors_are_value_errors() -> None:
    """``MMSADataError`` is a ``ValueError``: ``except ValueError`` catches every bad file."""
    assert issubclass(data.MMSADataError, ValueError)


# ------------------------------------------------------ the reference system's train.py
class TrainFailed(Exception):
    """``train.main`` exited (``SystemExit``) or returned non-zero; the message is what it said."""


@dataclass
class Workspace:
    """A tiny synthetic file, a finished one-epoch fusion run of it, and a fresh ``out``."""

    folder: Path
    data: Path
    finished: Path

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def argv(self, *extra: str) -> list[str]:
        return ["--data", str(self.data), "--out", str(self.out), "--stage", "fusion",
                "--epochs", "1", "--batch-size", "16", "--threads", "1", "--limit-batches", "1",
                *extra]

    def main(self, *extra: str, argv: list[str] | None = None) -> int:
        """``train.main``; what it writes to stderr (or exits with) becomes a ``TrainFailed``."""
        threads, err = torch.get_num_threads(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = train.main(self.argv(*extra) if argv is None else argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 2
            err.write(str(stop.code) if not isinstance(stop.code, int) else "")
        finally:
            torch.set_num_threads(threads)
        if code:
            raise TrainFailed(err.getvalue())
        return code

    def copy_finished(self, *, keep_result: bool = True) -> Path:
        """The finished run as ``out`` (without ``seed1/result.json``: it resumes from the
        checkpoint)."""
        shutil.copytree(self.finished, self.out)
        if not keep_result:
            (self.out / "seed1" / "result.json").unlink()
        return self.out / "seed1" / "checkpoint.pt"


def _resume_finished_with_other_settings(ws: Workspace) -> None:
    ws.copy_finished()
    before = (ws.out / "config.json").read_text()
    try:
        ws.main("--resume", "--epochs", "5", "--lr", "0.1")
    finally:
        assert (ws.out / "config.json").read_text() == before, "config.json was rewritten"


def _damaged_checkpoint(ws: Workspace, keep: float) -> None:
    path = ws.copy_finished(keep_result=False)
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    ws.main("--resume")


class _CreatesFile:
    """Unpickled, it would create the file ``marker`` (what a hostile checkpoint could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _checkpoint_that_runs_code(ws: Workspace) -> None:
    path = ws.copy_finished(keep_result=False)
    marker = ws.folder / "ran"
    torch.save({"format": 2, "payload": _CreatesFile(marker)}, path)
    try:
        ws.main("--resume")
    finally:
        assert not marker.exists(), "loading the checkpoint ran code"


def _finite_loss_non_finite_gradient(ws: Workspace) -> None:
    def sqrt_of_zero(outputs: dict[str, Any], targets: dict[str, Any]) -> torch.Tensor:
        prediction = outputs["prediction"]  # loss 0, gradient 0 * inf = NaN
        return torch.sqrt((prediction - prediction.detach()) ** 2).mean()

    def objective(*args: Any) -> mt.MultiTaskObjective:
        return mt.MultiTaskObjective({"MSR": sqrt_of_zero})

    original = objectives.fusion_objective
    objectives.fusion_objective = objective
    try:
        ws.main("--save-every", "1")
    finally:
        objectives.fusion_objective = original


def _non_finite_parameters_are_not_saved(ws: Workspace) -> None:
    original = training.optimizer_for

    def optimizer_for(net: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        optimizer = original(net, *args, **kwargs)

        def overflow(*_: Any) -> None:  # after each step: an update that overflowed
            with torch.no_grad():
                next(net.parameters()).view(-1)[0] = math.inf

        optimizer.register_step_post_hook(overflow)
        return optimizer

    training.optimizer_for = optimizer_for
    try:
        ws.main("--save-every", "1")
    finally:
        training.optimizer_for = original
        assert not (ws.out / "seed1" / "checkpoint.pt").exists()


def _generated_where_asked(ws: Workspace) -> bool:
    target = ws.folder / "new.pkl"
    ws.main(argv=[*ws.argv()[2:], "--data", str(target), "--generate-synthetic"])
    return target.is_file()


TRAIN_ROWS = [
    row("train-resume-changed-setting",
        lambda ws: (ws.copy_finished(keep_result=False), ws.main("--resume", "--cl-temperature",
                                                                 "0.25")),
        raises=TrainFailed,
        match=r"made with other arguments \(saved → now: experiment\.train\.objective\."
              r"temperature: 0\.5 → 0\.25\)"),
    row("train-resume-checkpoint-of-other-settings",
        lambda ws: (ws.copy_finished(keep_result=False), (ws.out / "config.json").unlink(),
                    ws.main("--resume", "--weight-scale", "num_tasks")),
        raises=TrainFailed,
        match=r"checkpoint\.pt was made with other arguments \(saved → now: experiment\.train"
              r"\.objective\.scale: 'sum_one' → 'num_tasks'\)"),
    row("train-resume-finished-seed-changed", _resume_finished_with_other_settings,
        raises=TrainFailed,
        match=r"experiment\.train\.fusion\.epochs: 1 → 5; experiment\.train\.fusion\.lr: "
              r"0\.0005 → 0\.1\); its results and config\.json are left as they are"),
    row("train-resume-empty-checkpoint", lambda ws: _damaged_checkpoint(ws, 0.0),
        raises=TrainFailed,
        match=r"cannot read \S*checkpoint\.pt \(.*\): it is empty, truncated, corrupted.*"
              r"Start again in a new --out"),
    row("train-resume-truncated-checkpoint", lambda ws: _damaged_checkpoint(ws, 0.5),
        raises=TrainFailed, match=r"cannot read \S*checkpoint\.pt \(.*Start again in a new"),
    row("train-resume-checkpoint-runs-code", _checkpoint_that_runs_code, raises=TrainFailed,
        match=r"cannot read \S*checkpoint\.pt \(UnpicklingError: Weights only load failed"),
    row("train-non-finite-gradient", _finite_loss_non_finite_gradient, raises=TrainFailed,
        match=r"non-finite value of gradient norm at step 1 \(seed 1, fusion, epoch 1, batch 1\)"
              r" \(gradient norm=nan\); stopping"),
    row("train-non-finite-parameters-not-saved", _non_finite_parameters_are_not_saved,
        raises=TrainFailed,
        match=r"non-finite value\(s\) in \d+ parameter\(s\) .* after step 1 .* stopping "
              r"without saving them. The last good checkpoint is none"),
    row("train-duplicate-seeds", lambda ws: ws.main("--seeds", "1", "1"), raises=TrainFailed,
        match=r"--seeds must be distinct .*, got 1 1 \(1 repeated\)"),
    row("train-missing-data-file",
        lambda ws: ws.main(argv=[*ws.argv()[2:], "--data", str(ws.folder / "typo.pkl")]),
        raises=TrainFailed, match=r"--data \S*typo\.pkl: no such file"),
    row("train-generate-synthetic-into-data", _generated_where_asked, returns=lambda ok: ok),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("train")
    tiny = synthetic.make_synthetic(folder / "tiny.pkl", seed=0, n_train=32, n_valid=8,
                                    n_test=8)
    Workspace(folder, tiny, folder).main(argv=Workspace(folder, tiny, folder).argv()[:2]
                                         + ["--out", str(folder / "finished"),
                                            *Workspace(folder, tiny, folder).argv()[4:],
                                            "--keep-checkpoint"])  # the resume rows need it
    return tiny, folder / "finished"


@pytest.mark.parametrize("case", TRAIN_ROWS)
def test_train_bad_input(case: Case, finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, *finished_run)
    if case.raises is not None:
        with pytest.raises(case.raises, match=case.match):
            case.call(workspace)
    else:
        result = case.call(workspace)
        assert case.returns(result), f"unexpected result: {result!r}"


# ------------------------------------------------------------------ the page in the docs
def _row_ids(rows: list[Any]) -> list[str]:
    return [param.id for param in rows]


def test_every_row_is_in_the_docs_table_and_nothing_else() -> None:
    documented = re.findall(r"^\s*\* - ``([a-z0-9-]+)``", DOCS_PAGE.read_text(), re.M)
    tested = _row_ids(LIBRARY_ROWS) + _row_ids(LOADER_ROWS) + _row_ids(TRAIN_ROWS)
    assert len(set(tested)) == len(tested), "duplicate test ids"
    assert sorted(set(tested) - set(documented)) == [], "rows missing from docs/robustness.rst"
    assert sorted(set(documented) - set(tested)) == [], "docs/robustness.rst lists unknown rows"
    assert len(documented) == len(set(documented)), "a row is documented twice"


def test_known_bugs_are_marked_in_the_docs_table() -> None:
    """A row that is xfail in the tests says "known bug" in the docs (and only those rows)."""
    text = DOCS_PAGE.read_text()
    cells = dict(re.findall(r"^ *\* - ``([a-z0-9-]+)``\n((?: {5,}\S.*\n)+)", text, re.M))
    buggy = {p.id for p in LIBRARY_ROWS + LOADER_ROWS + TRAIN_ROWS if p.marks}
    marked = {test_id for test_id, rest in cells.items() if "known bug" in rest.lower()}
    assert buggy == marked


def _documented_errors() -> dict[str, tuple[str, str]]:
    """``{test id: (exception name, message)}`` of the error rows of the docs table."""
    cells = re.findall(r"^ *\* - ``([a-z0-9-]+)``\n {5,}- .*\n {5,}- (.*\n(?: {7,}\S.*\n)*)",
                       DOCS_PAGE.read_text(), re.M)
    errors = {}
    for test_id, cell in cells:
        text = " ".join(line.strip() for line in cell.splitlines())
        shown = re.match(r"``(\w+)``: ``(.*?)``", text)
        if shown:
            errors[test_id] = (shown[1], shown[2])
    return errors


def _raised(case: Case, *args: Any) -> BaseException:
    with pytest.raises(case.raises) as info:
        case.call(*args)
    return info.value


def _as_documented(message: str, tmp_path: Path | None) -> str:
    if tmp_path is not None:
        message = message.replace(str(tmp_path), "<dir>")
    return message.replace("\n", " ")


def _documented_pattern(documented: str) -> str:
    """The documented message as a regex: ``...`` or ``…`` stands for any text left out."""
    return ".*".join(re.escape(part) for part in re.split(r" ?(?:\.\.\.|…) ?", documented))


@pytest.mark.parametrize(
    "case", [p for p in LIBRARY_ROWS + LOADER_ROWS if p.values[0].raises and not p.marks]
)
def test_the_docs_show_the_message_the_code_raises(
    case: Case, request: Any, tmp_path: Path
) -> None:
    """The three copies of a message agree: the code raises what the docs table shows.

    The test's ``match`` pins what the message must name; this pins the docs' copy to the
    code's, so that neither can drift from the other.
    """
    test_id = request.node.callspec.id
    loader = test_id in set(_row_ids(LOADER_ROWS))
    error = _raised(case, Files(tmp_path)) if loader else _raised(case)
    documented = _documented_errors().get(test_id)
    assert documented is not None, f"{test_id}: no ``Error``: ``message`` cell in the docs"
    name, message = documented
    assert name == type(error).__name__
    actual = _as_documented(str(error), tmp_path if loader else None)
    # the loader's messages start with the file; the table leaves that prefix out
    shown = re.sub(r"^<dir>/[^:,]+[:,] ", "", actual)
    assert any(re.fullmatch(_documented_pattern(message), m) for m in (actual, shown)), (
        f"{test_id}: docs/robustness.rst shows {message!r}, the code raises {actual!r}"
    )
