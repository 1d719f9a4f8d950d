"""Properties of the composable DMMSA objective: public terms, pair builders and the CL options.

Every option is off by default and the default objective is pinned bit for bit to the numbers
of the objective before the options existed; each option is checked against a plain-loop
reference (values and gradients).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt

NAMES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
SIMS3 = mt.CoarseGrainedBinning.preset("sims", 3)


def make_batch(seed: int, batch: int = 5, dim: int = 6, names=NAMES, dtype=torch.float64,
               requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)

    outputs = {
        "prediction": rand(batch),
        "logits": rand(batch, 3),
        "features": {n: rand(batch, dim) for n in NAMES},
        "unimodal": {n: rand(batch) for n in NAMES},
    }
    outputs["features"] = {n: f for n, f in outputs["features"].items() if n in names}
    targets = {"M": torch.rand(batch, generator=g, dtype=dtype) * 2 - 1}
    return outputs, targets


def run(objective: mt.MultiTaskObjective, stages: int = 3, per_stage: int = 2):
    """Losses of ``stages`` stages of ``per_stage`` batches, then one more batch."""
    results = []
    for stage in range(stages):
        for s in range(per_stage):
            results.append(objective(*make_batch(10 * stage + s)))
        objective.step()
    results.append(objective(*make_batch(99)))
    return results


# ---------------------------------------------- the default objective, pinned from before 0.2
# (loss, MSR, MSC, Uni, CL) of `run(dmmsa())`, float64, computed with the objective as it was
# before the options were added (commit 773df49); `.hex()` so that equality is exact.
PINNED = [
    ("0x1.dc51c8f1aceeep+1", "0x1.2f570cfae36cdp+0", "0x1.ad83196f10ce6p+0",
     "0x1.2bce1e145ab45p-1", "0x1.21abc7e89deaep+0"),
    ("0x1.d41b72cd8f201p+0", "0x1.e0096c7459a98p-4", "0x1.f8bd5a8896e6bp-1",
     "0x1.0e9710124dd9ap-1", "0x1.d859aaf5aa6eep-1"),
    ("0x1.95c1809ac03c6p+1", "0x1.1864d575e3f8bp-2", "0x1.1043f4d30bcbap+1",
     "0x1.2622ede0342cbp-1", "0x1.ed649ae78b60ap-1"),
    ("0x1.60a3e7acddad0p+1", "0x1.05f3647a1c281p-1", "0x1.63818fe6be798p+0",
     "0x1.e3491351a9d9fp-2", "0x1.3cc6d59773229p+0"),
    ("0x1.9d45da375fcd5p+1", "0x1.a2d7172df87e0p-1", "0x1.a4193ae654520p+0",
     "0x1.fe86dc91137b3p-2", "0x1.05fb7933f6a2bp+0"),
    ("0x1.765a20eafb93cp+1", "0x1.40eff9fd58cdbp-2", "0x1.ba5c94213e203p+0",
     "0x1.ddc79c0bf8619p-2", "0x1.45f25cf0aa699p+0"),
]
PINNED_FINAL = "0x1.0c9afbbc0528fp+1"
PINNED_FLOAT32 = "0x1.68b9360000000p+1"  # one float32 batch (seed 7), stage 1


def assert_bitwise_equal_runs(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.loss.item().hex() == y.loss.item().hex()
        assert {k: v.item().hex() for k, v in x.terms.items()} == {
            k: v.item().hex() for k, v in y.terms.items()
        }
        assert {k: v.item() for k, v in x.weights.items()} == {
            k: v.item() for k, v in y.weights.items()
        }


def test_default_objective_is_bit_identical_to_the_pinned_numbers():
    results = run(mt.MultiTaskObjective.dmmsa(binning=SIMS3))
    for result, pinned in zip(results, PINNED):
        terms = [result.terms[k].item().hex() for k in ("MSR", "MSC", "Uni", "CL")]
        assert (result.loss.item().hex(), *terms) == pinned
    assert results[-1].loss.item().hex() == PINNED_FINAL
    outputs, targets = make_batch(7, dtype=torch.float32)
    loss = mt.MultiTaskObjective.dmmsa(binning=SIMS3)(outputs, targets).loss
    assert loss.item().hex() == PINNED_FLOAT32


def hand_assembled_dmmsa() -> mt.MultiTaskObjective:
    """Eq. 5 from the public terms, as a user would build it."""
    return mt.MultiTaskObjective(
        {
            "MSR": mt.msr_loss,
            "MSC": functools.partial(mt.msc_loss, binning=SIMS3),
            "Uni": mt.uni_loss,
            "CL": functools.partial(mt.cl_loss, contrastive=mt.MultiNTXentLoss()),
        },
        fixed={"MSR": 1.0, "MSC": 1.0},
        dynamic=["Uni", "CL"],
        check_batch=mt.check_dmmsa_batch,
    )


@pytest.mark.parametrize(
    "build",
    [
        hand_assembled_dmmsa,
        lambda: mt.MultiTaskObjective.dmmsa(
            binning=SIMS3, weighting=mt.GDWGWeighter(2, task_names=["Uni", "CL"])
        ),
        lambda: mt.MultiTaskObjective.dmmsa(
            binning=SIMS3, pairs=mt.text_anchored_pairs, detach_anchor=False,
            label_positives=False, schedules={},
        ),
        lambda: mt.MultiTaskObjective.dmmsa(  # a schedule whose factor is always 1
            binning=SIMS3, schedules={"CL": mt.WarmupSchedule(0), "MSR": lambda t: 1.0}
        ),
    ],
    ids=["public-terms", "weighter-instance", "explicit-defaults", "schedules-of-one"],
)
def test_the_same_objective_built_another_way_is_bit_identical(build):
    assert_bitwise_equal_runs(run(build()), run(mt.MultiTaskObjective.dmmsa(binning=SIMS3)))


def test_default_state_dict_has_the_same_keys_as_before():
    # the options add no state; ``_extra_state`` holds the weighter's settings (checked on load),
    # and states saved before it existed still load
    keys = set(mt.MultiTaskObjective.dmmsa(binning=SIMS3).state_dict())
    assert keys == {
        "weighter.completed_stages", "weighter.stage_loss_sum", "weighter.stage_loss_count",
        "weighter.task_weights", "weighter.baseline", "weighter._extra_state",
    }


def test_the_batch_check_is_a_public_argument():
    objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3)
    assert isinstance(objective.check_batch, functools.partial)
    assert objective.check_batch.func is mt.check_dmmsa_batch
    outputs, targets = make_batch(0)
    targets["M"][1] = math.nan
    with pytest.raises(ValueError, match=r"targets\['M'\] must be finite"):
        hand_assembled_dmmsa()(outputs, targets)


def test_check_batch_must_be_callable():
    with pytest.raises(TypeError, match="check_batch"):
        mt.MultiTaskObjective({"MSR": mt.msr_loss}, check_batch=1)


# --------------------------------------------------------------------------- references
def cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def nt_xent(anchor: list[float], positives: list, negatives: list, tau: float, form: str):
    """Eq. 3 (form "in") or SupCon's L_out for one anchor, with plain floats."""
    pos = [math.exp(cosine(anchor, p) / tau) for p in positives]
    denominator = sum(pos) + sum(math.exp(cosine(anchor, n) / tau) for n in negatives)
    if form == "in":
        return -math.log(sum(pos) / denominator)
    return -sum(math.log(p / denominator) for p in pos) / len(pos)


