"""Mixed precision and compilation: the objectives stay finite under autocast and torch.compile.

- CPU bfloat16 autocast: the inputs are made inside the autocast region by ``Linear`` layers, so
  they really are bfloat16; values and gradients must be finite and agree with float32.
- ``torch.compile`` on CPU with small inputs: ``backend="aot_eager"`` (Dynamo + AOTAutograd, no
  code generation; fast) for both loss forms and the whole DMMSA objective, and one test with
  ``backend="inductor"`` (generated C++, slow to compile). Compiled values and gradients must
  match eager ones. Skipped, with the reason, where Dynamo or a C++ compiler is unavailable.
- CUDA (skipped without a GPU; ``pytest -k cuda`` selects them): bfloat16 and float16 autocast
  with a gradient scaler over a few optimiser steps and GDWG stages.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mtobjectives as mt
from mtobjectives import functional as F
from mtobjectives.heads import DecompositionHead
from mtobjectives.weighting import DWAWeighter, EqualWeighter, GDWGWeighter

BF16 = torch.bfloat16
B, K, N, D_IN, D = 8, 5, 12, 12, 16
POSITIVE = torch.tensor([True, True, False, False, False]).expand(B, K)  # V_s, A_s; 3 negatives
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])  # two samples without positive
IN_DIMS = {"T": 10, "A": 6, "V": 7}
FEATURE_NAMES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _linear(in_dim: int, out_dim: int, *, seed: int = 0, scale: float = 1.0) -> nn.Linear:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        layer.weight.mul_(scale)
        layer.bias.mul_(scale)
    return layer


def _head(seed: int = 0) -> DecompositionHead:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DecompositionHead(
            IN_DIMS, feature_dim=16, fusion_hidden=(32, 16), unimodal_hidden=(8,), dropout=0.0
        )


def _head_batch(batch: int = B, seed: int = 1) -> tuple[dict, dict]:
    features = {m: _randn(batch, d, seed=seed + i) for i, (m, d) in enumerate(IN_DIMS.items())}
    labels = torch.tanh(_randn(4, batch, seed=seed + 10))  # CH-SIMS-like labels in (-1, 1)
    targets = {"M": labels[0], "T": labels[1], "A": labels[2], "V": labels[3]}
    return features, targets


def _dmmsa(form: str = "in") -> mt.MultiTaskObjective:
    return mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("sims"), form=form)


def _all_finite(tensors: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _grads(module: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None for g in grads), "a parameter got no gradient"
    return grads


def _assert_bf16_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Agreement to bfloat16 precision (8 significant bits: the inputs are bf16)."""
    torch.testing.assert_close(actual.float(), expected.float(), rtol=3e-2, atol=1e-2)


# -------------------------------------------------------------- CPU bfloat16 autocast
@pytest.mark.parametrize("form", ["in", "out"])
def test_per_anchor_loss_is_finite_under_cpu_bf16_autocast(form: str) -> None:
    projection = _linear(D_IN, D)
    x, xc = _randn(B, D_IN, seed=1), _randn(B, K, D_IN, seed=2)
    criterion = mt.MultiNTXentLoss(form=form)
    with torch.autocast("cpu", dtype=BF16):
        anchor, candidates = projection(x), projection(xc)
        loss = criterion(anchor, candidates, POSITIVE)
    assert anchor.dtype == candidates.dtype == BF16
    assert loss.dtype == BF16 and bool(torch.isfinite(loss))
    loss.backward()
    assert _all_finite(_grads(projection))
    assert projection.weight.grad.abs().sum() > 0
    reference = F.multi_nt_xent(
        anchor.detach().float(), candidates.detach().float(), POSITIVE, form=form
    )
    _assert_bf16_close(loss, reference)


@pytest.mark.parametrize("form", ["in", "out"])
def test_label_loss_is_finite_under_cpu_bf16_autocast(form: str) -> None:
    projection = _linear(D_IN, D)
    criterion = mt.MultiNTXentLoss(form=form)
    with torch.autocast("cpu", dtype=BF16):
        embeddings = projection(_randn(N, D_IN, seed=3))
        loss = criterion.from_labels(embeddings, LABELS)
    assert embeddings.dtype == BF16
    assert loss.dtype == BF16 and bool(torch.isfinite(loss))
    assert int(criterion.anchors_used) == 10
    loss.backward()
    assert _all_finite(_grads(projection))
    assert projection.weight.grad.abs().sum() > 0
    reference = F.multi_nt_xent_from_labels(embeddings.detach().float(), LABELS, form=form)
    _assert_bf16_close(loss, reference)


