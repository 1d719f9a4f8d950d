"""Properties of CoarseGrainedBinning: Tables 7 and 8 at every boundary, clipping, constraint."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt

# The tables exactly as the paper writes them (Tables 7 and 8), class 0 first.
TABLES = {
    ("sims", 2): "[-1, 0], (0, 1]",
    ("sims", 3): "[-1, -0.1], (-0.1, 0.1], (0.1, 1]",
    ("sims", 5): "[-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]",
    ("mosi", 2): "[-3, 0), [0, 3]",
    ("mosi", 3): "[-3, -0.5), [-0.5, 0.5), [0.5, 3]",
    ("mosi", 5): "[-3, -1.5), [-1.5, -0.5), [-0.5, 0.5), [0.5, 1.5), [1.5, 3]",
    ("mosi", 7): "[-3, -2.5), [-2.5, -1.5), [-1.5, -0.5), [-0.5, 0.5), [0.5, 1.5), [1.5, 2.5), "
    "[2.5, 3]",
}
TABLES.update({("mosei", k): text for (name, k), text in list(TABLES.items()) if name == "mosi"})
PRESETS = sorted(TABLES)
PRESET_IDS = [f"{dataset}{num_classes}" for dataset, num_classes in PRESETS]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def parse_table(text: str) -> list[tuple[str, float, float, str]]:
    """'[-1, 0], (0, 1]' -> [('[', -1.0, 0.0, ']'), ('(', 0.0, 1.0, ']')]."""
    found = re.findall(r"([\[(])\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*([\])])", text)
    return [(left, float(lo), float(hi), right) for left, lo, hi, right in found]


def in_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` as ``dtype`` holds it (edges are compared in the input's dtype)."""
    return torch.tensor(value, dtype=dtype).item()


def table_class(y: float, text: str, dtype: torch.dtype = torch.float64) -> int:
    """Plain-Python reading of a table: clip into the range, then find the interval."""
    intervals = parse_table(text)
    y = min(max(y, in_dtype(intervals[0][1], dtype)), in_dtype(intervals[-1][2], dtype))
    for k, (left, lo, hi, right) in enumerate(intervals):
        lo, hi = in_dtype(lo, dtype), in_dtype(hi, dtype)
        above = y >= lo if left == "[" else y > lo
        below = y <= hi if right == "]" else y < hi
        if above and below:
            return k
    raise AssertionError(f"{y} is in no interval of {text}")


def boundary_points(text: str, dtype: torch.dtype) -> torch.Tensor:
    """Every table value, and its neighbours one ulp below and above, in ``dtype``."""
    values = sorted({v for _, lo, hi, _ in parse_table(text) for v in (lo, hi)})
    points = torch.tensor(values, dtype=dtype)
    up = torch.nextafter(points, torch.full_like(points, math.inf))
    down = torch.nextafter(points, torch.full_like(points, -math.inf))
    return torch.cat([points, up, down])


# ---------------------------------------------------------------- Tables 7 and 8


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_preset_matches_table_at_every_boundary(preset, dtype):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    points = boundary_points(TABLES[preset], dtype)
    expected = [table_class(y, TABLES[preset], dtype) for y in points.tolist()]
    assert binning(points).tolist() == expected


@pytest.mark.parametrize(
    ("dataset", "num_classes", "values", "classes"),
    [
        ("sims", 2, [-1.0, 0.0, 1e-6, 1.0], [0, 0, 1, 1]),
        ("sims", 3, [-0.1, -0.09, 0.1, 0.11], [0, 1, 1, 2]),
        ("sims", 5, [-0.7, -0.1, 0.1, 0.7, 0.71], [0, 1, 2, 3, 4]),
        ("mosi", 2, [-1e-6, 0.0, 3.0], [0, 1, 1]),
        ("mosi", 3, [-0.51, -0.5, 0.49, 0.5], [0, 1, 1, 2]),
        ("mosei", 5, [-1.5, -0.5, 0.5, 1.5], [1, 2, 3, 4]),
        ("mosei", 7, [-3.0, -2.5, 2.49, 2.5, 3.0], [0, 1, 5, 6, 6]),
    ],
)
def test_sims_closed_right_and_mosi_closed_left(dataset, num_classes, values, classes):
    binning = mt.CoarseGrainedBinning.preset(dataset, num_classes)
    assert binning(torch.tensor(values)).tolist() == classes


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_preset_intervals_and_centers_are_the_tables(preset):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    intervals = [(lo, hi) for _, lo, hi, _ in parse_table(TABLES[preset])]
    assert binning.intervals == intervals
    assert binning.num_classes == len(intervals)
    assert binning.centers == pytest.approx([(lo + hi) / 2 for lo, hi in intervals])