def text_anchored_reference(features: dict, tau: float, form: str) -> float | None:
    positives = [n for n in ("V_s", "A_s") if n in features]
    negatives = [n for n in ("T_d", "V_d", "A_d") if n in features]
    if "T_s" not in features or not positives:
        return None
    rows = {n: f.tolist() for n, f in features.items()}
    losses = [
        nt_xent(anchor, [rows[n][b] for n in positives], [rows[n][b] for n in negatives], tau,
                form)
        for b, anchor in enumerate(rows["T_s"])
    ]
    return sum(losses) / len(losses)


def label_reference(t_s: torch.Tensor, classes: list[int], tau: float, form: str) -> float:
    """Inter-sample term: positives are the other samples of the same class."""
    rows, losses = t_s.tolist(), []
    for i, anchor in enumerate(rows):
        positives = [rows[j] for j in range(len(rows)) if j != i and classes[j] == classes[i]]
        negatives = [rows[j] for j in range(len(rows)) if classes[j] != classes[i]]
        if positives:
            losses.append(nt_xent(anchor, positives, negatives, tau, form))
    return sum(losses) / len(losses) if losses else 0.0


def sims3_class(y: float) -> int:
    """Table 7, CH-SIMS 3 classes: [-1, -0.1], (-0.1, 0.1], (0.1, 1]."""
    return 0 if y <= -0.1 else (1 if y <= 0.1 else 2)


