"""Properties of the multi-task objective and of the DMMSA preset (Eq. 5)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from host_reads import HostReads
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mtobjectives as mt
from mtobjectives.heads import DecompositionHead

NAMES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
SIMS3 = mt.CoarseGrainedBinning.preset("sims", 3)


def make_batch(
    batch: int = 4,
    dim: int = 6,
    seed: int = 0,
    names=NAMES,
    unimodal_labels: str = "",
    dtype: torch.dtype = torch.float64,
    requires_grad: bool = False,
):
    """Random DMMSA outputs for the features ``names``; targets ``M`` and ``unimodal_labels``."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)

    outputs = {
        "prediction": rand(batch),
        "logits": rand(batch, 3),
        "features": {name: rand(batch, dim) for name in names},
        "unimodal": {name: rand(batch) for name in names},
    }
    targets = {"M": torch.rand(batch, generator=g, dtype=dtype) * 2 - 1}
    for modality in unimodal_labels:
        targets[modality] = torch.rand(batch, generator=g, dtype=dtype) * 2 - 1
    return outputs, targets


# ------------------------------------------------------------- independent reference of Eq. 5
def smooth_l1(prediction: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> float:
    values = []
    for p, t in zip(prediction.tolist(), target.tolist()):
        x = abs(p - t)
        values.append(0.5 * x * x / beta if x < beta else x - 0.5 * beta)
    return sum(values) / len(values)


def sims3_class(y: float) -> int:
    """Table 7, CH-SIMS 3 classes: [-1, -0.1], (-0.1, 0.1], (0.1, 1]."""
    return 0 if y <= -0.1 else (1 if y <= 0.1 else 2)


def cross_entropy(logits: torch.Tensor, classes: list[int]) -> float:
    values = []
    for row, c in zip(logits.tolist(), classes):
        values.append(math.log(sum(math.exp(v) for v in row)) - row[c])
    return sum(values) / len(values)


def cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def text_anchored_nt_xent(features: dict, temperature: float = 0.5) -> float | None:
    """Eq. 3 (form "in") with anchor T_s, positives V_s/A_s, negatives T_d/V_d/A_d, as a loop."""
    positives = [features[n].tolist() for n in ("V_s", "A_s") if n in features]
    negatives = [features[n].tolist() for n in ("T_d", "V_d", "A_d") if n in features]
    if "T_s" not in features or not positives:
        return None
    losses = []
    for b, anchor in enumerate(features["T_s"].tolist()):
        pos = sum(math.exp(cosine(anchor, p[b]) / temperature) for p in positives)
        neg = sum(math.exp(cosine(anchor, n[b]) / temperature) for n in negatives)
        losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


def reference_terms(outputs: dict, targets: dict) -> dict[str, float]:
    y = targets["M"]
    terms = {
        "MSR": smooth_l1(outputs["prediction"], y),
        "MSC": cross_entropy(outputs["logits"], [sims3_class(v) for v in y.tolist()]),
    }
    uni = [
        smooth_l1(u, targets.get(name[0], y) if name.endswith("_d") else y)
        for name, u in outputs["unimodal"].items()
    ]
    if uni:
        terms["Uni"] = sum(uni) / len(uni)
    cl = text_anchored_nt_xent(outputs["features"])
    if cl is not None:
        terms["CL"] = cl
    return terms


def reference_eq5(terms: dict[str, float], lambda_uni: float, lambda_cl: float) -> float:
    return (
        terms["MSR"]
        + terms["MSC"]
        + lambda_uni * terms.get("Uni", 0.0)
        + lambda_cl * terms.get("CL", 0.0)
    )


def dmmsa(**kwargs) -> mt.MultiTaskObjective:
    return mt.MultiTaskObjective.dmmsa(binning=SIMS3, **kwargs)


def assert_result_is_weighted_sum(result: mt.ObjectiveResult) -> None:
    total = sum(result.weights[k].double() * result.terms[k].double() for k in result.terms)
    torch.testing.assert_close(result.loss.detach().double(), total)


# --------------------------------------------------------------------------------- Eq. 5
@given(
    batch=st.integers(1, 6),
    dim=st.integers(2, 8),
    seed=st.integers(0, 2**16),
    names=st.sets(st.sampled_from(NAMES)),
    labels=st.sampled_from(["", "TAV", "T"]),
)
def test_total_equals_hand_assembled_eq_5(batch, dim, seed, names, labels):
    names = tuple(n for n in NAMES if n in names)
    outputs, targets = make_batch(batch, dim, seed, names, unimodal_labels=labels)
    result = dmmsa()(outputs, targets)
    expected = reference_terms(outputs, targets)
    assert set(result.terms) == set(expected)
    for name, value in expected.items():
        assert result.terms[name].item() == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert result.loss.item() == pytest.approx(reference_eq5(expected, 0.5, 0.5), rel=1e-9)


def test_later_stages_use_the_gdwg_weights():
    objective = dmmsa()
    for seed in range(3):  # three stages of two batches each
        for batch_seed in (2 * seed, 2 * seed + 1):
            objective(*make_batch(seed=batch_seed))
        objective.step()
    outputs, targets = make_batch(seed=100)
    result = objective(outputs, targets)
    lambda_uni, lambda_cl = objective.weighter.weights.tolist()
    assert lambda_uni != pytest.approx(0.5)
    assert result.weights["Uni"].item() == pytest.approx(lambda_uni)
    expected = reference_eq5(reference_terms(outputs, targets), lambda_uni, lambda_cl)
    assert result.loss.item() == pytest.approx(expected, rel=1e-6)


def test_msr_and_msc_keep_weight_one():
    result = dmmsa()(*make_batch())
    assert result.weights["MSR"].item() == 1.0 and result.weights["MSC"].item() == 1.0


@given(seed=st.integers(0, 2**16), names=st.sets(st.sampled_from(NAMES)))
def test_loss_is_the_sum_of_weights_times_terms(seed, names):
    names = tuple(n for n in NAMES if n in names)
    assert_result_is_weighted_sum(dmmsa()(*make_batch(seed=seed, names=names)))


def test_terms_and_weights_are_detached_and_the_gradient_reaches_every_output():
    outputs, targets = make_batch(requires_grad=True)
    result = dmmsa()(outputs, targets)
    result.loss.backward()
    assert all(not t.requires_grad for t in [*result.terms.values(), *result.weights.values()])
    leaves = [outputs["prediction"], outputs["logits"], *outputs["features"].values()]
    leaves += list(outputs["unimodal"].values())
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)


