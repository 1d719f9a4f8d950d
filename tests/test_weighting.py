"""Properties of the task weighters: GDWG (Eq. 13–14), DWA and equal weights."""

from __future__ import annotations

import copy
import math
import os
import re
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt

WEIGHTERS = [mt.GDWGWeighter, mt.DWAWeighter, mt.EqualWeighter]
DYNAMIC = [mt.GDWGWeighter, mt.DWAWeighter]

positive_loss = st.floats(min_value=0.05, max_value=20.0, allow_nan=False, allow_infinity=False)


def stages_of(num_tasks: int, min_stages: int = 1, max_stages: int = 5) -> st.SearchStrategy:
    """Stages, each a list of 1–3 batches of ``num_tasks`` positive losses."""
    batch = st.lists(positive_loss, min_size=num_tasks, max_size=num_tasks)
    stage = st.lists(batch, min_size=1, max_size=3)
    return st.lists(stage, min_size=min_stages, max_size=max_stages)


def run_stages(weighter: mt.Weighter, stages) -> list[torch.Tensor]:
    """Feed every stage (list of loss lists), stepping after each; return λ of stages 1..T+1."""
    history = [weighter.weights]
    for stage in stages:
        for losses in stage:
            weighter(torch.tensor(losses, dtype=torch.float64))
        weighter.step()
        history.append(weighter.weights)
    return history


def softmax_reference(relative: np.ndarray, temperature: float, scale: float) -> np.ndarray:
    e = np.exp((relative - relative.max()) / temperature)  # shifted: exp(4000) overflows
    return scale * e / e.sum()


def gdwg_reference(stage_means: list[np.ndarray], temperature: float, scale: str) -> list:
    """Eq. 13–14 from the stage means: λ(1) = λ(2) = equal, λ(t) = softmax(L(t-1)/L(1) / τ)."""
    k = len(stage_means[0])
    s = 1.0 if scale == "sum_one" else float(k)
    weights = [np.full(k, s / k)]
    for mean in stage_means:
        weights.append(softmax_reference(mean / stage_means[0], temperature, s))
    return weights


def dwa_reference(stage_means: list[np.ndarray], temperature: float, scale: str) -> list:
    """Liu et al. (2019): λ(1) = λ(2) = equal, λ(t) = s softmax(L(t-1)/L(t-2) / τ)."""
    k = len(stage_means[0])
    s = 1.0 if scale == "sum_one" else float(k)
    weights = [np.full(k, s / k), np.full(k, s / k)]
    for previous, mean in zip(stage_means, stage_means[1:]):
        weights.append(softmax_reference(mean / previous, temperature, s))
    return weights


def assert_weights_close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------- Eq. 13–14
@given(stages=stages_of(3, min_stages=2, max_stages=2))
def test_gdwg_equal_weights_in_stages_1_and_2(stages):
    history = run_stages(mt.GDWGWeighter(3), stages)
    for weights in history[:2]:  # lambda(1), lambda(2)
        assert_weights_close(weights, np.full(3, 1 / 3))


def test_gdwg_stage_3_weights_by_hand():
    weighter = mt.GDWGWeighter(2, temperature=2.0)
    run_stages(weighter, [[[2.0, 4.0], [4.0, 4.0]], [[1.0, 4.0]]])  # means (3, 4) then (1, 4)
    w = np.array([1.0 / 3.0, 1.0])  # L(2) / L(1)
    expected = np.exp(w / 2.0) / np.exp(w / 2.0).sum()
    assert weighter.stage == 3
    assert_weights_close(weighter.weights, expected)


@given(
    stages=stages_of(3, min_stages=3),
    temperature=st.floats(min_value=0.1, max_value=10.0),
    scale=st.sampled_from(["sum_one", "num_tasks"]),
)
def test_gdwg_matches_numpy_reference_of_eq_13_14(stages, temperature, scale):
    history = run_stages(mt.GDWGWeighter(3, temperature=temperature, scale=scale), stages)
    means = [np.mean(np.array(stage), axis=0) for stage in stages]
    for actual, expected in zip(history, gdwg_reference(means, temperature, scale)):
        assert_weights_close(actual, expected)


