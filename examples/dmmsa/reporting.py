"""The reports of the reference system: tables, plots and files, for ``train.py`` and
``evaluate_real.py`` alike.

One rule for every table cell (:func:`format_cell`): mean ± sample std (ddof = 1; 0 for one
value) over seeds; MAE and Corr as they are, accuracies and F1 × 100 with two decimals fewer.
``train.py``'s ``results.md`` shows 4 decimals (MAE ``0.7100``, Acc-7 ``45.39``), the tables of
``evaluate_real.py`` 3 (``0.710``, ``45.4``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COLUMNS",
    "PAPER",
    "epoch_mean_std",
    "format_cell",
    "mean_std",
    "plot_curves",
    "plot_mean_curves",
    "results_table",
    "summarize",
    "weighted_tasks",
    "write_csv",
    "write_json",
]

# The paper's numbers (Tables 2, 3 and 5), accuracies and F1 x 100.
PAPER: dict[str, dict[str, dict[str, str]]] = {
    "sims": {
        "ConFEDE": {"Mult_acc_3": "68.36", "Mult_acc_5": "43.72", "MAE": "0.3924",
                    "Corr": "0.6351"},
        "DMMSA": {"Mult_acc_3": "69.63", "Mult_acc_5": "46.92", "MAE": "0.3778", "Corr": "0.66"},
        "DMMSA w/o MSC": {"Mult_acc_3": "68.41", "Mult_acc_5": "44.68", "MAE": "0.3807",
                          "Corr": "0.656"},
        "DMMSA w/o CL": {"Mult_acc_3": "69.41", "Mult_acc_5": "46.74", "MAE": "0.3828",
                         "Corr": "0.651"},
        "DMMSA w/o GDWG": {"Mult_acc_3": "69.32", "Mult_acc_5": "46.17", "MAE": "0.3776",
                           "Corr": "0.663"},
    },
    "mosi": {
        "ConFEDE": {"Has0_acc_2": "83.85", "Non0_acc_2": "85.55", "Has0_F1_score": "83.83",
                    "Non0_F1_score": "85.76", "Mult_acc_7": "43.82", "MAE": "0.725",
                    "Corr": "0.789"},
        "DMMSA": {"Has0_acc_2": "83.97", "Non0_acc_2": "85.70", "Has0_F1_score": "83.92",
                  "Non0_F1_score": "85.70", "Mult_acc_7": "45.39", "MAE": "0.710",
                  "Corr": "0.793"},
    },
    "mosei": {
        "ConFEDE": {"Has0_acc_2": "80.7", "Non0_acc_2": "84.38", "Has0_F1_score": "81.2",
                    "Non0_F1_score": "84.32", "Mult_acc_7": "51.96", "MAE": "0.555",
                    "Corr": "0.753"},
        "DMMSA": {"Has0_acc_2": "82.63", "Non0_acc_2": "86.27", "Has0_F1_score": "83.04",
                  "Non0_F1_score": "86.21", "Mult_acc_7": "53.91", "MAE": "0.527",
                  "Corr": "0.777"},
    },
}

# Columns of the results table of each metric set: (header, metric keys joined by "/").
COLUMNS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "mosi": [("Acc-2 (has0/non0)", ("Has0_acc_2", "Non0_acc_2")),
             ("F1 (has0/non0)", ("Has0_F1_score", "Non0_F1_score")),
             ("Acc-5", ("Mult_acc_5",)), ("Acc-7", ("Mult_acc_7",)), ("MAE", ("MAE",)),
             ("Corr", ("Corr",))],
    "sims": [("Acc-2", ("Mult_acc_2",)), ("F1", ("F1_score",)), ("Acc-3", ("Mult_acc_3",)),
             ("Acc-5", ("Mult_acc_5",)), ("MAE", ("MAE",)), ("Corr", ("Corr",))],
}
COLUMNS["mosei"] = COLUMNS["mosi"]

_AS_IS = ("MAE", "Corr")  # every other metric is a fraction, shown x 100


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value).

    Example:
        >>> mean_std([1.0, 2.0, 3.0]), mean_std([0.5])
        ((2.0, 1.0), (0.5, 0.0))
    """
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def format_cell(values: Mapping[str, tuple[float, float]], keys: Sequence[str],
                decimals: int = 4, spread: bool = True) -> str:
    """``mean ± std`` of each metric of ``keys``, joined by ``" / "``.

    Args:
        values: ``{metric: (mean, std)}``.
        keys: the metrics of the cell (e.g. ``("Has0_acc_2", "Non0_acc_2")``).
        decimals: decimals of MAE and Corr; accuracies and F1 are shown × 100 with
            ``decimals - 2``.
        spread: show ``± std`` (``False``: the mean alone, for a single seed, whose std of 0
            would read as a measured spread).

    Example:
        >>> format_cell({"MAE": (0.71, 0.0123), "Mult_acc_7": (0.4539, 0.01)},
        ...             ("Mult_acc_7", "MAE"))
        '45.39 ± 1.00 / 0.7100 ± 0.0123'
        >>> format_cell({"MAE": (0.71, 0.0123)}, ("MAE",), decimals=3)
        '0.710 ± 0.012'
        >>> format_cell({"MAE": (0.71, 0.0)}, ("MAE",), spread=False)
        '0.7100'
    """
    cells = []
    for key in keys:
        mean, std = values[key]
        scale, places = (1, decimals) if key in _AS_IS else (100, decimals - 2)
        cell = f"{scale * mean:.{places}f}"
        cells.append(f"{cell} ± {scale * std:.{places}f}" if spread else cell)
    return " / ".join(cells)