def test_single_precision_outputs_give_a_single_precision_loss():
    result = dmmsa()(*make_batch(dtype=torch.float32))
    assert result.loss.dtype == torch.float32


@given(label=st.floats(7e4, 1e30), seed=st.integers(0, 50))
def test_half_precision_regression_terms_are_computed_in_float32(label, seed):
    """A finite float32 label beyond float16 (65504) must not become inf: MSR and Uni are
    computed in float32 for half-precision predictions, equal to the reference on float32."""
    outputs, targets = make_batch(seed=seed, dtype=torch.float32, unimodal_labels="TAV")
    targets["M"][0] = label
    targets["A"][1] = -label
    half = {**outputs, "prediction": outputs["prediction"].half(),
            "unimodal": {n: u.half() for n, u in outputs["unimodal"].items()}}
    terms = dmmsa()(half, targets).terms
    as_float32 = {**half, "prediction": half["prediction"].float(),
                  "unimodal": {n: u.float() for n, u in half["unimodal"].items()}}
    expected = reference_terms(as_float32, targets)
    for name in ("MSR", "Uni"):
        assert terms[name].dtype == torch.float32
        assert terms[name].item() == pytest.approx(expected[name], rel=1e-5)


@pytest.mark.parametrize("fixed", [True, False])
def test_task_losses_on_two_devices_raise_naming_tasks_and_devices(fixed):
    objective = mt.MultiTaskObjective(
        {"a": lambda o, t: torch.tensor(1.0), "b": lambda o, t: torch.zeros((), device="meta")},
        dynamic=[] if fixed else ["a", "b"],
    )
    with pytest.raises(ValueError, match=r"one device, got 'a' on cpu, 'b' on meta"):
        objective({}, {})


