"""Properties of msa_metrics: identical to MMSA's MetricsTop, checked against scikit-learn."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from mtobjectives.metrics import msa_metrics

DATASETS = ["mosi", "mosei", "sims"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Ties and edges: .5 steps (np.round ties), SIMS/Table edges, zeros, out-of-range values.
SPECIAL = [
    0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.1, -0.1, 0.7, -0.7, 1.0, -1.0, 2.0, -2.0,
    3.0, -3.0, 3.5, -3.5, 5.0, -5.0, 1.01, -1.01, 0.05,
]  # fmt: skip


def mmsa_metrics(pred, target, dataset):
    """The reference: MMSA's MetricsTop (it warns for constant inputs; the warnings are noise)."""
    from MMSA.utils.metricsTop import MetricsTop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate = MetricsTop("regression").getMetics(dataset.upper())
        return evaluate(torch.as_tensor(pred), torch.as_tensor(target))


def is_constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values.flat[0]))


def assert_same_as_mmsa(pred, target, dataset):
    """Same keys in the same order and equal values; Corr is NaN where it is undefined."""
    ours = msa_metrics(pred, target, dataset)
    theirs = mmsa_metrics(pred, target, dataset)
    assert list(ours) == list(theirs)
    assert all(type(value) is float for value in ours.values())
    p = torch.as_tensor(pred).reshape(-1).numpy()
    t = torch.as_tensor(target).reshape(-1).numpy()
    if dataset == "sims":
        p, t = np.clip(p, -1.0, 1.0), np.clip(t, -1.0, 1.0)
    for key, value in ours.items():
        if key == "Corr" and (is_constant(p) or is_constant(t)):
            assert math.isnan(value)  # MMSA: NaN or rounding noise (documented)
            continue
        expected = float(theirs[key])
        assert value == expected or (math.isnan(value) and math.isnan(expected)), key


def has_non_zero_label(target, dataset) -> bool:
    return dataset == "sims" or bool(np.any(np.asarray(target, dtype=np.float64) != 0))


values_with_ties = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-8, 8).map(lambda k: k / 2),
    st.floats(-4, 4, width=32),
)


# ---------------------------------------------------------------- equality with MMSA


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dataset", DATASETS)
@given(data=st.data())
def test_equals_mmsa_on_random_predictions_with_ties(dataset, dtype, data):
    size = data.draw(st.integers(1, 40))
    pred = torch.tensor(data.draw(st.lists(values_with_ties, min_size=size, max_size=size)))
    target = torch.tensor(data.draw(st.lists(values_with_ties, min_size=size, max_size=size)))
    pred, target = pred.to(dtype), target.to(dtype)
    if has_non_zero_label(target, dataset):
        assert_same_as_mmsa(pred, target, dataset)
    else:
        with pytest.raises(IndexError):
            mmsa_metrics(pred, target, dataset)


