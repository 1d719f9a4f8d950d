"""Per-task schedules of MultiTaskObjective: the warm-up factors and how they compose."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from host_reads import HostReads
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt

SIMS3 = mt.CoarseGrainedBinning.preset("sims", 3)
NAMES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def make_batch(seed: int, batch: int = 4, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)

    outputs = {
        "prediction": rand(batch),
        "logits": rand(batch, 3),
        "features": {n: rand(batch, 6) for n in NAMES},
        "unimodal": {n: rand(batch) for n in NAMES},
    }
    return outputs, {"M": torch.rand(batch, generator=g, dtype=torch.float64) * 2 - 1}


def assert_result_is_weighted_sum(result: mt.ObjectiveResult) -> None:
    total = sum(result.weights[k].double() * result.terms[k].double() for k in result.terms)
    total = total + sum(r.double() for r in result.regularizers.values())
    torch.testing.assert_close(result.loss.detach().double(), total)


# ------------------------------------------------------------------------------ the factors
@given(stages=st.integers(0, 10), t=st.integers(1, 30))
def test_linear_warmup_is_min_one_of_t_minus_one_over_k(stages, t):
    expected = 1.0 if stages == 0 else min(1.0, (t - 1) / stages)
    assert mt.WarmupSchedule(stages)(t) == expected


@given(stages=st.integers(0, 10), t=st.integers(1, 30))
def test_step_warmup_is_off_for_k_stages_then_on(stages, t):
    assert mt.WarmupSchedule(stages, mode="step")(t) == (0.0 if t <= stages else 1.0)


def test_linear_warmup_starts_at_zero_and_reaches_one_at_stage_k_plus_one():
    schedule = mt.WarmupSchedule(3)
    assert [schedule(t) for t in range(1, 6)] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((-1,), {}, ValueError, "stages must be >= 0, got -1"),
        ((1.5,), {}, TypeError, "stages must be an int"),
        ((True,), {}, TypeError, "stages must be an int"),
        ((2,), {"mode": "cosine"}, ValueError, "mode must be one of 'linear' | 'step'"),
    ],
)
def test_bad_warmup_arguments_raise_naming_them(args, kwargs, error, match):
    with pytest.raises(error, match=match.replace("|", r"\|")):
        mt.WarmupSchedule(*args, **kwargs)


# ------------------------------------------------------------------- in MultiTaskObjective
WEIGHTERS = {
    "gdwg": lambda: mt.GDWGWeighter(2, task_names=["Uni", "CL"]),
    "dwa": lambda: mt.DWAWeighter(2),
    "equal": lambda: mt.EqualWeighter(2),
    "uncertainty": lambda: mt.UncertaintyWeighter(2, init_log_variance=0.3),
}


@pytest.mark.parametrize("weighter", list(WEIGHTERS))
def test_the_schedule_multiplies_the_weighters_whole_contribution(weighter):
    scheduled = mt.MultiTaskObjective.dmmsa(
        binning=SIMS3, weighting=WEIGHTERS[weighter](),
        schedules={"CL": mt.WarmupSchedule(4), "MSC": mt.WarmupSchedule(2, mode="step")},
    )
    plain = mt.MultiTaskObjective.dmmsa(binning=SIMS3, weighting=WEIGHTERS[weighter]())
    for stage in range(1, 7):
        for seed in (2 * stage, 2 * stage + 1):
            outputs, targets = make_batch(seed)
            a, b = scheduled(outputs, targets), plain(outputs, targets)
            rho_cl, rho_msc = min(1.0, (stage - 1) / 4), float(stage > 2)
            assert a.weights["CL"].item() == pytest.approx(rho_cl * b.weights["CL"].item())
            assert a.weights["MSC"].item() == rho_msc
            assert a.weights["Uni"].item() == pytest.approx(b.weights["Uni"].item())
            reg_cl = b.regularizers.get("CL", torch.zeros(())).item()
            assert a.regularizers.get("CL", torch.zeros(())).item() == pytest.approx(
                rho_cl * reg_cl
            )
            assert_result_is_weighted_sum(a)
            # the weighter sees the unscaled losses: both keep identical statistics
            assert torch.equal(scheduled.weighter.stage_loss_sum, plain.weighter.stage_loss_sum)
        scheduled.step()
        plain.step()


def test_a_zero_factor_takes_the_task_out_of_the_gradient_but_not_out_of_gdwg():
    objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3, schedules={"CL": mt.WarmupSchedule(2)})
    outputs, targets = make_batch(0, requires_grad=True)
    result = objective(outputs, targets)
    result.loss.backward()
    assert result.weights["CL"].item() == 0.0
    assert torch.count_nonzero(outputs["features"]["A_s"].grad) == 0  # only CL reads it
    assert objective.weighter.stage_loss_count.tolist() == [1, 1]
    assert objective.weighter.stage_loss_sum[1].item() == pytest.approx(result.terms["CL"].item())


def test_schedules_on_fixed_tasks_of_a_generic_objective():
    objective = mt.MultiTaskObjective(
        {"a": lambda o, t: o["y"].sum(), "b": lambda o, t: 2 * o["y"].sum()},
        fixed={"a": 0.5}, schedules={"a": lambda t: float(t), "b": lambda t: 0.25},
    )
    outputs = {"y": torch.tensor([1.0, 2.0])}
    assert objective.weighter is None
    assert objective(outputs, {}).loss.item() == pytest.approx(0.5 * 3 + 0.25 * 6)
    objective.step()
    assert objective.schedule_factors() == {"a": 2.0, "b": 0.25}
    assert objective(outputs, {}).loss.item() == pytest.approx(2 * 0.5 * 3 + 0.25 * 6)


def test_the_stage_counter_round_trips_through_state_dict_and_continues_identically():
    def build() -> mt.MultiTaskObjective:
        return mt.MultiTaskObjective.dmmsa(binning=SIMS3, schedules={"CL": mt.WarmupSchedule(5)})

    uninterrupted, first = build(), build()
    for seed in range(3):
        for objective in (uninterrupted, first):
            objective(*make_batch(seed))
            objective.step()
    state = copy.deepcopy(first.state_dict())
    assert state["schedule_stage._extra_state"].item() == 3
    resumed = build()
    resumed.load_state_dict(state)
    assert resumed.schedule_factors() == {"CL": 0.6}
    for seed in range(3, 7):
        a, b = uninterrupted(*make_batch(seed)), resumed(*make_batch(seed))
        assert torch.equal(a.loss, b.loss) and a.weights == b.weights
        uninterrupted.step()
        resumed.step()


def test_a_state_dict_without_the_counter_does_not_load_into_a_scheduled_objective():
    plain = mt.MultiTaskObjective.dmmsa(binning=SIMS3).state_dict()
    scheduled = mt.MultiTaskObjective.dmmsa(binning=SIMS3, schedules={"CL": mt.WarmupSchedule(2)})
    with pytest.raises(RuntimeError, match="schedule_stage"):
        scheduled.load_state_dict(plain)


def test_schedules_add_no_host_read():
    counts = []
    for schedules in (None, {"CL": mt.WarmupSchedule(3), "MSR": mt.WarmupSchedule(1)}):
        objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3, schedules=schedules)
        objective(*make_batch(1))
        objective.step()  # stage 2: factors 1/3 and 1
        with HostReads() as reads:
            objective(*make_batch(0))
        counts.append(reads.count)
    assert counts[0] == counts[1]


@pytest.mark.parametrize(
    ("schedules", "error", "match"),
    [
        ({"X": mt.WarmupSchedule(1)}, ValueError, "schedules names the unknown task 'X'"),
        ({"CL": 3}, TypeError, r"schedules\['CL'\] must be callable"),
        (["CL"], TypeError, "schedules must be a mapping"),
    ],
)
def test_bad_schedules_raise_at_construction(schedules, error, match):
    with pytest.raises(error, match=match):
        mt.MultiTaskObjective.dmmsa(binning=SIMS3, schedules=schedules)


@pytest.mark.parametrize(
    ("factor", "error", "match"),
    [
        (-0.5, ValueError, r"schedules\['CL'\]\(1\) must be a finite number >= 0, got -0.5"),
        (math.nan, ValueError, r"schedules\['CL'\]\(1\) must be a finite number >= 0"),
        ("1", TypeError, r"schedules\['CL'\]\(1\) must be a real number"),
    ],
)
def test_a_bad_factor_raises_naming_the_task_and_stage(factor, error, match):
    objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3, schedules={"CL": lambda t: factor})
    with pytest.raises(error, match=match):
        objective(*make_batch(0))