# ----------------------------------------------------------------------------- switches
@pytest.mark.parametrize(
    ("flags", "tasks", "dynamic"),
    [
        ({}, ["MSR", "MSC", "Uni", "CL"], ["Uni", "CL"]),
        ({"msc": False}, ["MSR", "Uni", "CL"], ["Uni", "CL"]),
        ({"cl": False}, ["MSR", "MSC", "Uni"], ["Uni"]),
        ({"uni": False}, ["MSR", "MSC", "CL"], ["CL"]),
        ({"uni": False, "cl": False}, ["MSR", "MSC"], []),
    ],
)
def test_switching_terms_off_removes_them(flags, tasks, dynamic):
    objective = dmmsa(**flags)
    result = objective(*make_batch())
    assert list(result.terms) == tasks
    assert list(objective.dynamic) == dynamic
    if dynamic:
        assert objective.weighter.num_tasks == len(dynamic)
    else:
        assert objective.weighter is None


def test_msc_off_needs_no_binning_nor_logits():
    outputs, targets = make_batch()
    del outputs["logits"]
    result = mt.MultiTaskObjective.dmmsa(binning=None, msc=False)(outputs, targets)
    assert "MSC" not in result.terms


@pytest.mark.parametrize(
    ("weighting", "scale", "cls", "value"),
    [
        ("gdwg", "sum_one", mt.GDWGWeighter, 0.5),
        ("equal", "sum_one", mt.EqualWeighter, 0.5),
        ("equal", "num_tasks", mt.EqualWeighter, 1.0),
        ("dwa", "num_tasks", mt.DWAWeighter, 1.0),
    ],
)
def test_weighting_choice_builds_that_weighter_with_the_same_scale(weighting, scale, cls, value):
    objective = dmmsa(weighting=weighting, scale=scale, weighting_temperature=3.0)
    assert type(objective.weighter) is cls
    assert objective.weighter.weights.tolist() == [value, value]
    assert getattr(objective.weighter, "temperature", 3.0) == 3.0


def test_equal_weighting_never_changes_the_weights():
    objective = dmmsa(weighting="equal")
    for seed in range(4):
        objective(*make_batch(seed=seed))
        objective.step()
    assert objective(*make_batch()).weights["CL"].item() == 0.5


def test_contrastive_temperature_and_form_reach_the_loss():
    outputs, targets = make_batch()
    pairs = mt.text_anchored_pairs(**outputs["features"])
    expected = mt.MultiNTXentLoss(temperature=0.2, form="out")(
        pairs.anchor, pairs.candidates, pairs.positive_mask
    )
    result = dmmsa(temperature=0.2, form="out")(outputs, targets)
    assert result.terms["CL"].item() == pytest.approx(expected.item())


def test_beta_is_the_smooth_l1_threshold():
    outputs, targets = make_batch()
    result = dmmsa(beta=0.3)(outputs, targets)
    assert result.terms["MSR"].item() == pytest.approx(
        smooth_l1(outputs["prediction"], targets["M"], beta=0.3)
    )


# ------------------------------------------------------------------------ missing modalities
def test_text_only_has_no_contrastive_term():
    result = dmmsa()(*make_batch(names=("T_s", "T_d")))
    assert "CL" not in result.terms and "Uni" in result.terms


def test_missing_text_anchor_drops_the_contrastive_term():
    result = dmmsa()(*make_batch(names=("T_d", "A_s", "A_d", "V_s", "V_d")))
    assert "CL" not in result.terms


def test_missing_audio_drops_its_pairs():
    outputs, targets = make_batch(names=("T_s", "T_d", "V_s", "V_d"))
    result = dmmsa()(outputs, targets)
    expected = text_anchored_nt_xent(outputs["features"])
    assert result.terms["CL"].item() == pytest.approx(expected, rel=1e-9)


def test_empty_unimodal_dict_drops_the_unimodal_term():
    outputs, targets = make_batch()
    outputs["unimodal"] = {}
    assert "Uni" not in dmmsa()(outputs, targets).terms


def test_absent_term_is_not_recorded_by_the_weighter():
    objective = dmmsa()
    objective(*make_batch(names=("T_s", "T_d")))  # no CL
    assert objective.weighter.stage_loss_count.tolist() == [1, 0]


