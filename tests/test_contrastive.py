"""Properties of the Multi NT-Xent loss (Eq. 3) and the text-anchored pairs (Eq. 11-12)."""

from __future__ import annotations

import itertools
import math
import weakref

import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import mtobjectives as mt
from mtobjectives import functional as F

FORMS = ["in", "out"]
REDUCTIONS = ["mean", "sum", "none"]
FEATURES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
OPTIONAL_FEATURES = ("T_d", "A_s", "A_d", "V_s", "V_d")
f64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Independent references and helpers
# ---------------------------------------------------------------------------------------------


def loop_reference(anchor, candidates, positive_mask, valid_mask, temperature, form):
    """Per-anchor Eq. 3 / L_out written as plain Python loops over float64 scalars.

    Returns a list with one 0-d tensor per anchor, or ``None`` for an anchor without positive.
    """
    losses = []
    batch, num_candidates, _ = candidates.shape
    for b in range(batch):
        a = anchor[b]
        sims = {}
        for k in range(num_candidates):
            if valid_mask[b, k]:
                c = candidates[b, k]
                sims[k] = torch.dot(a, c) / (a.norm() * c.norm()) / temperature
        positives = [k for k in sims if positive_mask[b, k]]
        if not positives:
            losses.append(None)
            continue
        denominator = sum(torch.exp(s) for s in sims.values())
        if form == "in":
            numerator = sum(torch.exp(sims[p]) for p in positives)
            losses.append(-torch.log(numerator / denominator))
        else:
            terms = [torch.log(torch.exp(sims[p]) / denominator) for p in positives]
            losses.append(-sum(terms) / len(positives))
    return losses


def reduce_reference(losses, reduction, like):
    present = [loss for loss in losses if loss is not None]
    if reduction == "none":
        return torch.stack([like.new_zeros(()) if x is None else x for x in losses])
    total = sum(present) if present else like.new_zeros(())
    if reduction == "sum":
        return total
    return total / max(len(present), 1)


def pairs_from_labels(embeddings, labels):
    """The label form written as per-anchor candidates: every other sample, in order."""
    n = embeddings.shape[0]
    others = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, n)]) for i in range(n)])
    return embeddings[others], labels[others] == labels.unsqueeze(1)


def grads(output, *inputs):
    return torch.autograd.grad(output.sum(), inputs, allow_unused=True)


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once among storages created inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = 0
        self._live: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.current -= nbytes
        self._live.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key, nbytes = storage._cdata, storage.nbytes()
                if key not in self._live and nbytes > 0:
                    self._live.add(key)
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._release, key, nbytes)
        return out


@st.composite
def problems(draw, max_batch=5, max_candidates=5, max_dim=6):
    """Random float64 anchors, candidates and arbitrary positive/valid masks."""
    batch = draw(st.integers(1, max_batch))
    k = draw(st.integers(1, max_candidates))
    dim = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**31 - 1))
    cells = batch * k
    positive = draw(st.lists(st.booleans(), min_size=cells, max_size=cells))
    valid = draw(st.lists(st.booleans(), min_size=cells, max_size=cells))
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randn(batch, dim, generator=generator, dtype=f64)
    candidates = torch.randn(batch, k, dim, generator=generator, dtype=f64)
    positive_mask = torch.tensor(positive).reshape(batch, k)
    valid_mask = torch.tensor(valid).reshape(batch, k)
    return anchor, candidates, positive_mask, valid_mask


@st.composite
def labelled_batches(draw, max_n=10, max_dim=5):
    n = draw(st.integers(1, max_n))
    dim = draw(st.integers(1, max_dim))
    labels = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**31 - 1))
    embeddings = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=f64)
    return embeddings, torch.tensor(labels)


def random_problem(batch=5, k=4, dim=6, seed=0):
    """Fixed random anchors and candidates with arbitrary positive and valid masks."""
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randn(batch, dim, generator=generator, dtype=f64)
    candidates = torch.randn(batch, k, dim, generator=generator, dtype=f64)
    positive_mask = torch.rand(batch, k, generator=generator) < 0.4
    valid_mask = torch.rand(batch, k, generator=generator) < 0.7
    return anchor, candidates, positive_mask, valid_mask


def one_positive_problem(batch=6, k=5, dim=8, seed=0, dtype=f64):
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randn(batch, dim, generator=generator, dtype=dtype)
    candidates = torch.randn(batch, k, dim, generator=generator, dtype=dtype)
    positive_index = torch.randint(0, k, (batch,), generator=generator)
    positive_mask = torch.nn.functional.one_hot(positive_index, k).bool()
    return anchor, candidates, positive_mask, positive_index


# ---------------------------------------------------------------------------------------------
# The paper's equations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_equals_nt_xent_of_eq1_with_one_positive(form):
    anchor, candidates, positive_mask, positive_index = one_positive_problem()
    temperature = 0.3
    cosine = torch.nn.functional.cosine_similarity(anchor.unsqueeze(1), candidates, dim=-1)
    # Eq. 1 with one positive is the cross-entropy of the positive among the candidates.
    expected = torch.nn.functional.cross_entropy(cosine / temperature, positive_index)
    loss = F.multi_nt_xent(anchor, candidates, positive_mask, temperature=temperature, form=form)
    torch.testing.assert_close(loss, expected)


def aligned_problem(num_positives, num_negatives=3, dim=16, seed=0):
    """Positives equal to the anchor, negatives opposite to it: the converged state of Eq. 4."""
    anchor = torch.randn(4, dim, generator=torch.Generator().manual_seed(seed), dtype=f64)
    positives = anchor.unsqueeze(1).expand(4, num_positives, dim)
    negatives = -anchor.unsqueeze(1).expand(4, num_negatives, dim)
    candidates = torch.cat([positives, negatives], dim=1)
    positive_mask = torch.arange(num_positives + num_negatives) < num_positives
    return anchor, candidates, positive_mask.expand(4, -1)


@pytest.mark.parametrize("num_positives", [1, 2, 3, 5])
def test_in_form_tends_to_zero_when_positives_dominate_for_any_number_of_positives(
    num_positives,
):
    anchor, candidates, positive_mask = aligned_problem(num_positives)
    loss = F.multi_nt_xent(anchor, candidates, positive_mask, temperature=0.05, form="in")
    assert 0 <= loss.item() < 1e-15  # Eq. 4: -log(n / n)


@pytest.mark.parametrize("num_positives", [2, 3, 5])
def test_out_form_stays_at_log_num_positives_when_positives_dominate(num_positives):
    anchor, candidates, positive_mask = aligned_problem(num_positives)
    loss = F.multi_nt_xent(anchor, candidates, positive_mask, temperature=0.05, form="out")
    assert loss.item() == pytest.approx(math.log(num_positives), abs=1e-12)  # Eq. 2


@given(problems())
def test_in_form_never_exceeds_out_form(problem):
    anchor, candidates, positive_mask, valid_mask = problem
    kwargs = dict(valid_mask=valid_mask, reduction="none", temperature=0.2)
    loss_in = F.multi_nt_xent(anchor, candidates, positive_mask, form="in", **kwargs)
    loss_out = F.multi_nt_xent(anchor, candidates, positive_mask, form="out", **kwargs)
    assert bool((loss_in <= loss_out + 1e-12).all())


