"""examples/dmmsa/stats.py: the paired test, the bootstrap interval, the summary, table and figure.

SciPy (installed with scikit-learn) is the independent reference of the Wilcoxon test; the module
itself does not import it.
"""

from __future__ import annotations

import doctest
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dmmsa import stats

scipy_stats = pytest.importorskip("scipy.stats")

SEEDS = (1, 12, 123, 1234, 12345)


def scipy_wilcoxon(d: list[float], **kwargs) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scipy_stats.wilcoxon(np.asarray(d, dtype=np.float64), **kwargs)
    return float(result.statistic), float(result.pvalue)


def assert_same_test(ours: tuple[float, float], theirs: tuple[float, float]) -> None:
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12, abs=1e-12)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-9, abs=1e-12)


distinct_nonzero = st.lists(st.integers(1, 10_000), min_size=1, max_size=30, unique=True).flatmap(
    lambda magnitudes: st.lists(st.sampled_from([-1, 1]), min_size=len(magnitudes),
                                max_size=len(magnitudes)).map(
        lambda signs: [0.01 * s * m for s, m in zip(signs, magnitudes)]))
with_ties_and_zeros = st.lists(st.integers(-4, 4), min_size=1, max_size=30).map(
    lambda values: [0.25 * v for v in values])


# --- Wilcoxon signed-rank test ------------------------------------------------------------------

@given(distinct_nonzero)
def test_wilcoxon_without_ties_or_zeros_equals_scipys_exact_test(d):
    assert_same_test(stats.wilcoxon_signed_rank(d), scipy_wilcoxon(d))