def test_contrastive_term_absent_for_a_whole_stage_raises_at_step_naming_it():
    objective = dmmsa()
    objective(*make_batch(names=("T_s", "T_d")))
    with pytest.raises(ValueError, match=r"'CL'.*disable"):
        objective.step()


# --------------------------------------------------------------------------- unimodal labels
def test_uni_uses_unimodal_labels_for_dissimilarity_features():
    outputs, targets = make_batch(unimodal_labels="TAV")
    for name in NAMES:  # perfect predictions of u = [y, y^t, y, y^a, y, y^v]
        label = targets[name[0]] if name.endswith("_d") else targets["M"]
        outputs["unimodal"][name] = label.clone()
    assert dmmsa()(outputs, targets).terms["Uni"].item() == 0.0


def test_uni_falls_back_to_the_multimodal_label_without_unimodal_labels():
    outputs, targets = make_batch()
    for name in NAMES:
        outputs["unimodal"][name] = targets["M"].clone()
    assert dmmsa()(outputs, targets).terms["Uni"].item() == 0.0


# ------------------------------------------------------------------------- stages and state
def test_step_advances_the_weighter():
    objective = dmmsa()
    objective(*make_batch())
    objective.step()
    assert objective.weighter.stage == 2


def test_eval_mode_records_nothing():
    objective = dmmsa().eval()
    objective(*make_batch())
    assert objective.weighter.stage_loss_count.tolist() == [0, 0]


def test_state_dict_round_trip_continues_identically():
    batches = [make_batch(seed=seed) for seed in range(9)]
    uninterrupted = dmmsa()
    first = dmmsa()
    for i, batch in enumerate(batches[:5]):
        for objective in (uninterrupted, first):
            objective(*batch)
            if i % 2 == 1:
                objective.step()
    resumed = dmmsa()
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    for i, batch in enumerate(batches[5:], start=5):
        a, b = uninterrupted(*batch), resumed(*batch)
        assert torch.equal(a.loss, b.loss)
        if i % 2 == 1:
            uninterrupted.step()
            resumed.step()
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_objective_works_on_the_outputs_of_the_decomposition_head():
    torch.manual_seed(0)
    head = DecompositionHead({"T": 8, "A": 4, "V": 5}, feature_dim=6, fusion_hidden=(8,),
                             unimodal_hidden=(4,))
    outputs = head({"T": torch.randn(3, 8), "A": torch.randn(3, 4), "V": torch.randn(3, 5)})
    result = dmmsa()(outputs, {"M": torch.tensor([-0.5, 0.0, 0.8])})
    result.loss.backward()
    assert list(result.terms) == ["MSR", "MSC", "Uni", "CL"]
    assert all(p.grad is not None for p in head.parameters())


# -------------------------------------------------------------------------------- generic
def regression(outputs, targets):
    return F.mse_loss(outputs["y"], targets["y"])


def magnitude(outputs, targets):
    return outputs["y"].abs().mean()


def absent(outputs, targets):
    return None


Y_OUT, Y_TGT = {"y": torch.tensor([1.0, 3.0])}, {"y": torch.tensor([0.0, 3.0])}


def test_generic_tasks_not_listed_have_fixed_weight_one():
    objective = mt.MultiTaskObjective({"a": regression, "b": magnitude}, fixed={"b": 0.25})
    result = objective(Y_OUT, Y_TGT)
    assert objective.weighter is None and objective.fixed == {"a": 1.0, "b": 0.25}
    assert result.loss.item() == pytest.approx(0.5 + 0.25 * 2.0)


def test_generic_default_weighter_is_gdwg_named_after_the_dynamic_tasks():
    objective = mt.MultiTaskObjective(
        {"a": regression, "b": magnitude, "c": absent}, dynamic=["b", "c"]
    )
    assert isinstance(objective.weighter, mt.GDWGWeighter)
    assert objective.weighter.task_names == ("b", "c")


def test_task_returning_none_is_absent():
    objective = mt.MultiTaskObjective({"a": regression, "c": absent}, dynamic=["c"])
    result = objective(Y_OUT, Y_TGT)
    assert list(result.terms) == ["a"] and list(result.weights) == ["a"]


def test_every_task_absent_raises():
    with pytest.raises(ValueError, match="no task produced a loss"):
        mt.MultiTaskObjective({"c": absent})(Y_OUT, Y_TGT)