def test_default_preset_has_three_classes():
    assert mt.CoarseGrainedBinning.preset("sims").num_classes == 3
    assert mt.CoarseGrainedBinning.preset("mosi").num_classes == 3


def test_dataset_name_is_case_insensitive():
    assert mt.CoarseGrainedBinning.preset("SIMS", 5).intervals == (
        mt.CoarseGrainedBinning.preset("sims", 5).intervals
    )


@given(
    preset=st.sampled_from(PRESETS),
    values=st.lists(
        st.one_of(
            st.floats(-4, 4, width=32),
            st.sampled_from([-3.0, -2.5, -1.5, -1.0, -0.7, -0.5, -0.1, 0.0, 0.1, 0.5, 0.7, 2.5]),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_equals_plain_python_table_lookup(preset, values):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    y = torch.tensor(values, dtype=torch.float32)
    expected = [table_class(v, TABLES[preset], torch.float32) for v in y.tolist()]
    assert binning(y).tolist() == expected


# ---------------------------------------------------------------- clipping, NaN, monotonicity


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_values_outside_the_range_are_clipped_into_end_classes(preset):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    low = torch.tensor(binning.low, dtype=torch.float64)
    high = torch.tensor(binning.high, dtype=torch.float64)
    below = [-math.inf, -1e30, binning.low - 0.5, torch.nextafter(low, -low.abs() - 1).item()]
    above = [torch.nextafter(high, high + 1).item(), binning.high + 0.5, 1e30, math.inf]
    y = torch.tensor(below + above, dtype=torch.float64)
    last = binning.num_classes - 1
    assert binning(y).tolist() == [0, 0, 0, 0, last, last, last, last]


def test_nan_is_rejected():
    binning = mt.CoarseGrainedBinning.preset("mosi")
    with pytest.raises(ValueError, match="y must not contain NaN, got 1"):
        binning(torch.tensor([0.0, math.nan, 1.0]))


@given(
    preset=st.sampled_from(PRESETS),
    pair=st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False)),
)
def test_class_is_monotone_in_the_intensity(preset, pair):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    y1, y2 = sorted(pair)
    classes = binning(torch.tensor([y1, y2], dtype=torch.float64))
    assert classes[0] <= classes[1]


# ---------------------------------------------------------------- shapes, dtypes, devices


@pytest.mark.parametrize("shape", [(), (0,), (7,), (2, 3, 4)])
def test_output_is_long_with_the_input_shape(shape):
    binning = mt.CoarseGrainedBinning.preset("sims", 5)
    classes = binning(torch.rand(shape) * 2 - 1)
    assert classes.dtype == torch.long
    assert classes.shape == torch.Size(shape)


def test_non_contiguous_input_equals_contiguous():
    binning = mt.CoarseGrainedBinning.preset("mosi", 7)
    torch.manual_seed(0)
    y = (torch.rand(6, 5) * 8 - 4).t()
    assert not y.is_contiguous()
    assert torch.equal(binning(y), binning(y.contiguous()))


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_input_device(device):
    binning = mt.CoarseGrainedBinning.preset("mosi", 5).to(device)
    y = torch.tensor([-2.0, -0.5, 0.5, 2.0], device=device)
    classes = binning(y)
    assert classes.device == y.device
    assert classes.tolist() == [0, 2, 3, 4]
    assert binning.edges.device == y.device


@pytest.mark.parametrize("device", DEVICES)
def test_input_on_another_device_than_the_module_still_works(device):
    binning = mt.CoarseGrainedBinning.preset("sims", 3)  # buffer on the CPU
    assert binning(torch.tensor([0.1, 0.2], device=device)).tolist() == [1, 2]


@pytest.mark.parametrize("cast", ["half", "bfloat16", "double"])
def test_casting_the_module_keeps_the_exact_edges(cast):
    # e.g. model.half() on a parent module must not move float32 boundaries.
    binning = getattr(mt.CoarseGrainedBinning.preset("sims", 3), cast)()
    y = torch.tensor([-0.1, 0.1], dtype=torch.float32)
    y = torch.cat([y, torch.nextafter(y, torch.full_like(y, math.inf))])
    assert binning(y).tolist() == [0, 1, 1, 2]


def test_edges_are_a_buffer_outside_the_state_dict():
    binning = mt.CoarseGrainedBinning.preset("mosi", 5)
    assert dict(binning.named_buffers())["edges"].tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert binning.state_dict() == {}


def test_repr_shows_the_configuration():
    assert repr(mt.CoarseGrainedBinning.preset("sims", 2)) == (
        "CoarseGrainedBinning(edges=[0.0], closed='right', low=-1.0, high=1.0)"
    )


# ---------------------------------------------------------------- custom edges


def test_custom_edges_follow_the_closed_side():
    right = mt.CoarseGrainedBinning([1.0, 2.0], closed="right", low=0.0, high=3.0)
    left = mt.CoarseGrainedBinning([1.0, 2.0], closed="left", low=0.0, high=3.0)
    y = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0])
    assert right(y).tolist() == [0, 0, 1, 1, 2]
    assert left(y).tolist() == [0, 1, 1, 2, 2]
    assert right.intervals == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert right.centers == [0.5, 1.5, 2.5]