# ---------------------------------------------------------------------------------------------
# Agreement with pytorch-metric-learning where the math coincides
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_out_form_from_labels_equals_pml_supcon(temperature):
    # pml divides cosine similarity by its temperature, as we do, and its AvgNonZeroReducer
    # leaves out anchors whose loss is 0: exactly those without a positive (every anchor here
    # has a negative). Labels include singletons (anchors without positive).
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(40, 16, generator=generator, dtype=f64)
    labels = torch.randint(0, 12, (40,), generator=generator)
    labels[:3] = torch.tensor([100, 101, 102])  # three anchors without a positive
    loss, count = F.multi_nt_xent_from_labels(
        embeddings, labels, temperature=temperature, form="out", return_count=True
    )
    expected = SupConLoss(temperature=temperature)(embeddings, labels)
    torch.testing.assert_close(loss, expected)
    assert count.item() < 40


def test_out_form_from_labels_equals_pml_supcon_gradients():
    generator = torch.Generator().manual_seed(2)
    embeddings = torch.randn(24, 8, generator=generator, dtype=f64, requires_grad=True)
    labels = torch.randint(0, 4, (24,), generator=generator)
    ours = F.multi_nt_xent_from_labels(embeddings, labels, temperature=0.1, form="out")
    theirs = SupConLoss(temperature=0.1)(embeddings, labels)
    torch.testing.assert_close(grads(ours, embeddings), grads(theirs, embeddings))


@pytest.mark.parametrize("with_invalid", [False, True])
def test_in_form_with_one_positive_equals_pml_ntxent_with_indices_tuple(with_invalid):
    # pml's NTXentLoss gives each (anchor, positive) pair the loss
    # -log(e^{s_p/t} / (e^{s_p/t} + sum_{negatives n of that anchor} e^{s_n/t})) and averages over
    # positive pairs: with one positive per anchor this is L_in averaged over anchors.
    anchor, candidates, positive_mask, _ = one_positive_problem(batch=7, k=6, seed=3)
    batch, k, dim = candidates.shape
    valid_mask = torch.ones(batch, k, dtype=torch.bool)
    if with_invalid:
        valid_mask = torch.rand(batch, k, generator=torch.Generator().manual_seed(4)) > 0.3
        valid_mask |= positive_mask
    embeddings = torch.cat([anchor, candidates.reshape(batch * k, dim)])
    column = batch + torch.arange(batch * k).reshape(batch, k)  # row of candidate (b, k)
    rows = torch.arange(batch).unsqueeze(1).expand(batch, k)
    negative_mask = valid_mask & ~positive_mask
    indices_tuple = (
        rows[positive_mask],
        column[positive_mask],
        rows[negative_mask],
        column[negative_mask],
    )
    expected = NTXentLoss(temperature=0.4)(embeddings, indices_tuple=indices_tuple)
    loss = F.multi_nt_xent(
        anchor, candidates, positive_mask, valid_mask=valid_mask, temperature=0.4, form="in"
    )
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------------------------------------
# Against an independent loop implementation; gradients
# ---------------------------------------------------------------------------------------------