def test_module_tasks_are_registered_in_the_state_dict():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("factor", torch.tensor(2.0))

        def forward(self, outputs, targets):
            return self.factor * regression(outputs, targets)

    objective = mt.MultiTaskObjective({"scaled": Scaled()})
    assert "task_modules.scaled.factor" in objective.state_dict()
    assert objective(Y_OUT, Y_TGT).loss.item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("task", "error", "match"),
    [
        (lambda o, t: 1.0, TypeError, "'bad'.*floating-point tensor"),
        (lambda o, t: torch.ones(2), ValueError, r"'bad'.*scalar"),
        (lambda o, t: torch.tensor(1), TypeError, "'bad'"),
    ],
)
def test_task_with_a_bad_return_value_raises_naming_it(task, error, match):
    with pytest.raises(error, match=match):
        mt.MultiTaskObjective({"bad": task})(Y_OUT, Y_TGT)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tasks": {}}, ValueError, "tasks"),
        ({"tasks": [regression]}, TypeError, "tasks"),
        ({"tasks": {"a": 1.0}}, TypeError, r"tasks\['a'\]"),
        ({"tasks": {"a.b": regression}}, ValueError, "task names"),
        ({"fixed": {"x": 1.0}}, ValueError, "'x'"),
        ({"fixed": {"a": -1.0}}, ValueError, r"fixed\['a'\]"),
        ({"fixed": {"b": 1.0}, "dynamic": ["b"]}, ValueError, "'b'.*both"),
        ({"dynamic": ["x"]}, ValueError, "dynamic"),
        ({"dynamic": ["b", "b"]}, ValueError, "dynamic"),
        ({"dynamic": "b"}, TypeError, "dynamic"),
        ({"dynamic": ["b"], "weighter": mt.GDWGWeighter(2)}, ValueError, "num_tasks=2"),
        ({"weighter": mt.GDWGWeighter(1)}, ValueError, "weighter"),
        ({"dynamic": ["b"], "weighter": "gdwg"}, TypeError, "weighter"),
    ],
)
def test_bad_constructor_arguments_raise_naming_them(kwargs, error, match):
    kwargs = {"tasks": {"a": regression, "b": magnitude}, **kwargs}
    with pytest.raises(error, match=match):
        mt.MultiTaskObjective(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"binning": None}, TypeError, "binning"),
        ({"binning": SIMS3, "temperature": 0.0}, ValueError, "temperature"),
        ({"binning": SIMS3, "form": "both"}, ValueError, "form"),
        ({"binning": SIMS3, "beta": 0.0}, ValueError, "beta"),
        ({"binning": SIMS3, "msc": 1}, TypeError, "msc"),
        ({"binning": SIMS3, "weighting": "uw"}, ValueError, "weighting"),
        ({"binning": SIMS3, "weighting_temperature": -2.0}, ValueError, "weighting_temperature"),
        ({"binning": SIMS3, "scale": "one"}, ValueError, "scale"),
    ],
)
def test_bad_dmmsa_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        mt.MultiTaskObjective.dmmsa(**kwargs)