@pytest.mark.parametrize("cls", WEIGHTERS)
@pytest.mark.parametrize("scale", ["sum_one", "num_tasks"])
@given(stages=stages_of(4))
def test_weights_sum_to_one_or_num_tasks(cls, scale, stages):
    history = run_stages(cls(4, scale=scale), stages)
    target = 1.0 if scale == "sum_one" else 4.0
    for weights in history:
        assert float(weights.sum()) == pytest.approx(target, rel=1e-6)
        assert bool((weights >= 0).all())


def test_smaller_temperature_spreads_the_weights_more():
    stages = [[[1.0, 1.0]], [[0.2, 0.9]]]
    spread = []
    for temperature in (0.5, 2.0, 8.0):
        weights = run_stages(mt.GDWGWeighter(2, temperature=temperature), stages)[-1]
        spread.append(float(weights.max() - weights.min()))
    assert spread[0] > spread[1] > spread[2] > 0


def test_gdwg_gives_more_weight_to_the_task_that_decreased_less():
    weights = run_stages(mt.GDWGWeighter(2), [[[1.0, 1.0]], [[0.2, 0.9]]])[-1]
    assert weights[1] > weights[0]


# ------------------------------------------------------------------------- DWA and equal
@given(
    stages=stages_of(3, min_stages=2),
    temperature=st.floats(min_value=0.1, max_value=10.0),
    scale=st.sampled_from(["sum_one", "num_tasks"]),
)
def test_dwa_matches_its_formula(stages, temperature, scale):
    history = run_stages(mt.DWAWeighter(3, temperature=temperature, scale=scale), stages)
    means = [np.mean(np.array(stage), axis=0) for stage in stages]
    for actual, expected in zip(history, dwa_reference(means, temperature, scale)):
        assert_weights_close(actual, expected)


def test_dwa_default_scale_is_num_tasks_and_gdwg_is_sum_one():
    assert float(mt.DWAWeighter(3).weights.sum()) == pytest.approx(3.0)
    assert float(mt.GDWGWeighter(3).weights.sum()) == pytest.approx(1.0)


@given(stages=stages_of(3))
def test_equal_weighter_never_changes(stages):
    for weights in run_stages(mt.EqualWeighter(3), stages):
        assert_weights_close(weights, np.full(3, 1 / 3))


# ------------------------------------------------------------------ forward and gradient
@pytest.mark.parametrize("cls", WEIGHTERS)
def test_forward_is_the_weighted_sum_of_the_present_tasks(cls):
    weighter = cls(3)
    run_stages(weighter, [[[1.0, 2.0, 3.0]], [[0.5, 1.5, 3.0]]])
    losses = torch.tensor([0.7, 1.3, 2.1])
    present = torch.tensor([True, False, True])
    expected = weighter.weights[0] * losses[0] + weighter.weights[2] * losses[2]
    torch.testing.assert_close(weighter(losses, present=present), expected)


@pytest.mark.parametrize("cls", WEIGHTERS)
def test_weights_are_detached_and_the_gradient_flows_to_the_losses(cls):
    weighter = cls(3)
    run_stages(weighter, [[[1.0, 2.0, 3.0]], [[0.5, 1.5, 3.0]]])
    losses = torch.tensor([0.7, 1.3, 2.1], requires_grad=True)
    weighter(losses).backward()
    assert not weighter.weights.requires_grad
    assert not any(buffer.requires_grad for buffer in weighter.buffers())
    torch.testing.assert_close(losses.grad, weighter.weights)


def test_absent_task_gets_no_gradient_and_nan_placeholder_is_ignored():
    weighter = mt.GDWGWeighter(2)
    losses = torch.tensor([0.5, float("nan")], requires_grad=True)
    total = weighter(losses, present=torch.tensor([True, False]))
    total.backward()
    assert torch.isfinite(total)
    assert losses.grad.tolist() == [0.5, 0.0]


def test_stage_means_count_each_task_only_where_present():
    weighter = mt.GDWGWeighter(2)
    batches = [([1.0, 8.0], [True, True]), ([3.0, 99.0], [True, False]), ([5.0, 4.0], [True, True])]
    for stage in range(3):  # the same batches in 3 stages, then scale the losses in stage 3
        factor = [1.0, 1.0, 0.5][stage]
        for losses, present in batches:
            weighter(torch.tensor(losses) * factor, present=torch.tensor(present))
        weighter.step()
    table = np.array([losses for losses, _ in batches])
    mask = np.array([present for _, present in batches])
    mean = np.nanmean(np.where(mask, table, np.nan), axis=0)  # (3, 6)
    expected = gdwg_reference([mean, mean, 0.5 * mean], 2.0, "sum_one")[-1]
    assert_weights_close(weighter.weights, expected)