# ------------------------------------------------------------------------------ pair builders
def test_a_custom_pair_builder_gives_the_pairs_of_cl():
    seen = {}

    def vision_only(**features):
        seen.update(features)
        return mt.text_anchored_pairs(T_s=features["T_s"], V_s=features["V_s"],
                                      V_d=features["V_d"])

    outputs, targets = make_batch(3)
    result = mt.MultiTaskObjective.dmmsa(binning=SIMS3, pairs=vision_only)(outputs, targets)
    assert set(seen) == set(NAMES)
    expected = text_anchored_reference(
        {n: outputs["features"][n] for n in ("T_s", "V_s", "V_d")}, 0.5, "in"
    )
    assert result.terms["CL"].item() == pytest.approx(expected, rel=1e-12)


def test_the_builder_gets_only_the_present_features_and_none_makes_cl_absent():
    calls = []

    def builder(**features):
        calls.append(sorted(features))
        return None

    outputs, targets = make_batch(0, names=("T_s", "T_d", "A_s"))
    result = mt.MultiTaskObjective.dmmsa(binning=SIMS3, pairs=builder)(outputs, targets)
    assert calls == [["A_s", "T_d", "T_s"]]
    assert "CL" not in result.terms


def test_the_builder_is_not_called_without_anchor_or_positive():
    def builder(**features):
        raise AssertionError("called")

    for names in (("T_d", "A_s", "V_s"), ("T_s", "T_d", "A_d")):
        outputs, targets = make_batch(0, names=names)
        objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3, pairs=builder)
        assert "CL" not in objective(outputs, targets).terms


def test_pairs_must_be_callable():
    with pytest.raises(TypeError, match="pairs must be a callable pair builder"):
        mt.MultiTaskObjective.dmmsa(binning=SIMS3, pairs="text")


# ------------------------------------------------------------------- stop-gradient on anchor
SUBSETS = st.sets(st.sampled_from(("T_d", "A_s", "A_d", "V_s", "V_d"))).filter(
    lambda s: bool(s & {"A_s", "V_s"})
)


def cl_gradients(outputs, targets, **options) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = mt.cl_loss(outputs, targets, **options)
    features = outputs["features"]
    grads = torch.autograd.grad(loss, list(features.values()), allow_unused=True)
    return loss, {
        n: torch.zeros_like(f) if g is None else g for (n, f), g in zip(features.items(), grads)
    }


@given(seed=st.integers(0, 2**16), batch=st.integers(1, 6), others=SUBSETS,
       form=st.sampled_from(["in", "out"]))
def test_detached_anchor_has_no_gradient_and_the_others_are_unchanged(seed, batch, others,
                                                                      form):
    names = ("T_s", *sorted(others))
    outputs, targets = make_batch(seed, batch, names=names, requires_grad=True)
    contrastive = mt.MultiNTXentLoss(form=form)
    plain_loss, plain = cl_gradients(outputs, targets, contrastive=contrastive)
    loss, detached = cl_gradients(outputs, targets, contrastive=contrastive, detach_anchor=True)
    assert torch.equal(loss, plain_loss)  # sg() changes no value
    assert torch.count_nonzero(detached["T_s"]) == 0
    if others & {"T_d", "A_d", "V_d"}:  # without a negative the loss is 0 whatever T_s is
        assert plain["T_s"].abs().sum() > 0
    for name in others:
        assert torch.equal(detached[name], plain[name]), name


def test_detach_anchor_reaches_the_dmmsa_objective():
    outputs, targets = make_batch(1, requires_grad=True)
    result = mt.MultiTaskObjective.dmmsa(binning=SIMS3, detach_anchor=True)(outputs, targets)
    result.loss.backward()
    assert outputs["features"]["T_s"].grad is None  # only CL reads the features
    assert outputs["features"]["A_s"].grad.abs().sum() > 0


# -------------------------------------------------------------------- label-aware positives
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 8), others=st.sets(st.sampled_from(
    ("T_d", "A_s", "A_d", "V_s", "V_d"))), form=st.sampled_from(["in", "out"]),
    tau=st.sampled_from([0.1, 0.5, 2.0]))