# ----------------------------------------------------------------------------- bad batches
def drop(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


OUTPUTS, TARGETS = make_batch(batch=4)


@pytest.mark.parametrize(
    ("outputs", "targets", "error", "match"),
    [
        (drop(OUTPUTS, "prediction"), TARGETS, ValueError, "'prediction'"),
        (OUTPUTS, drop(TARGETS, "M"), ValueError, "'M'"),
        (drop(OUTPUTS, "logits"), TARGETS, ValueError, "'logits'.*msc=False"),
        (drop(OUTPUTS, "features"), TARGETS, ValueError, "'features'.*cl=False"),
        (drop(OUTPUTS, "unimodal"), TARGETS, ValueError, "'unimodal'.*uni=False"),
        ([OUTPUTS], TARGETS, TypeError, "outputs"),
        (OUTPUTS, TARGETS["M"], TypeError, "targets"),
        ({**OUTPUTS, "prediction": torch.zeros(4, 1)}, TARGETS, ValueError, r"squeeze"),
        ({**OUTPUTS, "prediction": torch.zeros(5)}, TARGETS, ValueError, r"targets\['M'\]"),
        ({**OUTPUTS, "prediction": torch.zeros(4, dtype=torch.long)}, TARGETS, TypeError,
         "prediction"),
        ({**OUTPUTS, "logits": torch.zeros(4, 5)}, TARGETS, ValueError, r"outputs\['logits'\]"),
        ({**OUTPUTS, "features": {"Ts": torch.zeros(4, 6)}}, TARGETS, ValueError, "'Ts'"),
        ({**OUTPUTS, "features": {"T_s": torch.zeros(3, 6)}}, TARGETS, ValueError, "'T_s'"),
        ({**OUTPUTS, "unimodal": {"A_s": torch.zeros(4, 1)}}, TARGETS, ValueError, "'A_s'"),
        (OUTPUTS, {**TARGETS, "T": torch.zeros(3)}, ValueError, r"targets\['T'\]"),
        (OUTPUTS, {**TARGETS, "M": torch.zeros(4, dtype=torch.long)}, TypeError, "'M'"),
    ],
)
def test_bad_batches_raise_naming_the_key(outputs, targets, error, match):
    with pytest.raises(error, match=match):
        dmmsa()(outputs, targets)


def test_empty_batch_raises_naming_the_prediction():
    outputs, targets = make_batch(batch=0)
    with pytest.raises(ValueError, match=r"outputs\['prediction'\] must hold at least one sample"):
        dmmsa()(outputs, targets)


@pytest.mark.parametrize("key", ["M", "T", "A", "V"])
@pytest.mark.parametrize(
    ("value", "counts"), [(math.nan, "1 NaN and 0 inf"), (-math.inf, "0 NaN and 1 inf")]
)
@pytest.mark.parametrize("msc", [True, False])
def test_non_finite_label_in_use_raises_naming_it(key, value, counts, msc):
    outputs, targets = make_batch(unimodal_labels="TAV")
    targets[key][2] = value
    objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3 if msc else None, msc=msc)
    with pytest.raises(ValueError, match=rf"targets\['{key}'\] must be finite.*got {counts}"):
        objective(outputs, targets)


@pytest.mark.parametrize(
    ("names", "uni"),
    [(NAMES, False), (("T_s", "A_s", "A_d", "V_s", "V_d"), True)],
    ids=["uni-off", "no-T_d-prediction"],
)
def test_a_label_no_term_uses_is_not_value_checked(names, uni):
    outputs, targets = make_batch(names=names, unimodal_labels="TAV")
    targets["T"][0] = math.nan  # only L_Uni's T_d term would use it
    result = dmmsa(uni=uni)(outputs, targets)
    assert all(bool(torch.isfinite(term)) for term in result.terms.values())


@pytest.mark.parametrize("key", ["M", "T"])
def test_label_on_another_device_raises_naming_it(key):
    outputs, targets = make_batch(unimodal_labels="T")
    targets[key] = targets[key].to("meta")
    with pytest.raises(
        ValueError, match=rf"targets\['{key}'\] must be on the device of the outputs"
    ):
        dmmsa()(outputs, targets)


@pytest.mark.parametrize(("msc", "expected"), [(False, 1), (True, 2)])  # + the binning's check
def test_labels_are_value_checked_with_one_host_read_per_batch(msc, expected):
    outputs, targets = make_batch(unimodal_labels="TAV")
    objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3 if msc else None, msc=msc)
    with HostReads() as reads:
        objective(outputs, targets)
    assert reads.count == expected


def test_features_of_different_widths_raise():
    outputs, targets = make_batch()
    outputs["features"]["V_s"] = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="V_s"):
        dmmsa()(outputs, targets)


def test_step_keeps_each_dynamic_tasks_stage_mean_by_name() -> None:
    objective = dmmsa()
    assert objective.last_stage_means == {}
    results = [objective(*make_batch(seed=seed)) for seed in range(3)]
    objective.step()
    means = objective.last_stage_means
    assert sorted(means) == ["CL", "Uni"]
    for name in means:
        assert means[name] == pytest.approx(
            sum(float(r.terms[name]) for r in results) / len(results), rel=1e-6)
    assert mt.MultiTaskObjective({"a": lambda o, t: o["x"].sum()}).last_stage_means == {}