def seeded_inputs(seed: int, size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as in the datasets (multiples of 0.2 or 1/3, zeros) and noisy predictions."""
    rng = np.random.default_rng(seed)
    target = np.round(rng.uniform(-3, 3, size) * 5) / 5
    target[rng.random(size) < 0.15] = 0.0
    target[0] = target[0] or 1.0  # at least one non-zero label (MMSA crashes without)
    pred = target + rng.normal(0, 0.8, size)
    ties = rng.random(size) < 0.3
    pred[ties] = np.round(pred[ties] * 2) / 2  # exact .5 steps
    edges = rng.random(size) < 0.1
    pred[edges] = rng.choice([-0.7, -0.1, 0.1, 0.7, -2.5, 2.5], int(edges.sum()))
    return torch.tensor(pred).to(dtype), torch.tensor(target).to(dtype)


@pytest.mark.parametrize("size", [2, 7, 160, 1000])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dataset", DATASETS)
def test_equals_mmsa_on_seeded_data(dataset, dtype, seed, size):
    pred, target = seeded_inputs(seed, size, dtype)
    scale = 1 / 3 if dataset == "sims" else 1.0  # SIMS labels live in [-1, 1], with outliers
    assert_same_as_mmsa(pred * scale, target * scale, dataset)


@pytest.mark.parametrize("dataset", DATASETS)
def test_equals_mmsa_with_mixed_dtypes(dataset):
    pred, target = seeded_inputs(0, 200, torch.float64)
    assert_same_as_mmsa(pred.float(), target, dataset)


def test_each_key_keeps_mmsas_rounding():
    # 1/160 = 0.00625: scikit-learn's Python floats round to 0.0063, NumPy's to 0.0062.
    target = torch.ones(160)
    pred = torch.tensor([1.0] + [-1.0] * 159)
    metrics = msa_metrics(pred, target, "mosi")
    assert metrics["Has0_acc_2"] == 0.0063
    assert metrics["Mult_acc_7"] == 0.0062
    assert_same_as_mmsa(pred, target, "mosi")


def test_sims_edges_are_compared_in_the_input_precision():
    # float32(0.1) is above float64(0.1); MMSA compares in float32, so a float32 0.1 stays
    # in the right-closed bin (-0.1, 0.1] while its float32 successor is above it.
    pred = torch.tensor([0.1, -0.1, 0.7, -0.7])
    target = torch.nextafter(pred, torch.full_like(pred, math.inf))
    metrics = msa_metrics(pred, target, "sims")
    assert metrics["Mult_acc_5"] == 0.0
    assert metrics["Mult_acc_3"] == 0.5
    assert_same_as_mmsa(pred, target, "sims")


# ---------------------------------------------------------------- where MMSA breaks


@pytest.mark.parametrize("dataset", DATASETS)
def test_constant_predictions_give_nan_corr_and_the_rest_as_mmsa(dataset):
    target = torch.tensor([-0.8, -0.2, 0.0, 0.3, 0.9])
    pred = torch.full((5,), 0.1)
    metrics = msa_metrics(pred, target, dataset)
    assert math.isnan(metrics["Corr"])
    assert_same_as_mmsa(pred, target, dataset)


def test_sims_predictions_constant_after_clipping_give_nan_corr():
    metrics = msa_metrics([1.5, 2.0, 3.0], [-0.5, 0.2, 0.9], "sims")
    assert math.isnan(metrics["Corr"])
    assert metrics["Mult_acc_2"] == 0.6667


@pytest.mark.parametrize("dataset", DATASETS)
def test_a_single_sample_works(dataset):
    metrics = msa_metrics([0.4], [0.6], dataset)
    assert math.isnan(metrics["Corr"])
    assert metrics["MAE"] == 0.2
    assert_same_as_mmsa(torch.tensor([0.4]), torch.tensor([0.6]), dataset)


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_no_non_zero_label_gives_nan_non0_metrics_where_mmsa_crashes(dataset):
    pred, target = torch.tensor([-1.0, 0.0, 1.0, 2.0]), torch.zeros(4)
    metrics = msa_metrics(pred, target, dataset)
    assert math.isnan(metrics["Non0_acc_2"])
    assert math.isnan(metrics["Non0_F1_score"])
    assert metrics["Has0_acc_2"] == 0.75
    assert metrics["MAE"] == 1.0
    with pytest.raises(IndexError):
        mmsa_metrics(pred, target, dataset)


# ---------------------------------------------------------------- unrounded vs scikit-learn


def sims_class(value: float, edges: tuple[float, ...]) -> int:
    """Right-closed bins of the CH-SIMS metrics (MMSA's, paper section 4.2), by a plain loop."""
    return sum(value > edge for edge in edges)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


@pytest.mark.parametrize("seed", range(3))
def test_unrounded_mosi_metrics_equal_scikit_learn(seed):
    pred, target = (x.numpy() for x in seeded_inputs(seed, 300, torch.float64))
    metrics = msa_metrics(pred, target, "mosi", decimals=None)
    non0 = target != 0
    expected = {
        "Has0_acc_2": accuracy_score(target >= 0, pred >= 0),
        "Has0_F1_score": f1_score(target >= 0, pred >= 0, average="weighted"),
        "Non0_acc_2": accuracy_score(target[non0] > 0, pred[non0] > 0),
        "Non0_F1_score": f1_score(target[non0] > 0, pred[non0] > 0, average="weighted"),
        "Mult_acc_5": accuracy_score(
            np.round(np.clip(target, -2, 2)).astype(int), np.round(np.clip(pred, -2, 2)).astype(int)
        ),
        "Mult_acc_7": accuracy_score(
            np.round(np.clip(target, -3, 3)).astype(int), np.round(np.clip(pred, -3, 3)).astype(int)
        ),
        "MAE": mean_absolute_error(target, pred),
        "Corr": pearson(pred, target),
    }
    assert metrics == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_unrounded_sims_metrics_equal_scikit_learn(seed):
    pred, target = (x.numpy() / 3 for x in seeded_inputs(seed, 300, torch.float64))
    metrics = msa_metrics(pred, target, "sims", decimals=None)
    p, t = np.clip(pred, -1, 1), np.clip(target, -1, 1)

    def classes(values, edges):
        return [sims_class(v, edges) for v in values]

    expected = {
        "Mult_acc_2": accuracy_score(classes(t, (0.0,)), classes(p, (0.0,))),
        "Mult_acc_3": accuracy_score(classes(t, (-0.1, 0.1)), classes(p, (-0.1, 0.1))),
        "Mult_acc_5": accuracy_score(
            classes(t, (-0.7, -0.1, 0.1, 0.7)), classes(p, (-0.7, -0.1, 0.1, 0.7))
        ),
        "F1_score": f1_score(classes(t, (0.0,)), classes(p, (0.0,)), average="weighted"),
        "MAE": mean_absolute_error(t, p),
        "Corr": pearson(p, t),
    }
    assert metrics == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dataset", DATASETS)
def test_decimals_rounds_every_value(dataset):
    pred, target = seeded_inputs(1, 97, torch.float64)
    for decimals in (0, 2, 6):
        metrics = msa_metrics(pred, target, dataset, decimals=decimals)
        unrounded = msa_metrics(pred, target, dataset, decimals=None)
        for key, value in metrics.items():
            assert value == pytest.approx(unrounded[key], abs=0.5 * 10**-decimals + 1e-12)
            assert value == round(value, decimals)


# ---------------------------------------------------------------- input forms


@pytest.mark.parametrize("dataset", DATASETS)
def test_tensor_numpy_and_list_inputs_agree(dataset):
    pred, target = seeded_inputs(2, 50, torch.float32)
    from_tensor = msa_metrics(pred, target, dataset)
    assert msa_metrics(pred.numpy(), target.numpy(), dataset) == from_tensor
    assert msa_metrics(pred[:, None], target.reshape(5, 10), dataset) == from_tensor
    assert msa_metrics(pred.requires_grad_(), target, dataset) == from_tensor
    as_double = msa_metrics(pred.double(), target.double(), dataset)
    assert msa_metrics(pred.tolist(), target.tolist(), dataset) == as_double


def test_bfloat16_is_read_as_float32():
    pred, target = (x.bfloat16() for x in seeded_inputs(3, 64, torch.float32))
    assert msa_metrics(pred, target, "mosi") == msa_metrics(pred.float(), target.float(), "mosi")


@given(
    values=st.lists(st.floats(-65504, 65504, width=16), min_size=2, max_size=20),
    dataset=st.sampled_from(["mosi", "sims"]),
)
def test_float16_mae_is_finite_and_exact_where_differences_overflow(values, dataset):
    """MMSA's mean in float16 overflows on differences beyond 65504 (``inf``, with a warning);
    the MAE is then the float64 mean of the float64 differences, without a warning."""
    pred = np.array(values, dtype=np.float16)
    target = -pred[::-1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mae = msa_metrics(pred, target, dataset, decimals=None)["MAE"]
    if dataset == "sims":  # SIMS clips both sides to [-1, 1] first
        pred, target = np.clip(pred, -1.0, 1.0), np.clip(target, -1.0, 1.0)
    with np.errstate(over="ignore"):
        in_float16 = np.mean(np.abs(pred - target))
    if np.isfinite(in_float16):  # MMSA's own value wherever it is finite
        assert mae == float(in_float16)
    else:
        assert mae == float(np.mean(np.abs(pred.astype(np.float64) - target.astype(np.float64))))


def test_integer_inputs_are_read_as_float64():
    pred, target = torch.tensor([-2, 0, 1, 3]), np.array([-1, 0, 2, 3])
    assert msa_metrics(pred, target, "mosei") == msa_metrics(
        pred.double(), target.astype(np.float64), "mosei"
    )


@pytest.mark.parametrize("device", DEVICES)
def test_tensors_on_any_device(device):
    pred, target = seeded_inputs(4, 30, torch.float32)
    expected = msa_metrics(pred, target, "mosi")
    assert msa_metrics(pred.to(device), target.to(device), "mosi") == expected


def test_dataset_name_is_case_insensitive():
    pred, target = seeded_inputs(5, 30, torch.float32)
    assert msa_metrics(pred, target, "SIMS") == msa_metrics(pred, target, "sims")


def test_library_does_not_import_scikit_learn():
    code = "import sys, mtobjectives.metrics; sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "error", "message"),
    [
        ([0.0, math.nan], [0.0, 1.0], {}, ValueError, "pred must be finite, got 1"),
        ([0.0, 1.0], [math.inf, 1.0], {}, ValueError, "target must be finite"),
        ([0.0, 1.0, 2.0], [0.0] * 4, {}, ValueError, "same number of elements, got 3 and 4"),
        ([], [], {}, ValueError, "at least one element"),
        ([0.0], [0.0], {"dataset": "iemocap"}, ValueError, "dataset must be one of"),
        ([0.0], [0.0], {"dataset": None}, TypeError, "dataset must be a string"),
        ([0.0], [0.0], {"decimals": -1}, ValueError, "decimals must be >= 0"),
        ([0.0], [0.0], {"decimals": 2.0}, TypeError, "decimals must be an int"),
        ([0.0], [0.0], {"decimals": True}, TypeError, "decimals must be an int"),
        (torch.tensor([True]), [0.0], {}, TypeError, "pred must hold real numbers"),
        ([0.0], ["a"], {}, TypeError, "target must hold real numbers"),
        ([0.0], [[0.0], [1.0, 2.0]], {}, TypeError, "target must be a tensor, array or sequence"),
        (np.array([1j]), [0.0], {}, TypeError, "pred must hold real numbers"),
        ({"a": 1}, [0.0], {}, TypeError, "pred must hold real numbers"),
    ],
)
def test_bad_inputs_are_rejected(pred, target, kwargs, error, message):
    arguments = {"dataset": "mosi", **kwargs}
    with pytest.raises(error, match=message):
        msa_metrics(pred, target, **arguments)
