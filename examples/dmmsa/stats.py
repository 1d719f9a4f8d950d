"""Paired comparisons of two objectives run on the same folds and seeds.

``evaluate_real.py`` trains every objective of a table on the same fold × seed grid, each fold and
seed from the same pre-trained encoders, so two rows of a table are *paired*: the difference
Δ = variant − reference of one (fold, seed) pair removes what that fold and seed share. This module
turns the pairs of two rows into the numbers a table and a figure show:

- :func:`wilcoxon_signed_rank`: the two-sided Wilcoxon signed-rank test of "the differences are
  symmetric about zero", exact for up to :data:`EXACT_MAX_N` non-zero differences.
- :func:`paired_bootstrap_ci`: a percentile bootstrap interval of the mean difference, resampling
  single pairs or, with ``groups=``, whole clusters of pairs.
- :func:`paired_summary`: both, for one metric of two rows given per (fold, seed); the tables
  resample *seeds* (the clusters), because the fold × seed pairs of one seed are not independent
  replicates, and count the seeds in which the variant is better.
- :func:`paired_table_markdown` and :func:`plot_paired_differences`: the table rows and the figure.

A table's paired section, from each row's test metrics per run (``results.json``'s ``"test"``)::

    runs = {"baseline": {(fold, seed): test, ...}, "dmmsa": {...}, ...}
    summaries = {name: [paired_summary(runs["baseline"], row, "MAE", lower_is_better=True),
                        paired_summary(runs["baseline"], row, "Corr", lower_is_better=False)]
                 for name, row in runs.items() if name != "baseline"}
    lines = paired_table_markdown(summaries) + ["", paired_table_note("baseline")]
    plot_paired_differences(summaries, out / "paired_differences.png")

Rows must hold the same (fold, seed) pairs; to pair only the runs both have, pass both restricted
to ``row.keys() & runs["baseline"].keys()``.

NumPy only; matplotlib is imported by the plotting function alone.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dmmsa.checks import is_int

__all__ = ["EXACT_MAX_N", "PairedSummary", "paired_bootstrap_ci", "paired_summary",
           "paired_table_markdown", "paired_table_note", "plot_paired_differences",
           "wilcoxon_signed_rank"]

EXACT_MAX_N = 50
"""Up to this many non-zero differences ``method="auto"`` computes the exact null distribution."""

RunValues = Mapping[tuple[int, int], float | Mapping[str, float]]
"""One row of a table: ``{(fold, seed): value}``, a value being a number or a metrics dict."""


def _differences(differences: Sequence[float] | np.ndarray, name: str = "differences"
                 ) -> np.ndarray:
    """``differences`` as a finite, non-empty 1-D float64 array, or a ValueError naming it."""
    array = np.asarray(differences, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape "
                         f"{array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array)).tolist()
        raise ValueError(f"{name} must be finite, got NaN or inf at positions {bad}")
    return array


def _doubled_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Twice the average ranks of ``values`` (integers), and the size of every tie group."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, values.size])
    # a tie group at 1-based sorted positions i..j has the average rank (i + j) / 2
    doubled = np.repeat(2 * starts + sizes + 1, sizes)
    ranks = np.empty_like(doubled)
    ranks[order] = doubled
    return ranks, sizes


def _exact_p_value(doubled_ranks: np.ndarray, doubled_r_plus: int) -> float:
    """Two-sided p of R+ under random signs: the distribution of the signed-rank sum by DP."""
    pmf = np.zeros(int(doubled_ranks.sum()) + 1)
    pmf[0] = 1.0
    for rank in doubled_ranks.tolist():  # each rank joins R+ with probability 1/2
        shifted = np.zeros_like(pmf)
        shifted[rank:] = pmf[:-rank]
        pmf = 0.5 * (pmf + shifted)
    at_most = pmf[:doubled_r_plus + 1].sum()
    at_least = pmf[doubled_r_plus:].sum()
    return float(min(1.0, 2.0 * min(at_most, at_least)))


def _normal_p_value(doubled_r_plus: int, n: int, tie_sizes: np.ndarray,
                    continuity: bool) -> float:
    """Two-sided p of R+ by the normal approximation with the tie (and continuity) correction."""
    mean = n * (n + 1) / 4
    variance = (n * (n + 1) * (2 * n + 1) - float(np.sum(tie_sizes**3 - tie_sizes)) / 2) / 24
    deviation = doubled_r_plus / 2 - mean
    if continuity:
        deviation -= 0.5 * math.copysign(1.0, deviation) if deviation else 0.0
    z = deviation / math.sqrt(variance)
    return float(min(1.0, math.erfc(abs(z) / math.sqrt(2))))


def wilcoxon_signed_rank(differences: Sequence[float] | np.ndarray, *,
                         method: Literal["auto", "exact", "approx"] = "auto",
                         continuity: bool = True) -> tuple[float, float]:
    r"""Two-sided Wilcoxon signed-rank test of paired differences (Wilcoxon, 1945).

    The null hypothesis is that the differences :math:`d_i` are symmetric about zero. Zero
    differences are dropped first (Wilcoxon's rule, SciPy's ``zero_method="wilcox"``); the
    :math:`n` others are ranked by :math:`|d_i|` (average ranks for ties) and

    .. math:: R^+ = \sum_{d_i > 0} \operatorname{rank}(|d_i|), \qquad
              R^- = \sum_{d_i < 0} \operatorname{rank}(|d_i|) = \frac{n(n+1)}{2} - R^+ .

    Under the null every sign is + or − with probability 1/2, independently.

    - ``method="exact"``: the p-value from that distribution of :math:`R^+` given the observed
      ranks, computed by dynamic programming over rank sums (with ties this is the exact
      permutation test, as SciPy's ``wilcoxon`` runs for small samples with ties);
      :math:`p = \min(1, 2 \min(P(R^+ \le r), P(R^+ \ge r)))`.
    - ``method="approx"``: the normal approximation, mean :math:`n(n+1)/4`, variance
      :math:`n(n+1)(2n+1)/24 - \sum_t (t^3 - t)/48` over the tie groups of size :math:`t`, and
      with ``continuity`` the deviation shrunk by 1/2 (SciPy's ``correction=True``).
    - ``method="auto"``: exact for at most :data:`EXACT_MAX_N` non-zero differences.

    Args:
        differences: paired differences, shape ``[N]``, finite, ``N >= 1``.
        method: ``"auto"``, ``"exact"`` or ``"approx"``.
        continuity: continuity correction of the normal approximation.

    Returns:
        ``(statistic, p_value)``: :math:`\min(R^+, R^-)`, as SciPy reports it for a two-sided
        test, and the two-sided p-value. If every difference is zero, ``(0.0, 1.0)``.

    Raises:
        ValueError: on empty or non-finite input or an unknown ``method``.

    Example:
        >>> wilcoxon_signed_rank([1.0, 2.0, 3.0, 4.0, 5.0])  # all positive: p = 2 / 2**5
        (0.0, 0.0625)
        >>> wilcoxon_signed_rank([0.0, -1.0, 2.0, -3.0, 4.0])
        (4.0, 0.875)
    """
    if method not in ("auto", "exact", "approx"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approx', got {method!r}")
    d = _differences(differences)
    d = d[d != 0]
    if d.size == 0:
        return 0.0, 1.0
    ranks, tie_sizes = _doubled_ranks(np.abs(d))
    r_plus = int(ranks[d > 0].sum())
    statistic = min(r_plus, int(ranks.sum()) - r_plus) / 2
    if method == "exact" or (method == "auto" and d.size <= EXACT_MAX_N):
        return statistic, _exact_p_value(ranks, r_plus)
    return statistic, _normal_p_value(r_plus, d.size, tie_sizes, continuity)


def paired_bootstrap_ci(differences: Sequence[float] | np.ndarray, *, confidence: float = 0.95,
                        resamples: int = 10_000, seed: int = 0,
                        groups: Sequence[Hashable] | None = None) -> tuple[float, float]:
    r"""Percentile bootstrap interval of the mean paired difference (Efron and Tibshirani, 1993).

    Each of ``resamples`` replicates draws, with replacement, as many units as there are and
    takes the mean difference of all the pairs drawn; the interval is the
    :math:`(1 - c)/2` and :math:`(1 + c)/2` quantiles of these means for ``confidence`` c.
    Without ``groups`` a unit is one pair. With ``groups`` (one label per difference) a unit is a
    cluster, all the pairs of one label drawn together: the cluster bootstrap, for pairs that
    are not independent, such as the folds of one seed. ``paired_summary`` clusters by seed.
    With few clusters (5 seeds) the percentile interval is known to be too narrow; read it as a
    description of the seed spread, not as an exact 95 % guarantee; one cluster gives an
    interval of zero width.

    The means are computed relative to the first difference, so a constant input gives exactly
    its value as both ends. The same arguments give the same interval (NumPy's
    ``default_rng(seed)``).

    Args:
        differences: paired differences, shape ``[N]``, finite, ``N >= 1``.
        confidence: the coverage aimed at, in (0, 1).
        resamples: number of bootstrap replicates, ``>= 1``.
        seed: seed of the generator.
        groups: optional cluster label of each difference, length ``N``.

    Returns:
        ``(low, high)``.

    Example:
        >>> paired_bootstrap_ci([0.5, 0.5, 0.5])
        (0.5, 0.5)
        >>> low, high = paired_bootstrap_ci([0.1, 0.3, -0.1, 0.2, 0.4, 0.0], resamples=2000)
        >>> bool(low < 0.15 < high)
        True
        >>> paired_bootstrap_ci([1.0, 1.2, 3.0, 3.2], groups=["s1", "s1", "s2", "s2"],
        ...                     resamples=200)  # two seeds: means 1.1, 2.1 or 3.1
        (1.1, 3.1)
    """
    d = _differences(differences)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if not is_int(resamples) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if groups is None:
        sums, counts = d - d[0], np.ones_like(d)
    else:
        if len(groups) != d.size:
            raise ValueError(f"groups must have one label per difference ({d.size}), got "
                             f"{len(groups)}")
        labels = list(dict.fromkeys(groups))
        index = np.array([labels.index(g) for g in groups])
        sums = np.bincount(index, weights=d - d[0], minlength=len(labels))
        counts = np.bincount(index, minlength=len(labels)).astype(np.float64)
    rng = np.random.default_rng(seed)
    units = sums.size
    block = max(1, 2**20 // units)  # at most ~8 MB of indices at a time
    means = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        draw = rng.integers(0, units, size=(stop - start, units))
        means[start:stop] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(d[0] + low), float(d[0] + high)


@dataclass(frozen=True)
class PairedSummary:
    """The paired comparison of one metric of two rows (variant − reference).

    Attributes:
        metric: the metric's name, as in the tables (``"MAE"``, ``"Corr"``).
        lower_is_better: whether a lower value of the metric is better.
        differences: variant − reference per ``(fold, seed)`` pair.
        per_seed: per seed, the mean difference over its folds.
        mean: mean difference over the pairs (the mean of ``per_seed`` when every seed has the
            same folds).
        seed_std: sample standard deviation of ``per_seed`` (NaN with one seed).
        better: seeds whose mean difference is better (below zero if ``lower_is_better``, else
            above; a zero counts as not better).
        statistic: Wilcoxon's :math:`\\min(R^+, R^-)` over the pairs.
        p_value: its two-sided p-value (pairs treated as independent).
        ci: bootstrap interval of ``mean`` resampling seeds.
        confidence: the interval's confidence level.
    """

    metric: str
    lower_is_better: bool
    differences: dict[tuple[int, int], float]
    per_seed: dict[int, float]
    mean: float
    seed_std: float
    better: int
    statistic: float
    p_value: float
    ci: tuple[float, float]
    confidence: float

    @property
    def n_pairs(self) -> int:
        """Number of (fold, seed) pairs."""
        return len(self.differences)

    @property
    def n_seeds(self) -> int:
        """Number of seeds."""
        return len(self.per_seed)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the pairs as ``[fold, seed, difference]`` lists)."""
        return {"metric": self.metric, "lower_is_better": self.lower_is_better,
                "n_pairs": self.n_pairs, "n_seeds": self.n_seeds, "mean": self.mean,
                "seed_std": self.seed_std, "better": self.better, "statistic": self.statistic,
                "p_value": self.p_value, "ci": list(self.ci), "confidence": self.confidence,
                "per_seed": {str(s): v for s, v in self.per_seed.items()},
                "differences": [[f, s, v] for (f, s), v in self.differences.items()]}


def _run_value(value: float | Mapping[str, float], metric: str, where: str) -> float:
    if isinstance(value, Mapping):
        if metric not in value:
            raise ValueError(f"{where} has no metric {metric!r}; it has {sorted(value)}")
        value = value[metric]
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{where}[{metric!r}] must be finite, got {result}")
    return result


def paired_summary(reference_runs: RunValues, variant_runs: RunValues, metric: str,
                   lower_is_better: bool, *, confidence: float = 0.95, resamples: int = 10_000,
                   seed: int = 0) -> PairedSummary:
    """Pair two rows run by run and summarise the differences of one metric.

    Args:
        reference_runs: the reference row (the baseline): ``{(fold, seed): value}``, where a
            value is the metric's number or a run's metrics dict (``results.json``'s ``"test"``)
            holding ``metric``.
        variant_runs: the other row, over exactly the same ``(fold, seed)`` pairs.
        metric: the metric's name (the key read from metrics dicts, and the label).
        lower_is_better: whether a lower value is better (``True`` for MAE, ``False`` for Corr).
        confidence, resamples, seed: of :func:`paired_bootstrap_ci`, clustered by seed.

    Returns:
        A :class:`PairedSummary` of variant − reference: the Wilcoxon test over the fold × seed
        pairs, the bootstrap interval resampling seeds, and the count of better seeds.

    Raises:
        ValueError: if the rows are empty or do not have the same pairs (naming those missing).

    Example:
        >>> base = {(0, 1): 0.80, (1, 1): 0.90, (0, 2): 0.82, (1, 2): 0.88}
        >>> new = {(0, 1): 0.78, (1, 1): 0.86, (0, 2): 0.81, (1, 2): 0.87}
        >>> s = paired_summary(base, new, "MAE", lower_is_better=True, resamples=1000)
        >>> s.n_pairs, s.n_seeds, round(s.mean, 4), s.better
        (4, 2, -0.02, 2)
        >>> {seed: round(delta, 3) for seed, delta in s.per_seed.items()}
        {1: -0.03, 2: -0.01}
        >>> [round(end, 3) for end in s.ci], s.p_value  # 2 seeds: the interval spans their means
        ([-0.03, -0.01], 0.125)
    """
    if not reference_runs:
        raise ValueError("reference_runs must hold at least one (fold, seed) pair, got none")
    missing = sorted(set(reference_runs) - set(variant_runs))
    extra = sorted(set(variant_runs) - set(reference_runs))
    if missing or extra:
        raise ValueError("reference_runs and variant_runs must have the same (fold, seed) pairs; "
                         f"variant_runs lacks {missing}, reference_runs lacks {extra}")
    pairs = sorted(reference_runs, key=lambda pair: (pair[1], pair[0]))
    differences = {
        pair: _run_value(variant_runs[pair], metric, f"variant_runs[{pair}]")
        - _run_value(reference_runs[pair], metric, f"reference_runs[{pair}]")
        for pair in pairs}
    seeds = [s for _, s in pairs]
    by_seed: dict[int, list[float]] = {}
    for (_, s), delta in differences.items():
        by_seed.setdefault(s, []).append(delta)
    per_seed = {s: float(np.mean(v)) for s, v in by_seed.items()}
    values = np.array(list(per_seed.values()))
    seed_std = float(values.std(ddof=1)) if values.size > 1 else math.nan
    better = int(np.sum(values < 0 if lower_is_better else values > 0))
    deltas = list(differences.values())
    statistic, p_value = wilcoxon_signed_rank(deltas)
    ci = paired_bootstrap_ci(deltas, confidence=confidence, resamples=resamples, seed=seed,
                             groups=seeds)
    return PairedSummary(metric=metric, lower_is_better=lower_is_better,
                         differences=differences, per_seed=per_seed,
                         mean=float(np.mean(deltas)), seed_std=seed_std, better=better,
                         statistic=statistic, p_value=p_value, ci=ci, confidence=confidence)


def _metric_order(summaries: Mapping[str, Sequence[PairedSummary]]) -> list[str]:
    """The metrics every variant has, in order; a ValueError on empty or inconsistent input."""
    if not summaries:
        raise ValueError("summaries must map at least one variant to its PairedSummary list, "
                         "got none")
    metrics: list[str] | None = None
    for variant, rows in summaries.items():
        names = [s.metric for s in rows]
        if not names:
            raise ValueError(f"summaries[{variant!r}] is empty")
        if metrics is None:
            metrics = names
        elif names != metrics:
            raise ValueError(f"every variant must have the metrics {metrics} in that order; "
                             f"summaries[{variant!r}] has {names}")
    assert metrics is not None
    return metrics


def _format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired_table_markdown(summaries: Mapping[str, Sequence[PairedSummary]], *,
                          digits: int = 3) -> list[str]:
    """Markdown rows of the paired table: per metric Δ ± seed std, interval, p, better k/n.

    Args:
        summaries: ``{row label: [PairedSummary per metric]}``, the same metrics in every row.
        digits: decimals of the differences.

    Returns:
        The header, the separator and one line per row (join with newlines);
        :func:`paired_table_note` is the sentence that explains the columns.

    Example:
        >>> base = {(0, 1): 0.80, (0, 2): 0.82, (0, 3): 0.84}
        >>> new = {(0, 1): 0.75, (0, 2): 0.80, (0, 3): 0.83}
        >>> s = paired_summary(base, new, "MAE", lower_is_better=True, resamples=100)
        >>> print("\\n".join(paired_table_markdown({"variant": [s]})))
        | objective | seeds | pairs | Δ MAE | 95% CI | p (MAE) | better (MAE) |
        |---|---|---|---|---|---|---|
        | variant | 3 | 3 | -0.027 ± 0.021 | [-0.050, -0.010] | 0.250 | 3/3 |
    """
    metrics = _metric_order(summaries)
    header = "| objective | seeds | pairs |"
    for s in next(iter(summaries.values())):
        header += (f" Δ {s.metric} | {round(100 * s.confidence)}% CI | p ({s.metric}) | "
                   f"better ({s.metric}) |")
    lines = [header, "|---" * (3 + 4 * len(metrics)) + "|"]
    for label, rows in summaries.items():
        cells = [label, str(rows[0].n_seeds), str(rows[0].n_pairs)]
        for s in rows:
            spread = "—" if math.isnan(s.seed_std) else f"{s.seed_std:.{digits}f}"
            cells += [f"{s.mean:+.{digits}f} ± {spread}",
                      f"[{s.ci[0]:+.{digits}f}, {s.ci[1]:+.{digits}f}]",
                      _format_p(s.p_value), f"{s.better}/{s.n_seeds}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_table_note(reference: str = "baseline", confidence: float = 0.95) -> str:
    """The sentence under a paired table that says what its columns are.

    Example:
        >>> paired_table_note()[:60]
        'Paired differences to baseline (variant − baseline, run by r'
    """
    return (f"Paired differences to {reference} (variant − {reference}, run by run on the same "
            "fold × seed pairs and pre-trained encoders). Δ: mean over the pairs ± sample std "
            f"over the seeds of each seed's fold mean; {round(100 * confidence)}% CI: percentile "
            "bootstrap of the mean, resampling whole seeds; p: two-sided Wilcoxon signed-rank "
            f"test over the fold × seed pairs (exact up to {EXACT_MAX_N} non-zero differences, "
            "zero differences dropped, the pairs of one seed treated as independent); better: "
            "seeds whose fold mean is on the better side of zero (lower MAE, higher Corr).")


def plot_paired_differences(summaries: Mapping[str, Sequence[PairedSummary]],
                            path: str | Path, *, reference: str = "baseline",
                            title: str | None = None, dpi: int = 150) -> Path:
    """Draw the paired differences per seed, with their mean and interval, one panel per metric.

    In each panel a row is a variant: its seeds' fold-mean differences as dots, the mean over
    the pairs as a diamond with the bootstrap interval as a bar, and the count of better seeds
    and the Wilcoxon p beside it. A vertical line marks zero, and the axis says on which side
    of it the variant is better.

    Args:
        summaries: ``{row label: [PairedSummary per metric]}`` (e.g. Δ MAE and Δ Corr), the
            same metrics in every row.
        path: the PNG file to write (its folder is created).
        reference: the name of the reference row, for the axis labels.
        title: optional figure title.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: on empty or inconsistent ``summaries``.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator

    metrics = _metric_order(summaries)
    labels = list(summaries)
    figure = Figure(figsize=(2.6 + 4.0 * len(metrics), 1.4 + 0.7 * len(labels)),
                    layout="constrained")  # room for the row labels beside the first panel
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for column, (ax, metric) in enumerate(zip(axes, metrics)):
        for row, label in enumerate(labels):
            s = summaries[label][column]
            y = len(labels) - 1 - row
            seeds = list(s.per_seed.values())
            jitter = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(1)
            ax.scatter(seeds, y + jitter, s=18, color="0.45", zorder=2,
                       label="seed (mean over folds)" if row == 0 else None)
            ax.errorbar([s.mean], [y], xerr=[[s.mean - s.ci[0]], [s.ci[1] - s.mean]],
                        fmt="D", color="C0", capsize=4, zorder=3,
                        label=f"mean, {round(100 * s.confidence)}% CI (seeds resampled)"
                        if row == 0 else None)
            p_text = _format_p(s.p_value)
            p_text = p_text if p_text.startswith("<") else f"= {p_text}"
            ax.annotate(f"{s.better}/{s.n_seeds} seeds better, p {p_text}",
                        (1.0, y + 0.3), xycoords=("axes fraction", "data"), ha="right",
                        fontsize=7, color="0.3")
        ax.axvline(0.0, color="k", linewidth=0.8)
        lower = summaries[labels[0]][column].lower_is_better
        left, right = ax.get_xlim()
        margin = 0.05 * (right - left)
        left, right = min(left, -margin), max(right, margin)  # zero stays in view
        ax.axvspan(left if lower else 0.0, 0.0 if lower else right, color="C2", alpha=0.07,
                   linewidth=0)
        ax.set_xlim(left, right)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # 5 collided at 3 decimals
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(f"Δ {metric} (variant − {reference})\n"
                      + ("← better" if lower else "better →"))
        ax.set_ylim(-0.6, len(labels) - 0.3)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels[::-1])
    axes[0].legend(loc="lower left", fontsize=7, frameon=False,
                   bbox_to_anchor=(0.0, 1.0), ncols=2)
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path