def all_signs_p_value(d: list[float]) -> float:
    """Two-sided p of R+ over every one of the 2**n sign patterns of the non-zero differences."""
    nonzero = np.asarray([x for x in d if x != 0])
    ranks = scipy_stats.rankdata(np.abs(nonzero))  # average ranks, multiples of 1/2: exact sums
    signs = (np.arange(2**nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1
    r_plus = signs @ ranks
    observed = ranks[nonzero > 0].sum()
    return min(1.0, 2 * min(np.mean(r_plus <= observed), np.mean(r_plus >= observed)))


@given(st.lists(st.integers(-4, 4), min_size=1, max_size=16))
def test_wilcoxon_with_ties_and_zeros_equals_the_test_over_all_sign_patterns(values):
    d = [0.5 * v for v in values]
    assume(any(d))
    assert stats.wilcoxon_signed_rank(d)[1] == pytest.approx(all_signs_p_value(d), rel=1e-9)


@pytest.mark.parametrize("d", [[1.0, 1.0, -1.0, 2.0, 0.0, 3.0, 3.0],
                               [0.0, -0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 2.0],
                               [2.0, 2.0]])
def test_wilcoxon_with_ties_and_zeros_equals_scipys_permutation_test(d):
    # SciPy runs the permutation test over all 2**n signs for n <= 13 with ties or zeros
    assert_same_test(stats.wilcoxon_signed_rank(d), scipy_wilcoxon(d))


@given(with_ties_and_zeros, st.booleans())
def test_wilcoxon_normal_approximation_equals_scipys_asymptotic_test(d, continuity):
    assume(any(d))
    ours = stats.wilcoxon_signed_rank(d, method="approx", continuity=continuity)
    assert_same_test(ours, scipy_wilcoxon(d, method="asymptotic", correction=continuity))


def test_wilcoxon_auto_switches_to_the_normal_approximation_above_exact_max_n():
    d = list(np.random.default_rng(0).normal(0.2, 1.0, size=stats.EXACT_MAX_N + 10))
    assert stats.wilcoxon_signed_rank(d) == stats.wilcoxon_signed_rank(d, method="approx")
    assert_same_test(stats.wilcoxon_signed_rank(d, continuity=False), scipy_wilcoxon(d))
    assert stats.wilcoxon_signed_rank(d[:stats.EXACT_MAX_N]) == stats.wilcoxon_signed_rank(
        d[:stats.EXACT_MAX_N], method="exact")


@given(with_ties_and_zeros, st.floats(0.01, 100.0))
def test_wilcoxon_is_invariant_to_the_sign_and_the_scale_of_the_differences(d, scale):
    base = stats.wilcoxon_signed_rank(d)
    assert stats.wilcoxon_signed_rank([-x for x in d]) == base
    statistic, p = stats.wilcoxon_signed_rank([scale * x for x in d])
    assert statistic == base[0] and p == pytest.approx(base[1], rel=1e-12)


def test_wilcoxon_drops_zero_differences():
    assert stats.wilcoxon_signed_rank([0.0, 0.0, 1.0, 2.0, -0.5]) == (
        stats.wilcoxon_signed_rank([1.0, 2.0, -0.5]))
    assert stats.wilcoxon_signed_rank([0.0, 0.0]) == (0.0, 1.0)


def test_wilcoxon_of_six_positive_differences_has_p_one_in_thirty_two():
    assert stats.wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == (0.0, 2 / 2**6)


@pytest.mark.parametrize(("differences", "match"), [
    ([], "non-empty"), ([[1.0, 2.0]], "1-D"), ([1.0, float("nan")], "finite.*positions \\[1\\]"),
    ([float("inf")], "finite")])
def test_wilcoxon_refuses_empty_or_non_finite_input(differences, match):
    with pytest.raises(ValueError, match=match):
        stats.wilcoxon_signed_rank(differences)


def test_wilcoxon_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="method must be"):
        stats.wilcoxon_signed_rank([1.0], method="permutation")


# --- percentile bootstrap -----------------------------------------------------------------------

def coverage(draw, mean: float, repetitions: int, **kwargs) -> float:
    rng = np.random.default_rng(2026)
    hits = 0
    for rep in range(repetitions):
        data, groups = draw(rng)
        low, high = stats.paired_bootstrap_ci(data, resamples=1000, seed=rep, groups=groups,
                                              **kwargs)
        hits += low <= mean <= high
    return hits / repetitions


def test_bootstrap_interval_covers_a_normal_mean_about_95_percent_of_the_time():
    assert 0.89 <= coverage(lambda rng: (rng.normal(0.3, 1.0, 40), None), 0.3, 300) <= 0.99


def test_bootstrap_interval_covers_a_skewed_mean_roughly_and_less_at_lower_confidence():
    def draw(rng):
        return rng.exponential(1.0, 40), None
    assert 0.85 <= coverage(draw, 1.0, 300) <= 0.99
    assert 0.70 <= coverage(draw, 1.0, 300, confidence=0.8) <= 0.88


def test_cluster_bootstrap_keeps_its_coverage_where_resampling_pairs_does_not():
    def draw(rng, clustered):  # 30 seeds x 4 folds, most of the variance shared within a seed
        per_seed = rng.normal(0.0, 1.0, 30)
        data = np.repeat(per_seed, 4) + rng.normal(0.0, 0.3, 120)
        return data, np.repeat(np.arange(30), 4) if clustered else None
    assert coverage(lambda rng: draw(rng, True), 0.0, 200) >= 0.88
    assert coverage(lambda rng: draw(rng, False), 0.0, 200) <= 0.75


@given(st.floats(-5, 5), st.integers(1, 40), st.booleans())
def test_bootstrap_interval_of_a_constant_input_is_exactly_that_constant(value, n, clustered):
    groups = [i % 3 for i in range(n)] if clustered else None
    assert stats.paired_bootstrap_ci([value] * n, resamples=50, groups=groups) == (value, value)


@given(st.lists(st.floats(-2, 2), min_size=1, max_size=20), st.floats(-1, 1))
def test_bootstrap_interval_of_symmetric_data_contains_its_mean(half, center):
    data = [center + x for x in half] + [center - x for x in half]
    low, high = stats.paired_bootstrap_ci(data, resamples=2000)
    assert low - 1e-12 <= float(np.mean(data)) <= high + 1e-12


def test_bootstrap_interval_shrinks_with_more_pairs_and_more_clusters():
    rng = np.random.default_rng(7)
    small, large = rng.normal(0.0, 1.0, 20), rng.normal(0.0, 1.0, 500)
    width = [high - low for low, high in (stats.paired_bootstrap_ci(small),
                                          stats.paired_bootstrap_ci(large))]
    assert width[1] < width[0] / 3  # ~ sqrt(500 / 20) = 5
    few, many = (  # k seeds x 4 folds, the seed effect shared by its folds
        stats.paired_bootstrap_ci(np.repeat(rng.normal(0.0, 1.0, k), 4)
                                  + rng.normal(0.0, 0.3, 4 * k), groups=np.arange(4 * k) // 4)
        for k in (5, 50))
    assert many[1] - many[0] < (few[1] - few[0]) / 1.5  # ~ sqrt(50 / 5) = 3.2


def test_bootstrap_is_deterministic_for_a_seed_and_singleton_clusters_equal_no_clusters():
    data = list(np.random.default_rng(3).normal(0.0, 1.0, 25))
    assert stats.paired_bootstrap_ci(data, seed=5) == stats.paired_bootstrap_ci(data, seed=5)
    assert stats.paired_bootstrap_ci(data, seed=5) != stats.paired_bootstrap_ci(data, seed=6)
    assert stats.paired_bootstrap_ci(data, groups=range(25)) == stats.paired_bootstrap_ci(data)


def test_cluster_bootstrap_draws_whole_clusters():
    # two clusters with means 1.1 and 3.1: every replicate's mean is 1.1, 2.1 or 3.1
    low, high = stats.paired_bootstrap_ci([1.0, 1.2, 3.0, 3.2], groups=["a", "a", "b", "b"],
                                          confidence=0.5, resamples=4000)
    assert (low, high) == pytest.approx((2.1, 2.1))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"confidence": 0.0}, "confidence must lie in \\(0, 1\\), got 0.0"),
    ({"confidence": 1.5}, "confidence"), ({"resamples": 0}, "resamples must be an integer"),
    ({"resamples": 2.5}, "resamples"), ({"resamples": True}, "resamples"),
    ({"groups": [1, 2]}, "groups must have one label per difference \\(3\\), got 2")])