# ------------------------------------------------------- labels are binned in their own dtype
LABEL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
PRESETS = [("sims", 2), ("sims", 3), ("sims", 5), ("mosi", 2), ("mosi", 3), ("mosi", 5),
           ("mosi", 7)]


@given(
    preset=st.sampled_from(PRESETS),
    label_dtype=st.sampled_from(LABEL_DTYPES),
    prediction_dtype=st.sampled_from(LABEL_DTYPES),
    edge=st.integers(0, 5),
    offset=st.sampled_from([-1, 0, 1]),
)
def test_msc_and_label_positives_bin_the_label_in_its_own_dtype(
    preset, label_dtype, prediction_dtype, edge, offset
):
    """The classes the MSC term and the label-aware positives use are exactly binning(y), for
    labels next to a class edge, whatever the prediction's dtype (a float64 prediction once
    moved float32 0.1 across the SIMS edge 0.1)."""
    binning = mt.CoarseGrainedBinning.preset(*preset)
    edges = binning.edges.tolist()
    value = torch.tensor(edges[edge % len(edges)], dtype=label_dtype)
    if offset:  # the neighbouring representable value of the label's dtype
        value = torch.nextafter(value.float(), torch.tensor(offset * 10.0)).to(label_dtype)
    y = torch.stack([value, -value, torch.zeros((), dtype=label_dtype)])
    classes = binning(y)
    logits = F.one_hot(classes, binning.num_classes).to(prediction_dtype) * 30.0
    outputs = {"prediction": torch.zeros(3, dtype=prediction_dtype), "logits": logits}
    msc = mt.msc_loss(outputs, {"M": y}, binning=binning)
    assert msc.item() < 1e-6  # the logits point at binning(y): a mis-binned label costs ~30
    features = {"T_s": torch.randn(3, 4, generator=torch.Generator().manual_seed(0))}
    features["T_s"] = features["T_s"].to(prediction_dtype)
    got = mt.cl_loss({**outputs, "features": features}, {"M": y}, label_binning=binning)
    expected = mt.functional.multi_nt_xent_from_labels(features["T_s"], classes)
    assert got is not None, "label-aware positives must give a term"
    torch.testing.assert_close(got, expected)


def test_msc_bins_the_reported_float32_label_with_a_float64_prediction():
    binning = mt.CoarseGrainedBinning.preset("sims", 3)
    y = torch.tensor([0.1, -0.1, 0.7])  # float32: classes 1, 0, 2
    logits = torch.eye(3, dtype=torch.float64)[[1, 0, 2]] * 10.0
    outputs = {"prediction": torch.zeros(3, dtype=torch.float64), "logits": logits}
    assert binning(y).tolist() == [1, 0, 2]
    assert mt.msc_loss(outputs, {"M": y}, binning=binning).item() < 1e-3  # not 3.33


# ----------------------------------------------------------- the weighter's task order
@pytest.mark.parametrize(
    "names", [["CL", "Uni"], ["Uni", "MSC"], ["uni", "cl"]]
)
def test_a_weighter_named_for_other_tasks_or_another_order_is_refused(names):
    with pytest.raises(ValueError, match=r"weighter.task_names must name the dynamic tasks in "
                       r"their order \['Uni', 'CL'\].*got \[" + repr(names[0])):
        mt.MultiTaskObjective.dmmsa(
            binning=mt.CoarseGrainedBinning.preset("mosi", 3),
            weighting=mt.GDWGWeighter(2, task_names=names),
        )
    with pytest.raises(ValueError, match="weighter.task_names"):
        mt.MultiTaskObjective(
            {"a": lambda o, t: None, "Uni": lambda o, t: None, "CL": lambda o, t: None},
            dynamic=["Uni", "CL"], weighter=mt.DWAWeighter(2, task_names=names),
        )


def test_a_weighter_named_in_the_dynamic_order_or_unnamed_is_accepted():
    binning = mt.CoarseGrainedBinning.preset("mosi", 3)
    for weighter in (mt.GDWGWeighter(2, task_names=["Uni", "CL"]), mt.GDWGWeighter(2)):
        assert mt.MultiTaskObjective.dmmsa(binning=binning, weighting=weighter).weighter is weighter