@given(
    problems(),
    st.sampled_from(FORMS),
    st.sampled_from(REDUCTIONS),
    st.floats(min_value=0.05, max_value=5.0),
)
def test_values_and_gradients_match_a_plain_loop_implementation(
    problem, form, reduction, temperature
):
    anchor, candidates, positive_mask, valid_mask = problem
    anchor.requires_grad_(True)
    candidates.requires_grad_(True)
    loss = F.multi_nt_xent(
        anchor,
        candidates,
        positive_mask,
        valid_mask=valid_mask,
        temperature=temperature,
        form=form,
        reduction=reduction,
    )
    expected = reduce_reference(
        loop_reference(anchor, candidates, positive_mask, valid_mask, temperature, form),
        reduction,
        anchor,
    )
    torch.testing.assert_close(loss, expected)
    if expected.requires_grad:  # else no anchor has a positive (checked elsewhere)
        for ours, reference in zip(
            grads(loss, anchor, candidates), grads(expected, anchor, candidates)
        ):
            torch.testing.assert_close(
                ours, torch.zeros_like(ours) if reference is None else reference
            )


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_per_anchor_form(form):
    generator = torch.Generator().manual_seed(5)
    anchor = torch.randn(4, 5, generator=generator, dtype=f64, requires_grad=True)
    candidates = torch.randn(4, 3, 5, generator=generator, dtype=f64, requires_grad=True)
    positive_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    valid_mask = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)

    def loss(a, c):
        return F.multi_nt_xent(
            a, c, positive_mask, valid_mask=valid_mask, form=form, reduction="none"
        )

    assert torch.autograd.gradcheck(loss, (anchor, candidates))


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_label_form(form):
    embeddings = torch.randn(7, 4, generator=torch.Generator().manual_seed(6), dtype=f64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # label 2 and 3: no positive

    def loss(e):
        return F.multi_nt_xent_from_labels(e, labels, temperature=0.3, form=form, reduction="none")

    assert torch.autograd.gradcheck(loss, (embeddings.requires_grad_(True),))


def test_per_anchor_form_supports_second_derivatives():
    generator = torch.Generator().manual_seed(7)
    anchor = torch.randn(3, 4, generator=generator, dtype=f64, requires_grad=True)
    candidates = torch.randn(3, 3, 4, generator=generator, dtype=f64, requires_grad=True)
    positive_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    assert torch.autograd.gradgradcheck(
        lambda a, c: F.multi_nt_xent(a, c, positive_mask), (anchor, candidates)
    )


@pytest.mark.parametrize("form", FORMS)
def test_label_form_supports_second_derivatives(form):
    embeddings = torch.randn(6, 3, generator=torch.Generator().manual_seed(8), dtype=f64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    assert torch.autograd.gradgradcheck(
        lambda e: F.multi_nt_xent_from_labels(e, labels, form=form),
        (embeddings.requires_grad_(True),),
    )


# ---------------------------------------------------------------------------------------------
# Numerics: any scale, temperature and dtype; any mask
# ---------------------------------------------------------------------------------------------

# float16 holds |x| <= 65504, and the true gradient of a cosine grows like 1 / (|x| tau): at
# scale 1e-3 it already exceeds float16 in the input's own dtype. Other dtypes: 1e-6 .. 1e6.
SCALE_EXPONENTS = {
    torch.float16: (-2.0, 4.0),
    torch.bfloat16: (-6.0, 6.0),
    torch.float32: (-6.0, 6.0),
    torch.float64: (-6.0, 6.0),
}


@st.composite
def scaled_inputs(draw):
    """dtype, temperature, form and a maker of random vectors, each with its own scale."""
    dtype = draw(st.sampled_from(list(SCALE_EXPONENTS)))
    low, high = SCALE_EXPONENTS[dtype]
    temperature = draw(st.floats(min_value=0.01, max_value=10.0, exclude_min=True))
    form = draw(st.sampled_from(FORMS))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def vectors(*shape):
        exponents = torch.empty(*shape[:-1], 1).uniform_(low, high, generator=generator)
        values = torch.randn(*shape, generator=generator) * 10.0**exponents
        return values.to(dtype).requires_grad_(True)

    return dtype, temperature, form, vectors


@given(scaled_inputs())
def test_per_anchor_form_is_finite_for_any_scale_temperature_and_dtype(case):
    dtype, temperature, form, vectors = case
    anchor, candidates = vectors(6, 8), vectors(6, 5, 8)
    positive_mask = torch.tensor([True, True, False, False, False]).expand(6, 5)
    loss = F.multi_nt_xent(anchor, candidates, positive_mask, temperature=temperature, form=form)
    loss.backward()
    assert loss.dtype == dtype
    assert torch.isfinite(loss)
    assert bool(torch.isfinite(anchor.grad).all() and torch.isfinite(candidates.grad).all())


@given(scaled_inputs())
def test_label_form_is_finite_for_any_scale_temperature_and_dtype(case):
    dtype, temperature, form, vectors = case
    embeddings = vectors(12, 8)
    labels = torch.arange(12) % 3
    loss = F.multi_nt_xent_from_labels(embeddings, labels, temperature=temperature, form=form)
    loss.backward()
    assert loss.dtype == dtype
    assert torch.isfinite(loss)
    assert bool(torch.isfinite(embeddings.grad).all())


# ---------------------------------------------------------------------------------------------
# Tiny and huge inputs: the exact gradient, finite wherever its size fits the dtype
# ---------------------------------------------------------------------------------------------

# Scale exponents per dtype, down to the subnormal numbers (float32 1e-45, float16 6e-8).
EXTREME_EXPONENTS = {
    torch.float16: (-7.0, 4.0),
    torch.bfloat16: (-40.0, 30.0),
    torch.float32: (-45.0, 30.0),
}


@st.composite
def extreme_inputs(draw):
    """dtype, scale, temperature (down to 1e-5, where float16 losses overflow) and form."""
    dtype = draw(st.sampled_from(list(EXTREME_EXPONENTS)))
    low, high = EXTREME_EXPONENTS[dtype]
    scale = 10.0 ** draw(st.floats(low, high))
    temperature = 10.0 ** draw(st.floats(-5.0, 1.0))
    return dtype, scale, temperature, draw(st.sampled_from(FORMS)), draw(st.integers(0, 99))


EXTREME_EXAMPLES = [  # the subnormal float32 scale 1e-40, and float16 at temperature 1e-5
    (torch.float32, 1e-40, 0.5, "in", 0),
    (torch.float32, 1e-40, 0.5, "out", 0),
    (torch.float16, 1.0, 1e-5, "in", 0),
]


def _with_examples(test):
    for case in EXTREME_EXAMPLES:
        test = example(case)(test)
    return test


def _rounded(shape, scale, dtype, seed):
    """Random vectors at ``scale``, rounded to ``dtype`` (skipped if one rounds to zero)."""
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)
    x = (values * scale).to(dtype)
    assume(bool((x != 0).any(dim=-1).all()))
    return x.requires_grad_(True)


def _plain_unit(x, scale, min_norm):
    """``x / |x|`` in float64 on ``x = x_true / scale``; 0 where ``|x_true| < MIN_NORM``.

    A vector below the library's MIN_NORM has no direction: its cosines are 0 and, through
    ``torch.where``, its gradient is exactly 0.
    """
    norm = x.norm(dim=-1, keepdim=True)
    has_direction = norm.detach() * scale >= min_norm
    return torch.where(has_direction, x / torch.where(has_direction, norm, 1.0), 0.0)


def no_direction_norm(dtype, temperature):
    """Independently: MIN_NORM, or where 8 / (tau |x|) would exceed the dtype's largest value."""
    return max(F.MIN_NORM, 8.0 / (temperature * torch.finfo(dtype).max))


def _plain_logits(x, others, temperature, scale=1.0, dtype=f64):
    """Cosine logits by the textbook formula, in float64 on ``x / scale`` (scale invariant)."""
    min_norm = no_direction_norm(dtype, temperature)
    unit, units = _plain_unit(x, scale, min_norm), _plain_unit(others, scale, min_norm)
    return (units * unit.unsqueeze(-2)).sum(dim=-1) / temperature


def _plain_losses(logits, positive, valid, form):
    log_denominator = logits.masked_fill(~valid, -math.inf).logsumexp(dim=-1)
    if form == "in":
        log_numerator = logits.masked_fill(~positive, -math.inf).logsumexp(dim=-1)
    else:
        log_numerator = (logits * positive).sum(dim=-1) / positive.sum(dim=-1)
    return log_denominator - log_numerator


def _exact_gradients(inputs, scale, loss_of):
    """Loss and gradients in float64 on the same (rounded) inputs, by plain formulas."""
    scaled = [(x.detach().double() / scale).requires_grad_(True) for x in inputs]
    loss = loss_of(*scaled)
    grads = torch.autograd.grad(loss, scaled)
    return loss.detach(), [g / scale for g in grads]  # d/dx = d/d(x / s) / s


def _check_against_exact(loss, inputs, exact_loss, exact_grads, dtype, temperature, bounds):
    """The loss matches; the gradient matches where its size bound fits ``dtype`` (finite)."""
    eps, limit = torch.finfo(dtype).eps, torch.finfo(dtype).max
    compute = 1e-6 * (10.0 + 1.0 / temperature)  # float32 logits carry about eps32 / tau
    assert torch.isfinite(loss)
    torch.testing.assert_close(
        loss.double(), exact_loss, rtol=4 * eps, atol=compute, check_dtype=False
    )
    for x, exact, bound in zip(inputs, exact_grads, bounds):
        got = x.grad.double()
        size = bound(x.detach().double())  # [..., 1]: the gradient's size bound per vector
        fits = (size <= limit / 4).expand_as(got)
        assert bool(torch.isfinite(got[fits]).all())
        tolerance = compute * size + 2 * eps * exact.abs() + torch.finfo(dtype).tiny
        assert bool(((got - exact).abs() <= tolerance)[fits].all())


@_with_examples
@given(extreme_inputs())
def test_per_anchor_form_at_extreme_scales_has_the_exact_gradient(case):
    """Finite loss at any scale; the gradient is the exact one, finite wherever its size bound
    2 / (tau |x|) fits the dtype; vectors below MIN_NORM (e.g. the subnormal scale 1e-40) have
    no direction: cosine 0, gradient exactly 0."""
    dtype, scale, temperature, form, seed = case
    anchor = _rounded((6, 8), scale, dtype, seed)
    candidates = _rounded((6, 5, 8), scale, dtype, seed + 1)
    positive = torch.tensor([True, True, False, False, False]).expand(6, 5)
    valid = torch.ones_like(positive)
    out_of_range = 2.0 / temperature + math.log(5) > torch.finfo(dtype).max
    if out_of_range:  # the loss itself cannot be returned in dtype
        with pytest.raises(ValueError, match=f"temperature must be >= .* for a {dtype} loss"):
            F.multi_nt_xent(anchor, candidates, positive, temperature=temperature, form=form)
        return
    loss = F.multi_nt_xent(anchor, candidates, positive, temperature=temperature, form=form)
    loss.backward()
    exact_loss, exact_grads = _exact_gradients(
        [anchor, candidates],
        scale,
        lambda a, c: _plain_losses(
            _plain_logits(a, c, temperature, scale, dtype), positive, valid, form
        ).mean(),
    )
    floor = no_direction_norm(dtype, temperature)
    norm = lambda x: x.norm(dim=-1, keepdim=True).clamp_min(floor)  # noqa: E731
    bounds = [lambda x: 2.0 / (temperature * norm(x)), lambda x: 1.0 / (temperature * norm(x))]
    _check_against_exact(
        loss, [anchor, candidates], exact_loss, exact_grads, dtype, temperature, bounds
    )


@_with_examples
@given(extreme_inputs())
def test_label_form_at_extreme_scales_has_the_exact_gradient(case):
    dtype, scale, temperature, form, seed = case
    embeddings = _rounded((8, 6), scale, dtype, seed)
    labels = torch.arange(8) % 3
    valid = ~torch.eye(8, dtype=torch.bool)
    positive = (labels.unsqueeze(1) == labels.unsqueeze(0)) & valid
    if 2.0 / temperature + math.log(7) > torch.finfo(dtype).max:
        with pytest.raises(ValueError, match=f"temperature must be >= .* for a {dtype} loss"):
            F.multi_nt_xent_from_labels(embeddings, labels, temperature=temperature, form=form)
        return
    loss = F.multi_nt_xent_from_labels(embeddings, labels, temperature=temperature, form=form)
    loss.backward()
    exact_loss, exact_grads = _exact_gradients(
        [embeddings],
        scale,
        lambda e: _plain_losses(
            _plain_logits(e, e.expand(8, 8, 6), temperature, scale, dtype), positive, valid, form
        ).mean(),
    )
    # As an anchor (2 / (tau |x|)) and as a candidate of the others (at most 2 / (tau |x|) in all);
    # 0 below MIN_NORM.
    bound = lambda x: 4.0 / (  # noqa: E731
        temperature * x.norm(dim=-1, keepdim=True).clamp_min(no_direction_norm(dtype, temperature))
    )
    _check_against_exact(loss, [embeddings], exact_loss, exact_grads, dtype, temperature, [bound])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_in_input_dtype(dtype):
    anchor, candidates, positive_mask, _ = one_positive_problem(dtype=torch.float32)
    anchor, candidates = anchor.to(dtype), candidates.to(dtype)
    loss = F.multi_nt_xent(anchor, candidates, positive_mask, reduction="none")
    in_float32 = F.multi_nt_xent(
        anchor.float(), candidates.float(), positive_mask, reduction="none"
    )
    assert loss.dtype == dtype
    assert torch.equal(loss, in_float32.to(dtype))
    embeddings, labels = candidates.reshape(-1, candidates.shape[-1]), torch.arange(30) % 4
    loss = F.multi_nt_xent_from_labels(embeddings, labels, reduction="none")
    assert loss.dtype == dtype
    assert torch.equal(
        loss, F.multi_nt_xent_from_labels(embeddings.float(), labels, reduction="none").to(dtype)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_both_forms_are_computed_in_float32_under_autocast(dtype):
    """Autocast is switched off inside: matrix products too run in float32."""
    anchor, candidates, positive_mask, _ = one_positive_problem(dtype=torch.float32)
    anchor, candidates = anchor.to(dtype), candidates.to(dtype)
    embeddings, labels = candidates.reshape(-1, candidates.shape[-1]), torch.arange(30) % 4
    with torch.autocast("cpu", dtype=dtype):
        per_anchor = F.multi_nt_xent(anchor, candidates, positive_mask, reduction="none")
        label_form = F.multi_nt_xent_from_labels(embeddings, labels, reduction="none")
    expected = F.multi_nt_xent(anchor.float(), candidates.float(), positive_mask, reduction="none")
    assert torch.equal(per_anchor, expected.to(dtype))
    expected = F.multi_nt_xent_from_labels(embeddings.float(), labels, reduction="none")
    assert torch.equal(label_form, expected.to(dtype))


@pytest.mark.parametrize("form", FORMS)
def test_label_form_backward_inside_or_outside_autocast_gives_the_float32_gradient(form):
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(12, 6, generator=generator)
    layer = torch.nn.Linear(6, 8)
    labels = torch.arange(12) % 4
    results = []
    for backward_inside in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            embeddings = layer(inputs)
            embeddings.retain_grad()
            loss = F.multi_nt_xent_from_labels(embeddings, labels, form=form)
            if backward_inside:
                loss.backward()
        if not backward_inside:
            loss.backward()
        results.append(embeddings.grad)
    reference = embeddings.detach().float().requires_grad_(True)
    F.multi_nt_xent_from_labels(reference, labels, form=form).backward()
    for grad in results:
        assert grad.dtype == torch.bfloat16
        torch.testing.assert_close(grad, reference.grad.to(torch.bfloat16))


@st.composite
def poisoned_problems(draw, taking_part):
    """A problem and one entry (of the anchor or a candidate) that does or does not take part.

    An anchor takes part when it has a positive inside ``valid_mask``; a candidate when, in
    addition, it is inside ``valid_mask`` itself.
    """
    anchor, candidates, positive_mask, valid_mask = draw(problems())
    has_positive = (positive_mask & valid_mask).any(dim=1)
    cells = [("anchor", (b,)) for b in range(anchor.shape[0])]
    cells += [("candidates", (b, k)) for b, k in itertools.product(*map(range, valid_mask.shape))]
    wanted = [
        (name, cell)
        for name, cell in cells
        if taking_part == bool(has_positive[cell[0]] and (len(cell) == 1 or valid_mask[cell]))
    ]
    assume(wanted)
    name, cell = draw(st.sampled_from(wanted))
    index = (*cell, draw(st.integers(0, anchor.shape[1] - 1)))
    value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return (anchor, candidates, positive_mask, valid_mask), name, index, value


def _poisoned(problem, name, index, value):
    anchor, candidates, positive_mask, valid_mask = (t.clone() for t in problem)
    (anchor if name == "anchor" else candidates)[index] = value
    return anchor, candidates, positive_mask, valid_mask


@given(poisoned_problems(taking_part=True), st.sampled_from(FORMS))
def test_a_non_finite_value_taking_part_makes_the_loss_nan(case, form):
    problem, name, index, value = case
    anchor, candidates, positive_mask, valid_mask = _poisoned(problem, name, index, value)
    losses = F.multi_nt_xent(
        anchor, candidates, positive_mask, valid_mask=valid_mask, form=form, reduction="none"
    )
    assert bool(torch.isnan(losses[index[0]]))
    for reduction in ("mean", "sum"):
        options = {"valid_mask": valid_mask, "form": form, "reduction": reduction}
        loss = F.multi_nt_xent(anchor, candidates, positive_mask, **options)
        assert bool(torch.isnan(loss))


@given(poisoned_problems(taking_part=False), st.sampled_from(FORMS))
def test_a_non_finite_value_taking_no_part_changes_neither_loss_nor_gradients(case, form):
    problem, name, index, value = case

    def loss_and_grads(anchor, candidates, positive_mask, valid_mask):
        anchor, candidates = anchor.requires_grad_(True), candidates.requires_grad_(True)
        losses = F.multi_nt_xent(
            anchor, candidates, positive_mask, valid_mask=valid_mask, form=form, reduction="none"
        )
        return losses.detach(), *grads(losses, anchor, candidates)

    clean = loss_and_grads(*(t.clone() for t in problem))
    poisoned = loss_and_grads(*_poisoned(problem, name, index, value))
    for got, expected in zip(poisoned, clean):
        assert bool(torch.isfinite(got).all())
        assert torch.equal(got, expected)


@pytest.mark.parametrize("form", FORMS)
def test_label_form_zero_width_embeddings_are_zero_vectors_as_in_the_per_anchor_form(form):
    embeddings = torch.zeros(7, 0, dtype=f64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    loss, count = F.multi_nt_xent_from_labels(
        embeddings, labels, form=form, reduction="none", return_count=True
    )
    candidates, positive_mask = pairs_from_labels(embeddings.detach(), labels)
    expected = F.multi_nt_xent(
        embeddings.detach(), candidates, positive_mask, form=form, reduction="none"
    )
    torch.testing.assert_close(loss, expected)
    if form == "in":  # log((N - 1) / |P|), the value of zero vectors
        torch.testing.assert_close(loss[:5], torch.tensor([6.0, 6.0, 3.0, 3.0, 3.0]).log().double())
    assert count.item() == 5
    (grad,) = grads(loss, embeddings)
    assert grad.shape == (7, 0)


@given(problems(), st.sampled_from(FORMS))
def test_any_mask_pattern_gives_finite_values_and_gradients(problem, form):
    anchor, candidates, positive_mask, valid_mask = problem
    anchor.requires_grad_(True)
    candidates.requires_grad_(True)
    losses, count = F.multi_nt_xent(
        anchor,
        candidates,
        positive_mask,
        valid_mask=valid_mask,
        form=form,
        reduction="none",
        return_count=True,
    )
    has_positive = (positive_mask & valid_mask).any(dim=1)
    assert count.item() == int(has_positive.sum())
    assert bool((losses[~has_positive] == 0).all())
    assert bool(torch.isfinite(losses).all())
    for grad in grads(losses, anchor, candidates):
        assert bool(torch.isfinite(grad).all())


def test_candidates_outside_valid_mask_are_neither_positive_nor_negative():
    anchor, candidates, positive_mask, _ = one_positive_problem(seed=8)
    valid_mask = torch.ones_like(positive_mask)
    valid_mask[:, -2:] = False
    positive_mask[:, -1] = True  # a positive outside valid_mask is ignored too
    candidates.requires_grad_(True)
    loss = F.multi_nt_xent(anchor, candidates, positive_mask, valid_mask=valid_mask)
    kept = F.multi_nt_xent(
        anchor, candidates[:, :-2], positive_mask[:, :-2], valid_mask=valid_mask[:, :-2]
    )
    torch.testing.assert_close(loss, kept)
    (grad,) = grads(loss, candidates)
    assert bool((grad[:, -2:] == 0).all())


def test_positive_mask_outside_valid_mask_is_ignored():
    anchor, candidates, positive_mask, valid_mask = random_problem()
    for form in FORMS:
        loss = F.multi_nt_xent(
            anchor, candidates, positive_mask, valid_mask=valid_mask, form=form, reduction="none"
        )
        inside = F.multi_nt_xent(
            anchor,
            candidates,
            positive_mask & valid_mask,
            valid_mask=valid_mask,
            form=form,
            reduction="none",
        )
        assert torch.equal(loss, inside)


# ---------------------------------------------------------------------------------------------
# Anchors without positives, counts and reductions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_anchors_without_positive_are_left_out_of_the_mean(form):
    anchor, candidates, positive_mask, _ = one_positive_problem(seed=9)
    positive_mask[::2] = False  # anchors 0, 2, 4 have no positive
    loss, count = F.multi_nt_xent(anchor, candidates, positive_mask, form=form, return_count=True)
    with_positive = F.multi_nt_xent(anchor[1::2], candidates[1::2], positive_mask[1::2], form=form)
    assert count.item() == 3
    assert count.dtype == torch.long and count.dim() == 0
    torch.testing.assert_close(loss, with_positive)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_anchor_with_a_positive_gives_a_zero_connected_to_the_graph(form, reduction):
    anchor = torch.randn(3, 4, requires_grad=True)
    candidates = torch.randn(3, 2, 4, requires_grad=True)
    no_positive = torch.zeros(3, 2, dtype=torch.bool)
    loss, count = F.multi_nt_xent(
        anchor, candidates, no_positive, form=form, reduction=reduction, return_count=True
    )
    assert count.item() == 0
    assert loss.requires_grad
    assert bool((loss == 0).all())
    loss.sum().backward()
    assert bool((anchor.grad == 0).all() and (candidates.grad == 0).all())


@pytest.mark.parametrize("form", FORMS)
def test_label_form_without_any_positive_gives_a_zero_connected_to_the_graph(form):
    embeddings = torch.randn(4, 3, requires_grad=True)
    loss, count = F.multi_nt_xent_from_labels(
        embeddings, torch.arange(4), form=form, return_count=True
    )
    assert count.item() == 0 and loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert bool((embeddings.grad == 0).all())


@given(problems(), st.sampled_from(FORMS))
def test_reductions_are_consistent(problem, form):
    anchor, candidates, positive_mask, valid_mask = problem

    def loss(reduction):
        return F.multi_nt_xent(
            anchor,
            candidates,
            positive_mask,
            valid_mask=valid_mask,
            form=form,
            reduction=reduction,
            return_count=True,
        )

    (none, count), (total, _), (mean, _) = loss("none"), loss("sum"), loss("mean")
    assert none.shape == (anchor.shape[0],)
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.sum() / max(count.item(), 1))


@pytest.mark.parametrize("batch", [0, 1])
def test_empty_and_single_batches_work(batch):
    anchor, candidates = torch.randn(batch, 4), torch.randn(batch, 3, 4)
    positive_mask = torch.ones(batch, 3, dtype=torch.bool)
    loss, count = F.multi_nt_xent(anchor, candidates, positive_mask, return_count=True)
    assert count.item() == batch and torch.isfinite(loss)
    loss, count = F.multi_nt_xent_from_labels(
        anchor, torch.zeros(batch, dtype=torch.long), return_count=True
    )
    assert count.item() == 0 and loss.item() == 0


# ---------------------------------------------------------------------------------------------
# Label form
# ---------------------------------------------------------------------------------------------


# The label form shifts its exponentials by 1/tau when exp(-2/tau) cannot underflow (float64:
# tau >= 0.003, float32: tau >= 0.026) and by the row maximum otherwise: both are exercised.
@given(
    labelled_batches(),
    st.sampled_from(FORMS),
    st.sampled_from(REDUCTIONS),
    st.sampled_from([0.002, 0.3, 4.0]),
)
def test_label_form_equals_the_per_anchor_form_built_by_hand(batch, form, reduction, temperature):
    embeddings, labels = batch
    embeddings.requires_grad_(True)
    kwargs = dict(temperature=temperature, form=form, reduction=reduction, return_count=True)
    loss, count = F.multi_nt_xent_from_labels(embeddings, labels, **kwargs)
    if embeddings.shape[0] > 1:
        candidates, positive_mask = pairs_from_labels(embeddings, labels)
        expected, expected_count = F.multi_nt_xent(embeddings, candidates, positive_mask, **kwargs)
    else:  # a lone sample has no candidate at all
        expected, expected_count = torch.zeros_like(loss), torch.tensor(0)
    torch.testing.assert_close(loss, expected)
    assert count.item() == expected_count.item()
    if not expected.requires_grad:
        expected = embeddings.sum() * 0.0
    torch.testing.assert_close(grads(loss, embeddings)[0], grads(expected, embeddings)[0])


@pytest.mark.parametrize("temperature", [0.012, 0.05])  # row-maximum and constant shift
@pytest.mark.parametrize("form", FORMS)
def test_label_form_equals_the_per_anchor_form_in_float32(temperature, form):
    generator = torch.Generator().manual_seed(10)
    embeddings = torch.randn(48, 16, generator=generator, requires_grad=True)
    labels = torch.randint(0, 5, (48,), generator=generator)
    loss = F.multi_nt_xent_from_labels(embeddings, labels, temperature=temperature, form=form)
    candidates, positive_mask = pairs_from_labels(embeddings, labels)
    expected = F.multi_nt_xent(
        embeddings, candidates, positive_mask, temperature=temperature, form=form
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grads(loss, embeddings)[0], grads(expected, embeddings)[0])


def test_label_form_excludes_self_similarity():
    # With self included, a sample would be its own positive: a singleton would count.
    embeddings = torch.randn(5, 3, dtype=f64)
    labels = torch.tensor([0, 0, 1, 2, 3])
    losses, count = F.multi_nt_xent_from_labels(
        embeddings, labels, reduction="none", return_count=True
    )
    assert count.item() == 2
    # Anchor 0: its only candidate other than itself with label 0 is sample 1.
    reference = loop_reference(
        embeddings[[0]],
        embeddings[[1, 2, 3, 4]].unsqueeze(0),
        torch.tensor([[True, False, False, False]]),
        torch.ones(1, 4, dtype=torch.bool),
        0.5,
        "in",
    )[0]
    torch.testing.assert_close(losses[0], reference)


def test_label_form_accepts_any_integer_labels():
    embeddings = torch.randn(6, 4, dtype=f64)
    labels = torch.tensor([7, -2, 7, 1000, -2, 1000], dtype=torch.int32)
    dense = torch.tensor([0, 1, 0, 2, 1, 2])
    torch.testing.assert_close(
        F.multi_nt_xent_from_labels(embeddings, labels),
        F.multi_nt_xent_from_labels(embeddings, dense),
    )


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def peak_bytes(fn):
    with PeakMemory() as meter:
        fn()
    return meter.peak


def test_per_anchor_form_memory_grows_linearly_in_batch_times_candidates():
    def run(batch, k):
        anchor = torch.randn(batch, 16, requires_grad=True)
        candidates = torch.randn(batch, k, 16, requires_grad=True)
        mask = torch.zeros(batch, k, dtype=torch.bool)
        mask[:, 0] = True
        return peak_bytes(lambda: F.multi_nt_xent(anchor, candidates, mask).backward())

    base = run(256, 4)
    assert run(512, 4) / base == pytest.approx(2, rel=0.1)
    assert run(256, 8) / base == pytest.approx(2, rel=0.2)


@pytest.mark.parametrize("form", FORMS)
def test_label_form_memory_grows_quadratically_not_with_pairs_of_pairs(form):
    def run(n):
        embeddings = torch.randn(n, 8, requires_grad=True)
        labels = torch.arange(n) % 4
        return peak_bytes(
            lambda: F.multi_nt_xent_from_labels(embeddings, labels, form=form).backward()
        )

    small, large = run(128), run(256)
    assert large / small == pytest.approx(4, rel=0.15)
    assert large < 24 * 256**2  # a handful of [N, N] tensors, nothing per pair of pairs


# ---------------------------------------------------------------------------------------------
# Text-anchored pairs (Eq. 11-12)
# ---------------------------------------------------------------------------------------------


def features(batch=4, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, dim, generator=generator, dtype=f64) for name in FEATURES}


def test_text_anchored_pairs_follow_eq_11_and_12():
    given_features = features()
    pairs = mt.text_anchored_pairs(**given_features)
    assert isinstance(pairs, mt.ContrastivePairs)
    assert pairs.anchor is given_features["T_s"]
    assert pairs.candidate_names == ("V_s", "A_s", "T_d", "V_d", "A_d")
    positives = {n for n, p in zip(pairs.candidate_names, pairs.positive_mask[0]) if p}
    assert positives == {"V_s", "A_s"}  # Eq. 12; the rest are Eq. 11's negatives
    for k, name in enumerate(pairs.candidate_names):
        assert torch.equal(pairs.candidates[:, k], given_features[name])
    assert bool(pairs.positive_mask.eq(pairs.positive_mask[:1]).all())
    assert bool(pairs.valid_mask.all())


def test_text_anchored_pairs_loss_is_eq_3_over_those_pairs():
    f = features()
    pairs = mt.text_anchored_pairs(**f)
    loss = mt.MultiNTXentLoss(temperature=0.5)(*pairs[:3])
    cos = {n: torch.nn.functional.cosine_similarity(f["T_s"], f[n]) / 0.5 for n in FEATURES}
    numerator = cos["V_s"].exp() + cos["A_s"].exp()
    denominator = numerator + cos["T_d"].exp() + cos["V_d"].exp() + cos["A_d"].exp()
    torch.testing.assert_close(loss, -(numerator / denominator).log().mean())


@pytest.mark.parametrize(
    "present",
    [
        s
        for r in range(len(OPTIONAL_FEATURES) + 1)
        for s in itertools.combinations(OPTIONAL_FEATURES, r)
    ],
    ids=lambda s: "+".join(s) or "T_s-only",
)
def test_text_anchored_pairs_work_for_any_subset_of_modalities(present):
    f = {name: t.requires_grad_(True) for name, t in features().items()}
    pairs = mt.text_anchored_pairs(f["T_s"], **{name: f[name] for name in present})
    assert set(pairs.candidate_names) == set(present)
    assert pairs.candidates.shape == (4, len(present), 6)
    expected_positive = [name in ("V_s", "A_s") for name in pairs.candidate_names]
    assert pairs.positive_mask.tolist() == [expected_positive] * 4
    criterion = mt.MultiNTXentLoss()
    loss = criterion(pairs.anchor, pairs.candidates, pairs.positive_mask, pairs.valid_mask)
    assert criterion.anchors_used.item() == (4 if any(expected_positive) else 0)
    # A missing modality drops its pairs: the same as masking them out of the full set.
    full = mt.text_anchored_pairs(**f)
    present_mask = torch.tensor([name in present for name in full.candidate_names])
    masked = F.multi_nt_xent(
        full.anchor, full.candidates, full.positive_mask, valid_mask=present_mask.expand(4, 5)
    )
    torch.testing.assert_close(loss, masked)
    loss.backward()
    assert loss.requires_grad and bool(torch.isfinite(f["T_s"].grad).all())


def test_text_anchored_pairs_requires_the_text_anchor():
    f = features()
    del f["T_s"]
    with pytest.raises(ValueError, match="T_s.*anchor.*None"):
        mt.text_anchored_pairs(None, **f)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ({"V_s": torch.randn(5, 6)}, ValueError, r"V_s must have the shape of T_s \(4, 6\)"),
        ({"A_d": torch.randn(4, 7)}, ValueError, r"A_d must have the shape of T_s"),
        ({"T_d": torch.ones(4, 6, dtype=torch.long)}, TypeError, r"T_d must be a floating"),
        ({"A_s": [[0.0] * 6] * 4}, TypeError, r"A_s must be a torch.Tensor, got list"),
        ({"T_s": torch.randn(4, 6, 1)}, ValueError, r"T_s must have 2 dimensions"),
        ({"V_d": torch.randn(4, 6, device="meta")}, ValueError, r"V_d must be on the device"),
    ],
)
def test_text_anchored_pairs_rejects_bad_features(bad, error, match):
    f = {**features(), **bad}
    with pytest.raises(error, match=match):
        mt.text_anchored_pairs(**f)