def test_eval_mode_records_nothing():
    weighter = mt.GDWGWeighter(2)
    weighter(torch.tensor([1.0, 1.0]))
    weighter.eval()
    weighter(torch.tensor([100.0, 0.01]))
    weighter.train()
    weighter.step()
    assert weighter.baseline.tolist() == [1.0, 1.0]


def test_half_precision_losses_give_a_half_result_and_float64_state():
    weighter = mt.GDWGWeighter(2).half()
    out = weighter(torch.tensor([0.1, 0.3], dtype=torch.float16))
    assert out.dtype == torch.float16
    assert weighter.stage_loss_sum.dtype == torch.float64
    assert weighter.task_weights.dtype == torch.float64


# ----------------------------------------------------------------------- state and reset
def batch_and_step_events(stages) -> list:
    events: list = []
    for stage in stages:
        events += [torch.tensor(losses, dtype=torch.float64) for losses in stage]
        events.append("step")
    return events


def replay(weighter: mt.Weighter, events) -> list[torch.Tensor]:
    outputs = []
    for event in events:
        if isinstance(event, str):
            weighter.step()
            outputs.append(weighter.weights)
        else:
            outputs.append(weighter(event))
    return outputs


@pytest.mark.parametrize("cls", WEIGHTERS)
@given(stages=stages_of(3, min_stages=2, max_stages=5), data=st.data())
def test_state_dict_resume_mid_run_continues_identically(cls, stages, data):
    events = batch_and_step_events(stages)
    cut = data.draw(st.integers(min_value=0, max_value=len(events)), label="cut")
    uninterrupted = replay(cls(3), events)

    before = cls(3)
    resumed = replay(before, events[:cut])
    state = copy.deepcopy(before.state_dict())
    after = cls(3)
    replay(after, [torch.tensor([7.0, 0.3, 2.0])] * 2 + ["step"])  # stale state to overwrite
    after.load_state_dict(state)
    resumed += replay(after, events[cut:])

    assert len(resumed) == len(uninterrupted)
    for a, b in zip(resumed, uninterrupted):
        assert torch.equal(a, b)
    for key, value in cls(3).state_dict().items():
        assert key in state and state[key].shape == value.shape


def test_state_dict_holds_baseline_sums_counts_stage_weights_and_settings():
    keys = set(mt.GDWGWeighter(2).state_dict())
    assert keys == {
        "baseline", "stage_loss_sum", "stage_loss_count", "completed_stages", "task_weights",
        "_extra_state",  # the settings, checked on load
    }


# The settings each weighter is built with, and a change of each that the state must refuse.
SETTINGS = {
    mt.GDWGWeighter: {"scale": "num_tasks", "temperature": 1.0, "task_names": ["b", "a"]},
    mt.DWAWeighter: {"scale": "sum_one", "temperature": 0.5, "task_names": ["b", "a"]},
    mt.EqualWeighter: {"scale": "num_tasks", "task_names": ["b", "a"]},
}


def _after_two_stages(cls, factor=1.0, **settings):
    weighter = cls(2, **{"task_names": ["a", "b"], **settings})
    run_stages(weighter, [[[1.0, 2.0 * factor]], [[0.5, 2.0]]])
    weighter(torch.tensor([0.25, factor]))  # mid-stage
    return weighter