def test_bootstrap_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_bootstrap_ci([0.1, 0.2, 0.3], **kwargs)


@pytest.mark.parametrize("differences", [[], [0.1, float("nan")]])
def test_bootstrap_refuses_empty_or_nan_input(differences):
    with pytest.raises(ValueError, match="differences must"):
        stats.paired_bootstrap_ci(differences)


# --- paired summary -----------------------------------------------------------------------------

def grid(offset: float, rng: np.random.Generator, folds: int = 4,
         seeds: tuple[int, ...] = SEEDS) -> dict[tuple[int, int], dict[str, float]]:
    return {(f, s): {"MAE": 0.8 + offset + 0.05 * rng.standard_normal(),
                     "Corr": 0.6 - offset + 0.03 * rng.standard_normal()}
            for f in range(folds) for s in seeds}


def test_summary_equals_a_hand_computation_over_the_fold_by_seed_grid():
    rng = np.random.default_rng(11)
    base, variant = grid(0.0, rng), grid(-0.02, rng)
    s = stats.paired_summary(base, variant, "MAE", lower_is_better=True, resamples=500, seed=3)
    deltas = np.array([[variant[f, seed]["MAE"] - base[f, seed]["MAE"] for f in range(4)]
                       for seed in SEEDS])  # [seed, fold]
    assert (s.n_pairs, s.n_seeds) == (20, 5)
    assert s.mean == pytest.approx(deltas.mean())
    assert list(s.per_seed) == list(SEEDS)
    assert list(s.per_seed.values()) == pytest.approx(deltas.mean(axis=1))
    assert s.seed_std == pytest.approx(deltas.mean(axis=1).std(ddof=1))
    assert s.better == int(np.sum(deltas.mean(axis=1) < 0))
    assert (s.statistic, s.p_value) == pytest.approx(scipy_wilcoxon(deltas.ravel()))
    assert s.ci == stats.paired_bootstrap_ci(deltas.ravel(), resamples=500, seed=3,
                                             groups=np.repeat(SEEDS, 4))


def test_summary_reads_numbers_or_metrics_dicts_alike():
    rng = np.random.default_rng(2)
    base, variant = grid(0.0, rng), grid(0.01, rng)
    as_numbers = [{k: v["Corr"] for k, v in row.items()} for row in (base, variant)]
    assert (stats.paired_summary(*as_numbers, "Corr", False, resamples=100)
            == stats.paired_summary(base, variant, "Corr", False, resamples=100))


def test_swapping_the_rows_negates_the_differences_and_flips_better():
    rng = np.random.default_rng(5)
    base, variant = grid(0.0, rng), grid(0.0, rng)
    one = stats.paired_summary(base, variant, "Corr", lower_is_better=False)
    two = stats.paired_summary(variant, base, "Corr", lower_is_better=False)
    assert two.mean == pytest.approx(-one.mean) and two.p_value == one.p_value
    assert two.ci == pytest.approx((-one.ci[1], -one.ci[0]))
    assert two.better == one.n_seeds - one.better
    lower = stats.paired_summary(base, variant, "Corr", lower_is_better=True)
    assert lower.better == one.n_seeds - one.better