# ---------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_equals_the_functional_form(form, reduction):
    anchor, candidates, positive_mask, valid_mask = random_problem()
    criterion = mt.MultiNTXentLoss(temperature=0.7, form=form, reduction=reduction)
    expected, count = F.multi_nt_xent(
        anchor,
        candidates,
        positive_mask,
        valid_mask=valid_mask,
        temperature=0.7,
        form=form,
        reduction=reduction,
        return_count=True,
    )
    torch.testing.assert_close(criterion(anchor, candidates, positive_mask, valid_mask), expected)
    assert criterion.anchors_used.item() == count.item()


def test_module_anchors_used_follows_each_call():
    criterion = mt.MultiNTXentLoss(form="out")
    embeddings = torch.randn(6, 4)
    criterion.from_labels(embeddings, torch.tensor([0, 0, 1, 1, 2, 3]))
    assert criterion.anchors_used.item() == 4
    criterion(embeddings, embeddings.unsqueeze(1), torch.zeros(6, 1, dtype=torch.bool))
    assert criterion.anchors_used.item() == 0
    assert "anchors_used" not in criterion.state_dict()
    assert "temperature=0.5, form='out', reduction='mean'" in repr(criterion)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

A, C, P = torch.randn(3, 4), torch.randn(3, 2, 4), torch.ones(3, 2, dtype=torch.bool)
E, Y = torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 2])