def _bf16_loss(projection: nn.Linear, input_form: str, **options: Any) -> torch.Tensor:
    """A contrastive loss of ``projection``'s outputs, computed inside CPU bf16 autocast."""
    criterion = mt.MultiNTXentLoss(**options)
    with torch.autocast("cpu", dtype=BF16):
        if input_form == "per-anchor":
            anchor = projection(_randn(B, D_IN, seed=1))
            candidates = projection(_randn(B, K, D_IN, seed=2))
            assert _all_finite([anchor, candidates]) and anchor.dtype == BF16
            return criterion(anchor, candidates, POSITIVE)
        embeddings = projection(_randn(N, D_IN, seed=3))
        assert _all_finite([embeddings]) and embeddings.dtype == BF16
        return criterion.from_labels(embeddings, LABELS)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
@pytest.mark.parametrize("input_form", ["per-anchor", "labels"])
def test_loss_stays_finite_at_any_scale_and_small_temperature_under_bf16(
    input_form: str, scale: float
) -> None:
    projection = _linear(D_IN, D, scale=scale)  # outputs of size ~scale, still finite in bf16
    loss = _bf16_loss(projection, input_form, temperature=0.05)
    assert bool(torch.isfinite(loss))
    loss.backward()
    assert _all_finite(_grads(projection))


@pytest.mark.parametrize(("dataset", "amplitude"), [("sims", 1.0), ("mosi", 3.0)])
def test_binning_of_bf16_predictions_matches_a_numpy_reference(
    dataset: str, amplitude: float
) -> None:
    binning = mt.CoarseGrainedBinning.preset(dataset, num_classes=5)
    regressor = _linear(D_IN, 1, scale=4.0)
    with torch.autocast("cpu", dtype=BF16):
        y = amplitude * torch.tanh(regressor(_randn(256, D_IN, seed=4))).squeeze(-1)
        classes = binning(y)
    assert y.dtype == BF16 and classes.dtype == torch.long
    # Comparisons happen in bfloat16: the edges are rounded to bfloat16 first.
    edges = torch.tensor([hi for _, hi in binning.intervals[:-1]]).to(BF16).float().numpy()
    side = "left" if binning.closed == "right" else "right"
    expected = np.searchsorted(edges, y.float().detach().numpy(), side=side)
    np.testing.assert_array_equal(classes.numpy(), expected)
    assert len(set(classes.tolist())) == binning.num_classes  # every class is exercised


def test_constrain_of_bf16_predictions_is_finite_and_differentiable() -> None:
    binning = mt.CoarseGrainedBinning.preset("mosi", num_classes=3)
    regressor, classifier = _linear(D_IN, 1, scale=4.0), _linear(D_IN, 3, seed=1)
    x = _randn(64, D_IN, seed=5)
    with torch.autocast("cpu", dtype=BF16):
        prediction = 3 * torch.tanh(regressor(x)).squeeze(-1)
        constrained = binning.constrain(prediction, classifier(x))
    assert constrained.dtype == BF16 and _all_finite([constrained])
    lows = torch.tensor([lo for lo, _ in binning.intervals])
    highs = torch.tensor([hi for _, hi in binning.intervals])
    classes = classifier(x).argmax(-1)
    inside = (constrained.float() >= lows[classes]) & (constrained.float() <= highs[classes])
    assert bool(inside.all())
    constrained.float().sum().backward()
    assert _all_finite(_grads(regressor))


@pytest.mark.parametrize("kind", [GDWGWeighter, DWAWeighter, EqualWeighter])
def test_weighter_is_finite_over_stages_of_bf16_losses(kind: type) -> None:
    model = _linear(D_IN, 2)
    weighter = kind(2, task_names=["Uni", "CL"])
    for stage in range(4):
        model.zero_grad()
        with torch.autocast("cpu", dtype=BF16):
            out = model(_randn(B, D_IN, seed=stage))
            losses = torch.stack([out[:, 0].pow(2).mean(), out[:, 1].abs().mean()])
            total = weighter(losses)
        assert losses.dtype == BF16 and total.dtype == BF16 and bool(torch.isfinite(total))
        total.backward()
        assert _all_finite(_grads(model))
        weighter.step()
    weights = weighter.weights
    assert _all_finite([weights]) and bool((weights > 0).all())
    expected_sum = 2.0 if weighter.scale == "num_tasks" else 1.0
    assert weights.sum().item() == pytest.approx(expected_sum)