@pytest.mark.parametrize(
    "edges", [torch.tensor([-0.5, 0.5]), np.array([-0.5, 0.5], dtype=np.float32), (-0.5, 0.5)]
)
def test_custom_edges_accept_any_sequence_of_reals(edges):
    binning = mt.CoarseGrainedBinning(edges, closed="left", low=-3, high=np.float64(3))
    assert binning.intervals == mt.CoarseGrainedBinning.preset("mosi", 3).intervals


@pytest.mark.parametrize(
    ("edges", "kwargs", "error", "message"),
    [
        ([0.5, 0.2], {}, ValueError, "strictly increasing"),
        ([0.2, 0.2], {}, ValueError, "strictly increasing"),
        ([math.nan], {}, ValueError, r"edges\[0\] must be finite"),
        ([0.0, math.inf], {}, ValueError, r"edges\[1\] must be finite"),
        ([-1.0, 0.0], {}, ValueError, r"strictly inside \(low, high\)"),
        ([0.0, 1.5], {}, ValueError, r"strictly inside \(low, high\)"),
        ([], {}, ValueError, "at least one edge"),
        ([0.0], {"low": 1.0, "high": 1.0}, ValueError, "low must be smaller than high"),
        ([0.0], {"low": -math.inf}, ValueError, "low must be finite"),
        ([0.0], {"closed": "both"}, ValueError, "closed must be one of 'right' | 'left'"),
        ("0.5", {}, TypeError, "edges must be a sequence"),
        (0.5, {}, TypeError, "edges must be a sequence"),
        ([True], {}, TypeError, r"edges\[0\] must be a real number"),
        (["a"], {}, TypeError, r"edges\[0\] must be a real number"),
        ([0.0], {"high": "1"}, TypeError, "high must be a real number"),
    ],
)
def test_bad_custom_edges_are_rejected(edges, kwargs, error, message):
    arguments = {"low": -1.0, "high": 1.0, **kwargs}
    with pytest.raises(error, match=message):
        mt.CoarseGrainedBinning(edges, **arguments)


@pytest.mark.parametrize(
    ("dataset", "num_classes", "error", "message"),
    [
        ("iemocap", 3, ValueError, "dataset must be one of 'sims' | 'mosi' | 'mosei', got 'ie"),
        ("sims", 7, ValueError, "num_classes for dataset 'sims' must be one of 2 | 3 | 5, got 7"),
        ("mosi", 4, ValueError, "num_classes for dataset 'mosi' must be one of 2 | 3 | 5 | 7"),
        ("mosei", 1, ValueError, "got 1"),
        ("mosi", 3.0, TypeError, "num_classes must be an int"),
        ("mosi", True, TypeError, "num_classes must be an int"),
        (None, 3, TypeError, "dataset must be a string"),
    ],
)
def test_bad_preset_is_rejected(dataset, num_classes, error, message):
    with pytest.raises(error, match=re.escape(message)):
        mt.CoarseGrainedBinning.preset(dataset, num_classes)


@pytest.mark.parametrize(
    ("y", "error", "message"),
    [
        (torch.tensor([0, 1]), TypeError, "y must be a floating-point tensor"),
        ([0.0, 1.0], TypeError, "y must be a torch.Tensor"),
    ],
)
def test_bad_input_is_rejected(y, error, message):
    with pytest.raises(error, match=message):
        mt.CoarseGrainedBinning.preset("sims")(y)