def per_anchor(anchor=A, candidates=C, positive_mask=P, **options):
    return lambda: F.multi_nt_xent(anchor, candidates, positive_mask, **options)


def from_labels(embeddings=E, labels=Y, **options):
    return lambda: F.multi_nt_xent_from_labels(embeddings, labels, **options)


BAD_INPUTS = {
    "anchor not a tensor": (
        per_anchor(anchor=A.tolist()),
        TypeError,
        r"anchor must be a torch\.Tensor, got list",
    ),
    "anchor integer": (
        per_anchor(anchor=A.long()),
        TypeError,
        r"anchor must be a floating-point tensor, got dtype torch\.int64",
    ),
    "anchor rank": (
        per_anchor(anchor=A[0]),
        ValueError,
        r"anchor must have 2 dimensions \[B, D\], got shape \(4,\)",
    ),
    "candidates rank": (
        per_anchor(candidates=C[:, 0]),
        ValueError,
        r"candidates must have 3 dimensions \[B, K, D\], got shape \(3, 4\)",
    ),
    "batch mismatch": (
        per_anchor(candidates=C[:2]),
        ValueError,
        r"candidates must have the batch size B of anchor \(3\) in dimension 0, "
        r"got shape \(2, 2, 4\)",
    ),
    "dim mismatch": (
        per_anchor(candidates=C[..., :3]),
        ValueError,
        r"candidates must have the embedding size D of anchor \(4\) in dimension 2",
    ),
    "positive_mask not bool": (
        per_anchor(positive_mask=P.float()),
        TypeError,
        r"positive_mask must be a bool tensor, got dtype torch\.float32",
    ),
    "positive_mask shape": (
        per_anchor(positive_mask=P[:, :1]),
        ValueError,
        r"positive_mask must have the number of candidates K \(2\) in dimension 1, "
        r"got shape \(3, 1\)",
    ),
    "positive_mask batch": (
        per_anchor(positive_mask=P[:1]),
        ValueError,
        r"positive_mask must have the batch size B of anchor \(3\)",
    ),
    "positive_mask rank": (
        per_anchor(positive_mask=P[0]),
        ValueError,
        r"positive_mask must have 2 dimensions \[B, K\]",
    ),
    "valid_mask not bool": (
        per_anchor(valid_mask=P.long()),
        TypeError,
        r"valid_mask must be a bool tensor, got dtype torch\.int64",
    ),
    "valid_mask shape": (
        per_anchor(valid_mask=P.T),
        ValueError,
        r"valid_mask must have the batch size B of anchor \(3\) in dimension 0, got shape \(2, 3\)",
    ),
    "devices differ": (
        per_anchor(candidates=C.to("meta")),
        ValueError,
        r"same device, got anchor on cpu, candidates on meta",
    ),
    "temperature zero": (
        per_anchor(temperature=0.0),
        ValueError,
        r"temperature must be a finite number > 0, got 0\.0",
    ),
    "temperature negative": (
        per_anchor(temperature=-1.0),
        ValueError,
        r"temperature must be a finite number > 0, got -1\.0",
    ),
    "temperature nan": (
        per_anchor(temperature=float("nan")),
        ValueError,
        r"temperature must be a finite number > 0, got nan",
    ),
    "temperature inf": (
        per_anchor(temperature=float("inf")),
        ValueError,
        r"temperature must be a finite number > 0, got inf",
    ),
    "temperature string": (
        per_anchor(temperature="0.5"),
        TypeError,
        r"temperature must be a real number, got str",
    ),
    "temperature overflows": (
        per_anchor(temperature=1e-300),
        ValueError,
        r"temperature must be >= .* \(1 / temperature overflows\), got 1e-300",
    ),
    "unknown form": (
        per_anchor(form="mid"),
        ValueError,
        r"form must be one of 'in' \| 'out', got 'mid'",
    ),
    "unknown reduction": (
        per_anchor(reduction="avg"),
        ValueError,
        r"reduction must be one of 'mean' \| 'sum' \| 'none', got 'avg'",
    ),
    "return_count not bool": (
        per_anchor(return_count=1),
        TypeError,
        r"return_count must be a bool, got int",
    ),
    "embeddings rank": (
        from_labels(embeddings=E[0]),
        ValueError,
        r"embeddings must have 2 dimensions \[N, D\], got shape \(4,\)",
    ),
    "embeddings integer": (
        from_labels(embeddings=E.int()),
        TypeError,
        r"embeddings must be a floating-point tensor",
    ),
    "labels float": (
        from_labels(labels=Y.float()),
        TypeError,
        r"labels must be an integer tensor, got dtype torch\.float32",
    ),
    "labels bool": (
        from_labels(labels=Y.bool()),
        TypeError,
        r"labels must be an integer tensor, got dtype torch\.bool",
    ),
    "labels not a tensor": (
        from_labels(labels=Y.tolist()),
        TypeError,
        r"labels must be a torch\.Tensor, got list",
    ),
    "labels length": (
        from_labels(labels=Y[:4]),
        ValueError,
        r"labels must have the batch size N of embeddings \(5\) in dimension 0, got shape \(4,\)",
    ),
    "labels rank": (
        from_labels(labels=Y.unsqueeze(1)),
        ValueError,
        r"labels must have 1 dimensions \[N\], got shape \(5, 1\)",
    ),
    "labels temperature": (
        from_labels(temperature=-0.1),
        ValueError,
        r"temperature must be a finite number > 0, got -0\.1",
    ),
    "labels form": (
        from_labels(form="IN"),
        ValueError,
        r"form must be one of 'in' \| 'out', got 'IN'",
    ),
    "labels reduction": (
        from_labels(reduction=None),
        ValueError,
        r"reduction must be one of .*, got None",
    ),
    "module temperature": (
        lambda: mt.MultiNTXentLoss(temperature=0),
        ValueError,
        r"temperature must be a finite number > 0, got 0",
    ),
    "module form": (
        lambda: mt.MultiNTXentLoss(form="inside"),
        ValueError,
        r"form must be one of 'in' \| 'out', got 'inside'",
    ),
    "module reduction": (
        lambda: mt.MultiNTXentLoss(reduction="max"),
        ValueError,
        r"reduction must be one of .*, got 'max'",
    ),
}