@pytest.mark.parametrize(("cls", "setting"), [(c, k) for c in SETTINGS for k in SETTINGS[c]])
def test_state_of_other_settings_is_refused_naming_them_and_nothing_is_loaded(cls, setting):
    saved = _after_two_stages(cls).state_dict()
    other = SETTINGS[cls][setting]
    target = _after_two_stages(cls, 3.0, **{setting: other})  # other statistics, too
    before = copy.deepcopy(target.state_dict())
    assert not torch.equal(before["stage_loss_sum"], saved["stage_loss_sum"])
    with pytest.raises(ValueError, match=rf"saved with other settings: {setting} .*\(saved\) != "
                       rf"{re.escape(repr(other))} \(this weighter\)"):
        target.load_state_dict(saved)
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("cls", WEIGHTERS)
def test_state_of_the_same_settings_loads_also_after_weights_only_save(cls, tmp_path):
    """The settings are a uint8 tensor: ``torch.load(weights_only=True)`` reads them."""
    weighter = _after_two_stages(cls)
    torch.save(weighter.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["_extra_state"].dtype == torch.uint8
    resumed = cls(2, task_names=["a", "b"])
    resumed.load_state_dict(state)
    for key, value in weighter.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_state_of_another_kind_of_weighter_is_refused():
    with pytest.raises(ValueError, match=r"weighter 'GDWGWeighter' \(saved\) != 'EqualWeighter'"):
        mt.EqualWeighter(2).load_state_dict(mt.GDWGWeighter(2).state_dict(), strict=False)


def test_state_without_names_matches_any_names_and_a_state_without_settings_loads():
    """``task_names=None`` is "unnamed" (no check); a state saved before the settings were
    recorded (no ``_extra_state``) loads unchecked, as it always did."""
    unnamed = mt.GDWGWeighter(2)
    run_stages(unnamed, [[[1.0, 2.0]]])
    named = mt.GDWGWeighter(2, task_names=["a", "b"])
    named.load_state_dict(unnamed.state_dict())
    assert named.stage == 2
    legacy = {k: v for k, v in unnamed.state_dict().items() if k != "_extra_state"}
    other_scale = mt.GDWGWeighter(2, scale="num_tasks")
    other_scale.load_state_dict(legacy)
    assert other_scale.stage == 2


def test_objective_state_of_other_scale_is_refused():
    """The issue's case: a DMMSA objective saved with scale="sum_one" into scale="num_tasks"."""
    binning = mt.CoarseGrainedBinning.preset("sims")
    saved = mt.MultiTaskObjective.dmmsa(binning=binning).state_dict()
    resumed = mt.MultiTaskObjective.dmmsa(binning=binning, scale="num_tasks")
    with pytest.raises(ValueError, match=r"scale 'sum_one' \(saved\) != 'num_tasks'"):
        resumed.load_state_dict(saved)


@pytest.mark.parametrize("cls", WEIGHTERS)
def test_reset_forgets(cls):
    weighter = cls(3)
    run_stages(weighter, [[[1.0, 2.0, 3.0]], [[0.5, 1.5, 3.0]], [[0.1, 1.0, 3.0]]])
    weighter(torch.tensor([1.0, 1.0, 1.0]))
    weighter.reset()
    fresh = cls(3)
    assert weighter.stage == 1
    for key, value in fresh.state_dict().items():
        assert torch.equal(weighter.state_dict()[key], value), key


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", DYNAMIC)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
@pytest.mark.parametrize("stage", [1, 3])
def test_non_finite_or_non_positive_stage_mean_raises_naming_the_task(cls, bad, stage):
    weighter = cls(2, task_names=["Uni", "CL"])
    run_stages(weighter, [[[1.0, 1.0]]] * (stage - 1))
    weighter(torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match="'CL'"):
        weighter.step()


@pytest.mark.parametrize("cls", DYNAMIC)
def test_task_never_present_in_a_stage_raises_suggesting_to_disable_it(cls):
    weighter = cls(2, task_names=["Uni", "CL"])
    weighter(torch.tensor([1.0, 0.0]), present=torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"'CL'.*not present.*disable"):
        weighter.step()


def test_error_names_the_index_without_task_names():
    weighter = mt.GDWGWeighter(3)
    weighter(torch.tensor([1.0, 1.0, float("nan")]))
    with pytest.raises(ValueError, match="index 2"):
        weighter.step()


@pytest.mark.parametrize("cls", DYNAMIC)
def test_step_without_any_recorded_loss_raises(cls):
    with pytest.raises(ValueError, match="no loss was recorded"):
        cls(2).step()


def test_failed_step_leaves_the_state_unchanged():
    weighter = mt.GDWGWeighter(2)
    run_stages(weighter, [[[1.0, 2.0]]])
    weighter(torch.tensor([1.0, float("nan")]))
    state = copy.deepcopy(weighter.state_dict())
    with pytest.raises(ValueError):
        weighter.step()
    for key, value in weighter.state_dict().items():
        assert torch.equal(value.nan_to_num(), state[key].nan_to_num()), key
    assert weighter.stage == 2 and weighter.baseline.tolist() == [1.0, 2.0]


def test_equal_weighter_accepts_absent_tasks_at_step():
    weighter = mt.EqualWeighter(2)
    weighter(torch.tensor([1.0, 0.0]), present=torch.tensor([True, False]))
    weighter.step()
    assert weighter.stage == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_tasks": 0}, ValueError, "num_tasks"),
        ({"num_tasks": 2.0}, TypeError, "num_tasks"),
        ({"num_tasks": True}, TypeError, "num_tasks"),
        ({"num_tasks": 2, "temperature": 0.0}, ValueError, "temperature"),
        ({"num_tasks": 2, "temperature": -1.0}, ValueError, "temperature"),
        ({"num_tasks": 2, "temperature": math.inf}, ValueError, "temperature"),
        ({"num_tasks": 2, "temperature": "2"}, TypeError, "temperature"),
        ({"num_tasks": 2, "scale": "sum"}, ValueError, "scale"),
        ({"num_tasks": 2, "task_names": ["a"]}, ValueError, "task_names"),
        ({"num_tasks": 2, "task_names": ["a", "a"]}, ValueError, "task_names"),
        ({"num_tasks": 2, "task_names": "ab"}, TypeError, "task_names"),
        ({"num_tasks": 2, "task_names": ["a", 1]}, TypeError, "task_names"),
    ],
)
@pytest.mark.parametrize("cls", DYNAMIC)
def test_bad_constructor_arguments_raise_naming_them(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("losses", "present", "error", "match"),
    [
        (torch.ones(3), None, ValueError, r"losses .*\[2\]"),
        (torch.ones(1, 2), None, ValueError, "losses"),
        (torch.ones(()), None, ValueError, "losses"),
        (torch.ones(2, dtype=torch.long), None, TypeError, "losses"),
        ([1.0, 2.0], None, TypeError, "losses"),
        (torch.ones(2), torch.ones(2), TypeError, "present"),
        (torch.ones(2), [True, True], TypeError, "present"),
        (torch.ones(2), torch.ones(3, dtype=torch.bool), ValueError, "present"),
    ],
)
@pytest.mark.parametrize("cls", WEIGHTERS)
def test_bad_forward_inputs_raise_naming_them(cls, losses, present, error, match):
    with pytest.raises(error, match=match):
        cls(2)(losses, present=present)