def test_dmmsa_objective_on_decomposition_head_is_finite_under_cpu_bf16_autocast() -> None:
    head, objective = _head(), _dmmsa()
    head_fp32, objective_fp32 = copy.deepcopy(head), _dmmsa()
    features, targets = _head_batch()
    with torch.autocast("cpu", dtype=BF16):
        outputs = head(features)
        result = objective(outputs, targets)
    assert outputs["prediction"].dtype == BF16
    assert all(f.dtype == BF16 for f in outputs["features"].values())
    assert set(result.terms) == {"MSR", "MSC", "Uni", "CL"}
    assert _all_finite([result.loss, *result.terms.values(), *result.weights.values()])
    result.loss.backward()
    assert _all_finite(_grads(head))

    reference = objective_fp32(head_fp32(features), targets)
    for name, term in result.terms.items():
        _assert_bf16_close(term, reference.terms[name])


def test_dmmsa_gdwg_weights_stay_finite_over_bf16_stages() -> None:
    head, objective = _head(), _dmmsa()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05)
    for stage in range(3):
        for batch in range(2):
            features, targets = _head_batch(seed=10 * stage + batch)
            with torch.autocast("cpu", dtype=BF16):
                result = objective(head(features), targets)
            optimizer.zero_grad()
            result.loss.backward()
            assert _all_finite(_grads(head))
            optimizer.step()
        objective.step()
    weights = objective.weighter.weights
    assert _all_finite([weights]) and weights.sum().item() == pytest.approx(1.0)
    assert _all_finite(head.parameters())


# --------------------------------------------------------------------- torch.compile
@pytest.fixture
def fresh_dynamo() -> Any:
    """Each compile test starts from an empty Dynamo cache (no recompile-limit interplay)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _require_compile(backend: str) -> None:
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile (Dynamo) is not supported on this Python/platform")
    if backend == "inductor":
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None and shutil.which("c++") is None:
            pytest.skip(f"backend='inductor' needs a C++ compiler ({compiler!r} not found)")


def _compiled_call(compiled: Callable[..., Any], *args: Any) -> Any:
    """Call a compiled function; skip when the failure is the environment's (no compiler)."""
    try:
        return compiled(*args)
    except torch._dynamo.exc.BackendCompilerFailed as error:  # pragma: no cover - environment
        text = str(error)
        if any(s in text for s in ("CppCompileError", "compiler", "No such file", "cannot find")):
            pytest.skip(f"torch.compile backend could not build code here: {text[:300]}")
        raise


def _per_anchor_problem() -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(B, D, seed=6), _randn(B, K, D, seed=7)


def _check_per_anchor_compiled(backend: str, form: str) -> None:
    _require_compile(backend)
    anchor, candidates = _per_anchor_problem()
    eager = mt.MultiNTXentLoss(form=form)
    compiled = torch.compile(mt.MultiNTXentLoss(form=form), backend=backend, fullgraph=True)

    def run(criterion: Callable[..., Any]) -> tuple[torch.Tensor, ...]:
        a, c = anchor.clone().requires_grad_(), candidates.clone().requires_grad_()
        loss = _compiled_call(criterion, a, c, POSITIVE)
        loss.backward()
        return loss.detach(), a.grad, c.grad

    expected, got = run(eager), run(compiled)
    for value_expected, value_got in zip(expected, got):
        torch.testing.assert_close(value_got, value_expected, rtol=1e-5, atol=1e-6)
    assert int(compiled.anchors_used) == int(eager.anchors_used) == B


@pytest.mark.parametrize("form", ["in", "out"])
def test_per_anchor_loss_compiled_with_aot_eager_matches_eager(form: str, fresh_dynamo) -> None:
    _check_per_anchor_compiled("aot_eager", form)


def test_per_anchor_loss_compiled_with_inductor_matches_eager(fresh_dynamo) -> None:
    """The one test that generates and compiles C++ (about 20 s on 2 cores, cold cache)."""
    _check_per_anchor_compiled("inductor", "in")


@pytest.mark.parametrize("form", ["in", "out"])
def test_label_loss_compiled_with_aot_eager_matches_eager(form: str, fresh_dynamo) -> None:
    _require_compile("aot_eager")
    embeddings = _randn(N, D, seed=8)

    def loss_fn(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.multi_nt_xent_from_labels(x, labels, form=form)

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (loss_fn, compiled):
        x = embeddings.clone().requires_grad_()
        loss = _compiled_call(fn, x, LABELS)
        loss.backward()
        results.append((loss.detach(), x.grad))
    for value_expected, value_got in zip(*results):
        torch.testing.assert_close(value_got, value_expected, rtol=1e-5, atol=1e-6)


def test_dmmsa_objective_compiled_with_aot_eager_matches_eager(fresh_dynamo) -> None:
    """Head and objective compiled together (graph breaks at the NaN checks of the labels)."""
    _require_compile("aot_eager")
    features, targets = _head_batch(batch=6)
    runs = []
    for compile_it in (False, True):
        head, objective = _head(), _dmmsa()

        def step(features: dict, targets: dict, head=head, objective=objective) -> tuple:
            result = objective(head(features), targets)
            return result.loss, result.terms

        fn = torch.compile(step, backend="aot_eager") if compile_it else step
        loss, terms = _compiled_call(fn, features, targets)
        loss.backward()
        runs.append((loss.detach(), terms, _grads(head), objective.weighter.stage_loss_sum))
    (loss_e, terms_e, grads_e, sums_e), (loss_c, terms_c, grads_c, sums_c) = runs
    assert _all_finite([loss_c, *terms_c.values(), *grads_c])
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms_c, terms_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads_c, grads_e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sums_c, sums_e, rtol=1e-6, atol=0.0)  # recorded exactly once