@pytest.mark.parametrize(("call", "error", "match"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_an_error_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("names", [
    ("T_s",), ("T_s", "T_d"), ("T_s", "A_s"), ("T_s", "V_s", "V_d"), ("A_s", "V_s"),
    ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d"), ("T_s", "A_d", "V_d"),
])
def test_has_text_anchored_pair_agrees_with_the_pairs_it_would_build(names) -> None:
    features = {name: torch.randn(2, 4) for name in names}
    if "T_s" not in features:
        assert not mt.has_text_anchored_pair(names)
        return
    pairs = mt.text_anchored_pairs(**features)
    assert mt.has_text_anchored_pair(names) == bool(pairs.positive_mask.any())


# ---------------------------------------------------------------------------------------------
# Zero and vanishing vectors carry no direction: finite, bounded (zero) gradient in every loss
# ---------------------------------------------------------------------------------------------

DEGENERATE_SCALES = [0.0, 1e-45, 1e-40, 1e-20, 1e-7, 0.99e-6, "just below"]


def _degenerate_scale(scale, dtype, temperature=0.5):
    """A scale from DEGENERATE_SCALES; "just below": 0.99 of the dtype's no-direction norm."""
    return 0.99 * no_direction_norm(dtype, temperature) if scale == "just below" else scale


def _with_degenerate_rows(shape, scale, dtype, rows, seed=0):
    """Random unit-scale vectors in ``dtype`` whose ``rows`` (first index) are at ``scale``."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)
    x = x / x.norm(dim=-1, keepdim=True)
    x[rows] = x[rows] * scale
    return x.to(dtype).requires_grad_(True)


def _no_direction_reference(x, temperature=0.5):
    """The same vectors with every one without direction replaced by an exact zero (float64)."""
    floor = no_direction_norm(x.dtype, temperature)
    x = x.detach().double()
    return torch.where(x.norm(dim=-1, keepdim=True) < floor, 0.0, x)


@pytest.mark.parametrize("scale", DEGENERATE_SCALES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, f64])
@pytest.mark.parametrize("form", FORMS)
def test_per_anchor_form_gives_vanishing_vectors_no_direction_and_zero_gradient(
    scale, dtype, form
):
    """A dead ReLU (exact zero) or a vanishing row: cosine 0, gradient exactly 0, the others'
    gradients finite and bounded by 2 / (tau * MIN_NORM); the loss is that of zero vectors."""
    scale = _degenerate_scale(scale, dtype)
    anchor = _with_degenerate_rows((4, 5), scale, dtype, [0, 2])
    candidates = _with_degenerate_rows((4, 3, 5), scale, dtype, [1], seed=1)
    positive = torch.tensor([True, False, False]).expand(4, 3)
    loss = F.multi_nt_xent(anchor, candidates, positive, temperature=0.5, form=form)
    loss.backward()
    assert torch.isfinite(loss)
    assert bool((anchor.grad[[0, 2]] == 0).all() and (candidates.grad[1] == 0).all())
    bound = 2.0 / (0.5 * no_direction_norm(dtype, 0.5))
    for grad in (anchor.grad, candidates.grad):
        assert bool(torch.isfinite(grad).all()) and grad.abs().max() <= bound
    expected = F.multi_nt_xent(
        _no_direction_reference(anchor), _no_direction_reference(candidates), positive, form=form
    )
    tolerance = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
    torch.testing.assert_close(loss.double(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("scale", DEGENERATE_SCALES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, f64])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("create_graph", [False, True])
def test_label_form_gives_vanishing_vectors_no_direction_and_zero_gradient(
    scale, dtype, form, create_graph
):
    embeddings = _with_degenerate_rows((6, 5), _degenerate_scale(scale, dtype), dtype, [0, 3])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = F.multi_nt_xent_from_labels(embeddings, labels, form=form)
    (grad,) = torch.autograd.grad(loss, embeddings, create_graph=create_graph)
    assert torch.isfinite(loss)
    assert bool((grad[[0, 3]] == 0).all() and torch.isfinite(grad).all())
    assert grad.abs().max() <= 4.0 / (0.5 * no_direction_norm(dtype, 0.5))
    expected = F.multi_nt_xent_from_labels(_no_direction_reference(embeddings), labels, form=form)
    tolerance = 1e-2 if dtype == torch.float16 else 1e-6
    torch.testing.assert_close(loss.double(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("scale", [0.0, 1e-40])
def test_objective_terms_give_a_dead_feature_a_zero_gradient(scale):
    """Every loss built on the cosine (the module, cl_loss with label-aware positives, and the
    whole DMMSA objective): a dead T_s row gets no gradient, and nothing is non-finite."""
    features = {
        name: _with_degenerate_rows((4, 6), scale, torch.float32, [0], seed=i)
        for i, name in enumerate(FEATURES)
    }
    outputs = {"prediction": torch.zeros(4, requires_grad=True), "features": features}
    targets = {"M": torch.tensor([-0.9, -0.8, 0.7, 0.9])}
    binning = mt.CoarseGrainedBinning.preset("sims", 3)
    loss = mt.cl_loss(outputs, targets, label_binning=binning)
    loss = loss + mt.MultiNTXentLoss()(features["T_s"], torch.stack(
        [features["A_s"], features["V_s"]], dim=1), torch.ones(4, 2, dtype=torch.bool))
    loss.backward()
    for name, x in features.items():
        assert bool(torch.isfinite(x.grad).all()), name
        assert bool((x.grad[0] == 0).all()), name