# -------------------------------------------------------------------------- distributed
# Rank r's batches per stage: rank 0 sees two batches, rank 1 one; in stage 2 rank 1 lacks task 2.
RANK_STAGES = [
    [[([2.0, 1.0, 4.0], None), ([1.0, 3.0, 2.0], None)],
     [([1.5, 1.0, 3.0], None), ([0.5, 2.0, 1.0], None)],
     [([0.8, 0.7, 2.0], None), ([0.2, 1.5, 1.5], None)]],
    [[([4.0, 2.0, 6.0], None)],
     [([1.0, 1.0, 9.0], [True, True, False])],
     [([0.3, 0.4, 0.6], None)]],
]


def feed(weighter: mt.Weighter, stage) -> None:
    for losses, present in stage:
        mask = None if present is None else torch.tensor(present)
        weighter(torch.tensor(losses, dtype=torch.float64), present=mask)


def _gloo_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        weighter = mt.GDWGWeighter(3)
        for stage in RANK_STAGES[rank]:
            feed(weighter, stage)
            weighter.step()
        torch.save(weighter.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_end_with_the_weights_of_one_process_on_all_losses(tmp_path):
    mp.spawn(
        _gloo_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    single = mt.GDWGWeighter(3)
    for stage0, stage1 in zip(*RANK_STAGES):
        feed(single, stage0 + stage1)
        single.step()

    for key in ("task_weights", "baseline", "completed_stages"):
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single.state_dict()[key], rtol=1e-12, atol=0)
    assert not torch.allclose(rank0["task_weights"], torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("kind", [mt.GDWGWeighter, mt.DWAWeighter, mt.EqualWeighter])
def test_step_keeps_the_stage_means_of_the_ended_stage(kind) -> None:
    weighter = kind(3)
    assert weighter.last_stage_means is None
    recorded = [[0.5, 2.0, 1.0], [1.5, 4.0, 3.0]]
    present = [[True, True, False], [True, True, True]]
    for losses, mask in zip(recorded, present):
        weighter(torch.tensor(losses), present=torch.tensor(mask))
    weighter.step()
    means = weighter.last_stage_means
    expected = [np.mean([row[k] for row, m in zip(recorded, present) if m[k]]) for k in range(3)]
    assert means.dtype == torch.float64
    assert means.tolist() == pytest.approx(expected)
    weighter.reset()
    assert weighter.last_stage_means is None