def test_a_seed_without_a_difference_is_not_counted_better():
    base = {(0, 1): 0.5, (0, 2): 0.5, (0, 3): 0.5}
    variant = {(0, 1): 0.4, (0, 2): 0.5, (0, 3): 0.625}
    for lower_is_better in (True, False):
        assert stats.paired_summary(base, variant, "MAE", lower_is_better).better == 1


def test_summary_of_one_seed_has_no_seed_spread_and_the_table_says_so():
    rng = np.random.default_rng(1)
    s = stats.paired_summary(grid(0.0, rng, seeds=(1,)), grid(0.0, rng, seeds=(1,)), "MAE", True)
    assert s.n_seeds == 1 and math.isnan(s.seed_std)
    assert " ± — |" in stats.paired_table_markdown({"x": [s]})[2]


def test_summary_names_the_pairs_one_row_lacks():
    base = {(0, 1): 0.5, (1, 1): 0.6, (0, 2): 0.5}
    variant = {(0, 1): 0.4, (1, 1): 0.6, (2, 9): 0.5}
    with pytest.raises(ValueError, match=r"variant_runs lacks \[\(0, 2\)\], reference_runs "
                                         r"lacks \[\(2, 9\)\]"):
        stats.paired_summary(base, variant, "MAE", True)


@pytest.mark.parametrize(("reference", "variant", "match"), [
    ({}, {}, "at least one"), ({(0, 1): {"MAE": 0.5}}, {(0, 1): {"Corr": 0.5}}, "no metric 'MAE'"),
    ({(0, 1): 0.5}, {(0, 1): float("nan")}, "must be finite")])
def test_summary_refuses_empty_rows_missing_metrics_and_nan(reference, variant, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_summary(reference, variant, "MAE", True)


def test_summary_round_trips_through_json():
    rng = np.random.default_rng(4)
    s = stats.paired_summary(grid(0.0, rng), grid(0.0, rng), "MAE", True, resamples=100)
    data = json.loads(json.dumps(s.to_json()))
    assert data["n_pairs"] == 20 and data["ci"] == list(s.ci)
    assert {(f, seed): v for f, seed, v in data["differences"]} == s.differences


# --- table and figure ---------------------------------------------------------------------------

def summaries(rows: int = 2, seeds: tuple[int, ...] = SEEDS) -> dict[str, list]:
    rng = np.random.default_rng(0)
    base = grid(0.0, rng, seeds=seeds)
    out = {}
    for row in range(rows):
        variant = grid(0.01 * row, rng, seeds=seeds)
        out[f"variant {row}"] = [stats.paired_summary(base, variant, "MAE", True, resamples=200),
                                 stats.paired_summary(base, variant, "Corr", False,
                                                      resamples=200)]
    return out


def test_table_has_a_row_per_variant_with_every_column_filled():
    rows = summaries(3)
    lines = stats.paired_table_markdown(rows)
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| objective | seeds | pairs | Δ MAE | 95% CI | p (MAE) |")
    assert {line.count("|") for line in lines} == {3 + 8 + 1}
    s = rows["variant 1"][1]
    assert lines[3].startswith("| variant 1 | 5 | 20 | ")
    assert f"{s.mean:+.3f} ± {s.seed_std:.3f}" in lines[3]
    assert f"[{s.ci[0]:+.3f}, {s.ci[1]:+.3f}]" in lines[3] and f"{s.better}/5" in lines[3]
    assert "Wilcoxon" in stats.paired_table_note() and "resampling whole seeds" in (
        stats.paired_table_note())


def test_table_and_figure_refuse_empty_or_inconsistent_summaries(tmp_path):
    rows = summaries(2)
    bad = {"a": rows["variant 0"], "b": rows["variant 1"][::-1]}
    for call in (stats.paired_table_markdown,
                 lambda s: stats.plot_paired_differences(s, tmp_path / "x.png")):
        with pytest.raises(ValueError, match="at least one variant"):
            call({})
        with pytest.raises(ValueError, match="summaries\\['a'\\] is empty"):
            call({"a": []})
        with pytest.raises(ValueError, match="summaries\\['b'\\] has \\['Corr', 'MAE'\\]"):
            call(bad)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(("rows", "seeds"), [(3, SEEDS), (1, (1,))])
def test_figure_is_written_as_a_png(tmp_path, rows, seeds):
    path = stats.plot_paired_differences(summaries(rows, seeds), tmp_path / "figs" / "paired.png",
                                         title="paired differences")
    assert path == tmp_path / "figs" / "paired.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_docstring_examples_run():
    result = doctest.testmod(stats, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5 and result.failed == 0