def summarize(results: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for one seed) of every metric of ``result[key]``."""
    runs = [r[key] for r in results if key in r]
    if not runs:
        return {}
    return {metric: dict(zip(("mean", "std"), mean_std([r[metric] for r in runs])))
            for metric in runs[0]}


def _pairs(summary: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    return {key: (value["mean"], value["std"]) for key, value in summary.items()}


def results_table(title: str, name: str, metric_set: str, summary: Mapping[str, Any]) -> str:
    """Markdown: our test metrics (mean ± std over seeds) beside the paper's (Tables 2, 3, 5).

    With one seed the cells show the value alone (no ``± 0``). When ``summary`` holds
    ``"selected_epochs"`` (each seed's epoch of lowest validation MAE), a column shows them.

    Args:
        title: the preset's name (``config.name``), also the key of :data:`PAPER`.
        name: what was trained (``dmmsa.objectives.run_name``).
        metric_set: ``"mosi"``, ``"mosei"`` or ``"sims"`` (the columns).
        summary: ``{"seeds", "test", "test_constrained", "pretrain"[, "selected_epochs"]}`` of
            ``results.json``.
    """
    lines = [f"# DMMSA reference system: {title}", ""]
    n = len(summary.get("seeds", ()))
    spread = n != 1
    over = f"mean ± std over {n} seed(s) {summary['seeds']}" if spread else (
        f"1 seed {summary['seeds']}, so no spread")
    if summary.get("test"):
        lines += [f"Test metrics of the model with the lowest validation MAE, {over} "
                  "(accuracies and F1 × 100).", ""]
        columns = COLUMNS[metric_set]
        epochs = summary.get("selected_epochs")
        headers = [header for header, _ in columns] + (["selected epoch"] if epochs else [])
        lines.append("| model | " + " | ".join(headers) + " |")
        lines.append("|---" * (len(headers) + 1) + "|")
        rows = [(f"ours: {name}", summary["test"])]
        if summary.get("test_constrained"):
            rows.append((f"ours: {name} + restricted scope (Fig. 6)",
                         summary["test_constrained"]))
        extra = [", ".join(map(str, epochs))] if epochs else []
        for label, metrics in rows:
            lines.append(f"| {label} | " + " | ".join(
                [format_cell(_pairs(metrics), keys, spread=spread) for _, keys in columns]
                + extra) + " |")
        if title in PAPER:
            for label, values in PAPER[title].items():
                cells = ["/".join(values[k] for k in keys) if all(k in values for k in keys)
                         else "" for _, keys in columns] + ([""] if epochs else [])
                lines.append(f"| paper: {label} | " + " | ".join(cells) + " |")
            lines += ["", "Paper: Tables 2, 3 and 5 (mean of 5 seeds on the paper's feature "
                      "files); its ConFEDE row is the paper's re-run of ConFEDE."]
    else:
        lines.append("No fusion stage in this run (--stage pretrain): no test metrics.")
    pre = {phase: s for phase, s in summary.get("pretrain", {}).items() if s}
    if pre:
        lines += ["", f"Unimodal pre-training, best validation MAE "
                      f"({'mean ± std' if spread else '1 seed'}): " + ", ".join(
            f"{phase[-1]} {format_cell(_pairs(s), ('MAE',), spread=spread)}"
            for phase, s in pre.items())]
    return "\n".join(lines) + "\n"


def weighted_tasks(curves: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tasks whose weight is not 1 at some epoch of some seed's curve (the tasks a
    weighting or a schedule actually weighs), in the curves' order.

    Example:
        >>> weighted_tasks([{"weights": {"MSR": [1.0, 1.0], "Uni": [1.0, 1.0]}},
        ...                 {"weights": {"MSR": [1.0, 1.0], "Uni": [1.0, 0.8]}}])
        ['Uni']
    """
    names: list[str] = []
    for curve in curves:
        names += [task for task, weights in curve["weights"].items()
                  if task not in names and any(w != 1.0 for w in weights)]
    return names


def plot_curves(results: Sequence[Mapping[str, Any]], out: Path, weighting: str = "GDWG",
                log: Callable[[str], None] = print) -> None:
    """``out/val_mae.png`` (Fig. 4: validation MAE per fusion epoch, the lowest circled) and
    ``out/task_weights.png`` (the weight per epoch of every task that is weighted, i.e. whose
    weight is not 1 throughout: :func:`weighted_tasks`; the title names them and
    ``weighting``); nothing without a fusion phase. When every weight stays at 1 the weights
    plot is not drawn (and a stale one is removed), and ``log`` says so."""
    fusion = [(r["seed"], r["phases"]["fusion"]["curve"]) for r in results
              if "fusion" in r.get("phases", {})]
    if not fusion:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in fusion:
        mae = curve["val_MAE"]
        epochs = np.arange(1, len(mae) + 1)
        (line,) = ax.plot(epochs, mae, label=f"seed {seed}")
        best = int(np.argmin(mae))
        ax.plot(epochs[best], mae[best], "o", markerfacecolor="none", markersize=10,
                color=line.get_color())  # Fig. 4 circles the lowest MAE
    ax.set(xlabel="epoch", ylabel="validation MAE", title="Validation MAE per epoch (Fig. 4)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "val_mae.png", dpi=120)
    plt.close(fig)

    tasks = weighted_tasks([curve for _, curve in fusion])
    if not tasks:
        (out / "task_weights.png").unlink(missing_ok=True)
        log("task_weights.png: not drawn, every task weight is 1 at every epoch (no task is "
            "weighted)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in fusion:
        for task in tasks:
            weights = curve["weights"].get(task, [])
            ax.plot(np.arange(1, len(weights) + 1), weights, marker=".",
                    label=f"λ_{task} (seed {seed})")
    ax.set(xlabel="epoch", ylabel="task weight",
           title=f"Task weights per epoch ({weighting}: {' and '.join(tasks)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "task_weights.png", dpi=120)
    plt.close(fig)


def epoch_mean_std(runs: Sequence[Sequence[float]]
                   ) -> tuple[list[float], list[float], list[int]]:
    """Per epoch: mean and sample std (:func:`mean_std`) over the runs that reach it, and
    their number (runs of unequal length, e.g. stopped early, count where they have a value).

    Example:
        >>> epoch_mean_std([[1.0, 2.0], [3.0]])
        ([2.0, 2.0], [1.4142135623730951, 0.0], [2, 1])
    """
    longest = max((len(run) for run in runs), default=0)
    columns = [[run[i] for run in runs if len(run) > i] for i in range(longest)]
    pairs = [mean_std(column) for column in columns]
    return [m for m, _ in pairs], [s for _, s in pairs], [len(c) for c in columns]


def plot_mean_curves(curves: Mapping[str, Sequence[Sequence[float]]], path: Path, title: str,
                     ylabel: str = "validation MAE", band: bool = False, dpi: int = 130) -> bool:
    """Draw one line per row of ``curves`` (``{label: [curve per run]}``): the mean over the
    runs at each epoch (:func:`epoch_mean_std`), the lowest mean circled; with ``band`` a ± std
    band too (off by default: over folds of unequal difficulty it hides the rows' differences).

    Returns ``False`` and writes nothing (a stale ``path`` is removed) when no row has a curve.
    """
    rows = {label: epoch_mean_std(runs) for label, runs in curves.items() if any(runs)}
    if not rows:
        path.unlink(missing_ok=True)
        return False
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4.4 + 0.18 * len(rows)), layout="constrained")
    ax = figure.subplots()
    for label, (mean, std, counts) in rows.items():
        epochs = np.arange(1, len(mean) + 1)
        (line,) = ax.plot(epochs, mean, marker=".", label=f"{label} ({max(counts)} runs)")
        if band:
            ax.fill_between(epochs, np.subtract(mean, std), np.add(mean, std),
                            color=line.get_color(), alpha=0.08, linewidth=0)
        best = int(np.argmin(mean))
        ax.plot(epochs[best], mean[best], "o", markerfacecolor="none", markersize=9,
                color=line.get_color())
    ax.set(xlabel="fusion epoch", ylabel=ylabel)
    ax.set_title(title, fontsize="medium")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    figure.legend(fontsize="small", loc="outside lower center", ncols=2, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return True


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON, atomically (a temporary file, then ``os.replace``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write ``rows`` (the union of their keys as columns, in order of appearance), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