# ----------------------------------------------------------------------------- CUDA
def _require_cuda(dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if dtype == BF16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this CUDA device has no bfloat16 support")


def _scaled_steps(
    module: nn.Module,
    loss_fn: Callable[[int], torch.Tensor],
    device: str,
    steps: int,
    on_stage_end: Callable[[], None] | None = None,
) -> None:
    """Optimiser steps through a GradScaler: losses finite, at most the first step skipped.

    A float16 loss returned by the library (in the input dtype, as documented) receives the scaled
    gradient in float16: with GradScaler's default initial scale 2**16 > 65504 (the float16
    maximum) the very first step overflows and is skipped, which is the scaler's normal
    calibration. After that every unscaled gradient must be finite and every step taken.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device)
    skipped = []
    for i in range(steps):
        loss = loss_fn(i)
        assert bool(torch.isfinite(loss)), f"non-finite loss at step {i}"
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if not _all_finite(_grads(module)):
            skipped.append(i)
        scaler.step(optimizer)
        scaler.update()
        if on_stage_end is not None and i % 2 == 1:
            on_stage_end()
    assert skipped in ([], [0]), f"steps skipped for non-finite gradients: {skipped}"
    assert _all_finite(module.parameters())
    assert 0 < scaler.get_scale() < float("inf")


def _dmmsa_with_scaler(device: str, dtype: torch.dtype) -> None:
    """Head + DMMSA objective: 6 scaled optimiser steps over 3 GDWG stages of 2 batches."""
    head, objective = _head().to(device), _dmmsa().to(device)

    def loss_fn(i: int) -> torch.Tensor:
        features, targets = _head_batch(seed=i)
        features = {m: v.to(device) for m, v in features.items()}
        targets = {m: v.to(device) for m, v in targets.items()}
        with torch.autocast(device, dtype=dtype):
            outputs = head(features)
            result = objective(outputs, targets)
        assert outputs["features"]["T_s"].dtype == dtype
        assert _all_finite(result.terms.values())
        return result.loss

    _scaled_steps(head, loss_fn, device, steps=6, on_stage_end=objective.step)
    weights = objective.weighter.weights
    assert objective.weighter.stage == 4
    assert _all_finite([weights]) and weights.sum().item() == pytest.approx(1.0)


def _contrastive_with_scaler(device: str, dtype: torch.dtype, input_form: str, form: str) -> None:
    """One contrastive loss form on a Linear projection: 4 scaled optimiser steps."""
    projection = _linear(D_IN, D).to(device)
    criterion = mt.MultiNTXentLoss(form=form)
    positive, labels = POSITIVE.to(device), LABELS.to(device)

    def loss_fn(i: int) -> torch.Tensor:
        with torch.autocast(device, dtype=dtype):
            if input_form == "per-anchor":
                anchor = projection(_randn(B, D_IN, seed=i).to(device))
                candidates = projection(_randn(B, K, D_IN, seed=100 + i).to(device))
                loss = criterion(anchor, candidates, positive)
            else:
                anchor = projection(_randn(N, D_IN, seed=200 + i).to(device))
                loss = criterion.from_labels(anchor, labels)
        assert anchor.dtype == dtype and loss.dtype == dtype
        return loss

    _scaled_steps(projection, loss_fn, device, steps=4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_dmmsa_objective_with_autocast_and_grad_scaler(dtype: torch.dtype) -> None:
    _require_cuda(dtype)
    _dmmsa_with_scaler("cuda", dtype)


@pytest.mark.parametrize("form", ["in", "out"])
@pytest.mark.parametrize("input_form", ["per-anchor", "labels"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_contrastive_loss_with_autocast_and_grad_scaler(
    dtype: torch.dtype, input_form: str, form: str
) -> None:
    _require_cuda(dtype)
    _contrastive_with_scaler("cuda", dtype, input_form, form)