# ---------------------------------------------------------------- constrain (Fig. 6)


@given(
    preset=st.sampled_from(PRESETS),
    data=st.data(),
)
def test_constrain_puts_predictions_inside_the_class_interval(preset, data):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    size = data.draw(st.integers(1, 20))
    prediction = torch.tensor(
        data.draw(st.lists(st.floats(-10, 10), min_size=size, max_size=size)), dtype=torch.float64
    )
    classes = torch.tensor(
        data.draw(st.lists(st.integers(0, binning.num_classes - 1), min_size=size, max_size=size))
    )
    constrained = binning.constrain(prediction, classes)
    for value, k in zip(constrained.tolist(), classes.tolist()):
        lo, hi = binning.intervals[k]
        assert lo <= value <= hi


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("preset", [("sims", 5), ("mosi", 7)])
def test_constrain_leaves_predictions_inside_their_interval_untouched(preset, dtype):
    binning = mt.CoarseGrainedBinning.preset(*preset)
    torch.manual_seed(0)
    prediction = ((torch.rand(200, dtype=torch.float64) * 2 - 1) * binning.high).to(dtype)
    prediction = torch.cat([prediction, boundary_points(TABLES[preset], dtype)])
    prediction = prediction.clamp(binning.low, binning.high)
    assert torch.equal(binning.constrain(prediction, binning(prediction)), prediction)


def test_constrain_clamps_to_the_nearer_end():
    binning = mt.CoarseGrainedBinning.preset("mosi", 3)  # [-3, -0.5), [-0.5, 0.5), [0.5, 3]
    prediction = torch.tensor([-2.0, 2.0, 0.0, -9.0, 9.0])
    classes = torch.tensor([1, 1, 2, 0, 2])
    assert binning.constrain(prediction, classes).tolist() == [-0.5, 0.5, 0.5, -3.0, 3.0]


def test_constrain_with_logits_uses_the_argmax_class():
    binning = mt.CoarseGrainedBinning.preset("sims", 5)
    torch.manual_seed(0)
    prediction = torch.randn(4, 6)
    logits = torch.randn(4, 6, 5)
    assert torch.equal(
        binning.constrain(prediction, logits), binning.constrain(prediction, logits.argmax(-1))
    )


def test_constrain_passes_gradient_only_where_not_clamped():
    binning = mt.CoarseGrainedBinning.preset("mosi", 3)
    prediction = torch.tensor([0.0, 2.0], requires_grad=True)
    binning.constrain(prediction, torch.tensor([1, 1])).sum().backward()
    assert prediction.grad.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_constrain_keeps_dtype_and_shape(dtype):
    binning = mt.CoarseGrainedBinning.preset("mosi", 5)
    prediction = torch.zeros(2, 3, dtype=dtype)
    out = binning.constrain(prediction, torch.zeros(2, 3, dtype=torch.long))
    assert out.dtype == dtype
    assert out.shape == (2, 3)
    assert out.tolist() == [[-1.5] * 3] * 2


@pytest.mark.parametrize(
    ("prediction", "classes_or_logits", "error", "message"),
    [
        (torch.zeros(3), torch.zeros(3, 4), ValueError, r"logits must have shape \[3, 3\]"),
        (torch.zeros(3), torch.zeros(4, dtype=torch.long), ValueError, r"shape \[3\], got \[4\]"),
        (torch.zeros(2), torch.tensor([0, 3]), ValueError, r"class ids in \[0, 3\)"),
        (torch.zeros(2), torch.tensor([-1, 0]), ValueError, r"class ids in \[0, 3\)"),
        (torch.zeros(2), torch.tensor([True, False]), TypeError, "got dtype torch.bool"),
        (torch.tensor([math.nan, 0.0]), torch.tensor([0, 0]), ValueError, "prediction must not"),
        (torch.zeros(1), torch.tensor([[math.nan, 0, 0]]), ValueError, "classes_or_logits must"),
        (torch.zeros(2, dtype=torch.long), torch.tensor([0, 0]), TypeError, "prediction must be a"),
        (torch.zeros(2), [0, 0], TypeError, "classes_or_logits must be a torch.Tensor"),
    ],
)
def test_constrain_rejects_bad_inputs(prediction, classes_or_logits, error, message):
    with pytest.raises(error, match=message):
        mt.CoarseGrainedBinning.preset("mosi", 3).constrain(prediction, classes_or_logits)
