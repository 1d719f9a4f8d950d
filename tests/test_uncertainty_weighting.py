"""Properties of UncertaintyWeighter (Kendall, Gal and Cipolla, 2018): exp(-s) L + s."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt

SIMS3 = mt.CoarseGrainedBinning.preset("sims", 3)

LOSSES = st.lists(st.floats(0.01, 50.0), min_size=1, max_size=5)


def log_variances_for(losses: list[float], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=len(losses))


def weighter_with(log_variances: np.ndarray) -> mt.UncertaintyWeighter:
    weighter = mt.UncertaintyWeighter(len(log_variances))
    with torch.no_grad():
        weighter.log_variances.copy_(torch.from_numpy(log_variances))
    return weighter


@given(losses=LOSSES, seed=st.integers(0, 2**16), data=st.data())
def test_value_and_gradients_match_the_closed_form(losses, seed, data):
    s = log_variances_for(losses, seed)
    present = np.array(data.draw(st.lists(st.booleans(), min_size=len(losses),
                                          max_size=len(losses))))
    weighter = weighter_with(s)
    loss_tensor = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    total = weighter(loss_tensor, present=torch.from_numpy(present))
    total.backward()
    L = np.array(losses)
    s32 = weighter.log_variances.detach().double().numpy()  # the float32 parameters
    expected = np.sum(np.where(present, np.exp(-s32) * L + s32, 0.0))
    assert total.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    grad_s = np.where(present, 1.0 - np.exp(-s32) * L, 0.0)  # d/ds_k (e^{-s_k} L_k + s_k)
    np.testing.assert_allclose(weighter.log_variances.grad.numpy(), grad_s, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(loss_tensor.grad.numpy(), np.where(present, np.exp(-s32), 0.0),
                               rtol=1e-6)


@pytest.mark.parametrize("loss", [0.05, 1.0, 7.5])
def test_gradient_descent_on_s_reaches_the_optimum_log_l(loss):
    weighter = mt.UncertaintyWeighter(1)
    optimizer = torch.optim.SGD(weighter.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        weighter(torch.tensor([loss])).backward()
        optimizer.step()
    assert weighter.log_variances.item() == pytest.approx(math.log(loss), abs=1e-4)
    assert weighter.weights.item() == pytest.approx(1.0 / loss, rel=1e-3)


def test_an_absent_task_adds_nothing_and_its_nan_placeholder_does_not_reach_s():
    weighter = weighter_with(np.array([0.5, -0.5]))
    total = weighter(torch.tensor([2.0, math.nan]), present=torch.tensor([True, False]))
    total.backward()
    assert total.item() == pytest.approx(math.exp(-0.5) * 2.0 + 0.5, rel=1e-6)
    assert weighter.log_variances.grad[1].item() == 0.0


def test_contributions_and_regularizers_decompose_the_sum():
    weighter = weighter_with(np.array([0.2, 1.0]))
    losses = torch.tensor([3.0, 0.5])
    contributions = weighter.contributions(losses)
    torch.testing.assert_close(
        contributions, weighter.weights * losses + weighter.regularizers().detach()
    )
    torch.testing.assert_close(weighter(losses), contributions.sum())


def test_the_stage_wise_weighters_have_no_regularizer():
    assert mt.GDWGWeighter(2).regularizers() is None
    assert mt.EqualWeighter(2).regularizers() is None


def test_step_counts_stages_but_does_not_change_the_weights():
    weighter = weighter_with(np.array([0.3, -0.1]))
    before = weighter.weights.clone()
    weighter(torch.tensor([1.0, math.inf]))  # a non-finite stage mean is not an error here
    weighter.step()
    assert weighter.stage == 2
    assert torch.equal(weighter.weights, before)


def test_state_dict_round_trip_restores_the_log_variances():
    weighter = weighter_with(np.array([0.3, -0.7]))
    weighter(torch.tensor([1.0, 2.0]))
    weighter.step()
    restored = mt.UncertaintyWeighter(2)
    restored.load_state_dict(copy.deepcopy(weighter.state_dict()))
    assert torch.equal(restored.log_variances, weighter.log_variances)
    assert restored.stage == 2
    losses = torch.tensor([0.4, 1.3])
    assert torch.equal(restored(losses), weighter(losses))


def test_reset_goes_back_to_the_initial_log_variance():
    weighter = mt.UncertaintyWeighter(2, init_log_variance=0.5)
    with torch.no_grad():
        weighter.log_variances.add_(1.0)
    weighter.reset()
    assert weighter.log_variances.tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("value", "error"), [(math.inf, ValueError), (math.nan, ValueError), ("0", TypeError)]
)
def test_bad_init_log_variance_raises_naming_it(value, error):
    with pytest.raises(error, match="init_log_variance"):
        mt.UncertaintyWeighter(2, init_log_variance=value)


# -------------------------------------------------------------------------- in the objective
def make_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    names = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
    outputs = {
        "prediction": torch.randn(4, generator=g),
        "logits": torch.randn(4, 3, generator=g),
        "features": {n: torch.randn(4, 6, generator=g) for n in names},
        "unimodal": {n: torch.randn(4, generator=g) for n in names},
    }
    return outputs, {"M": torch.rand(4, generator=g) * 2 - 1}


def test_dmmsa_uncertainty_weighting_learns_through_the_objectives_parameters():
    objective = mt.MultiTaskObjective.dmmsa(binning=SIMS3, weighting="uncertainty")
    assert isinstance(objective.weighter, mt.UncertaintyWeighter)
    assert objective.weighter.task_names == ("Uni", "CL")
    parameters = dict(objective.named_parameters())
    assert list(parameters) == ["weighter.log_variances"]
    assert "weighter.log_variances" in objective.state_dict()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.5)
    result = objective(*make_batch(0))
    result.loss.backward()
    optimizer.step()
    terms = torch.stack([result.terms["Uni"], result.terms["CL"]])
    torch.testing.assert_close(objective.weighter.log_variances, -0.5 * (1.0 - terms))


def test_result_reports_the_regularizers_so_the_total_adds_up():
    objective = mt.MultiTaskObjective.dmmsa(
        binning=SIMS3, weighting=mt.UncertaintyWeighter(2, init_log_variance=0.4)
    )
    result = objective(*make_batch(1))
    assert set(result.regularizers) == {"Uni", "CL"}
    assert result.regularizers["CL"].item() == pytest.approx(0.4)
    assert result.weights["CL"].item() == pytest.approx(math.exp(-0.4))
    total = sum(result.weights[k] * result.terms[k] for k in result.terms)
    total = total + sum(result.regularizers.values())
    torch.testing.assert_close(result.loss.detach(), total)
    assert mt.MultiTaskObjective.dmmsa(binning=SIMS3)(*make_batch(1)).regularizers == {}