def test_label_positives_add_the_inter_sample_term_of_a_plain_loop(seed, batch, others, form,
                                                                   tau):
    outputs, targets = make_batch(seed, batch, names=("T_s", *sorted(others)))
    objective = mt.MultiTaskObjective.dmmsa(
        binning=SIMS3, label_positives=True, temperature=tau, form=form
    )
    result = objective(outputs, targets)
    classes = [sims3_class(y) for y in targets["M"].tolist()]
    pairs = text_anchored_reference(outputs["features"], tau, form)
    expected = (pairs or 0.0) + label_reference(outputs["features"]["T_s"], classes, tau, form)
    assert result.terms["CL"].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def torch_reference_cl(features: dict, classes: list[int], tau: float) -> torch.Tensor:
    """L_pairs + L_labels (form "in") written with plain loops over differentiable tensors."""

    def cos(u, v):
        return (u @ v) / (u.norm() * v.norm())

    def term(anchor, positives, negatives):
        pos = sum(torch.exp(cos(anchor, p) / tau) for p in positives)
        neg = sum((torch.exp(cos(anchor, n) / tau) for n in negatives), torch.zeros(()))
        return -torch.log(pos / (pos + neg))

    t_s, batch = features["T_s"], features["T_s"].shape[0]
    pair_terms = [
        term(t_s[b], [features[n][b] for n in ("V_s", "A_s")],
             [features[n][b] for n in ("T_d", "V_d", "A_d")])
        for b in range(batch)
    ]
    label_terms = []
    for i in range(batch):
        positives = [t_s[j] for j in range(batch) if j != i and classes[j] == classes[i]]
        negatives = [t_s[j] for j in range(batch) if classes[j] != classes[i]]
        if positives:
            label_terms.append(term(t_s[i], positives, negatives))
    return sum(pair_terms) / batch + sum(label_terms) / max(len(label_terms), 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_positives_gradient_matches_the_plain_loop(seed):
    outputs, targets = make_batch(seed, batch=7, requires_grad=True)
    classes = [sims3_class(y) for y in targets["M"].tolist()]
    features = outputs["features"]
    loss = mt.cl_loss(outputs, targets, label_binning=SIMS3)
    reference = torch_reference_cl(features, classes, 0.5)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(loss, list(features.values()))
    expected = torch.autograd.grad(reference, list(features.values()))
    for name, g, e in zip(features, grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=name)


def test_label_positives_give_a_contrastive_term_on_text_only_data():
    outputs, targets = make_batch(4, batch=8, names=("T_s", "T_d"))
    targets["M"] = torch.tensor([-0.9, -0.5, 0.0, 0.05, 0.5, 0.9, -0.3, 0.3], dtype=torch.float64)
    plain = mt.MultiTaskObjective.dmmsa(binning=SIMS3)(outputs, targets)
    labelled = mt.MultiTaskObjective.dmmsa(binning=SIMS3, label_positives=True)(outputs, targets)
    assert "CL" not in plain.terms
    classes = [sims3_class(y) for y in targets["M"].tolist()]
    expected = label_reference(outputs["features"]["T_s"], classes, 0.5, "in")
    assert labelled.terms["CL"].item() == pytest.approx(expected, rel=1e-12)


def test_label_positives_ignore_detach_anchor():
    outputs, targets = make_batch(5, requires_grad=True, names=("T_s", "T_d"))
    loss = mt.cl_loss(outputs, targets, label_binning=SIMS3, detach_anchor=True)
    (grad,) = torch.autograd.grad(loss, [outputs["features"]["T_s"]])
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"binning": None, "msc": False, "label_positives": True}, TypeError,
         "binning must be a CoarseGrainedBinning when label_positives=True"),
        ({"binning": SIMS3, "label_positives": 1}, TypeError, "label_positives must be a bool"),
        ({"binning": SIMS3, "detach_anchor": "yes"}, TypeError, "detach_anchor must be a bool"),
        ({"binning": SIMS3, "weighting": mt.GDWGWeighter(3)}, ValueError, "num_tasks=3"),
        ({"binning": SIMS3, "cl": False, "weighting": mt.EqualWeighter(2)}, ValueError,
         r"weight the 1 dynamic task\(s\) \['Uni'\]"),
    ],
)
def test_bad_option_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        mt.MultiTaskObjective.dmmsa(**kwargs)
