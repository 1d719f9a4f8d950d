"""The tables and the figure of ``python -m dmmsa.compare`` (and ``evaluate_real.py``).

:func:`collect` reads the finished runs of ``OUT/fold<k>/seed<s>/<variant>/results.json`` (and
the pre-training's ``text_alone.json``); :func:`markdown` writes the test table (mean ± std over
seeds of each seed's fold mean, per fold, the paired test of ``dmmsa.stats`` against each
reference, the validation curves); :func:`selection_markdown` the validation-only table of a
selection step, which never reads a test metric.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from dmmsa import stats
from dmmsa.reporting import epoch_mean_std, format_cell, mean_std, plot_mean_curves, write_json
from dmmsa.variants import TEXT_ALONE_LABEL, variant_label

__all__ = ["COLUMNS", "collect", "epoch_means", "fusion_gains", "markdown",
           "paired_differences", "paired_summaries", "plot_valid_curves", "read_column",
           "selection_markdown", "selection_ranking", "write_report"]

# (header, metric keys joined by "/"), accuracies and F1 x 100
COLUMNS = [("Acc-2 (has0/non0)", ("Has0_acc_2", "Non0_acc_2")),
           ("F1 (has0/non0)", ("Has0_F1_score", "Non0_F1_score")),
           ("Acc-7", ("Mult_acc_7",)), ("MAE", ("MAE",)), ("Corr", ("Corr",))]
TEXT = "text-alone"  # the key of the pre-trained text model's row


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_column(path: Path, column: str) -> list[list[float]]:
    """``[[values of column per row]]`` from a ``train.py`` CSV, ``[]`` if absent or empty."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        values = [row.get(column, "") for row in csv.DictReader(handle)]
    numbers = [float(v) for v in values if v not in ("", "nan")]
    return [numbers] if numbers else []


def epoch_means(runs: list[list[float]]) -> list[float]:
    """Mean over runs at each epoch (runs of unequal length: over those that reach it)."""
    return epoch_mean_std(runs)[0]


def _fusion_run(base: Path, variant: str, seed: int, test: bool) -> dict[str, Any] | None:
    """One fusion run's numbers (no test metric unless ``test``), ``None`` if unfinished."""
    result = _read(base / variant / "results.json")
    if result is None:
        return None
    one = result["per_seed"][0]
    fusion = one["phases"]["fusion"]
    run = {"valid": fusion["valid"], "best_epoch": int(fusion["best_epoch"]),
           "curve": list(fusion["curve"]["val_MAE"]), "seconds": one["wall_seconds"],
           "cl": read_column(base / variant / f"seed{seed}" / "fusion.csv", "loss_CL")}
    if test:
        run["test"] = one["test"]
    return run


def _text_run(base: Path, test: bool) -> dict[str, Any] | None:
    """The text pre-training of one fold × seed: its validation MAE against ``M`` (from
    ``text_alone.json``, else from the pre-training when its label is ``M``), and the text
    model's test metrics (``text_alone.json``) if ``test``; ``None`` if there is none."""
    pre = _read(base / "pretrain" / "results.json")
    alone = _read(base / "pretrain" / "text_alone.json")
    phase = (pre or {"per_seed": [{}]})["per_seed"][0].get("phases", {}).get("pretrain_T")
    if phase is None:
        return None
    run: dict[str, Any] = {"best_epoch": int(phase["best_epoch"]),
                           "seconds": pre["per_seed"][0]["wall_seconds"]}
    if alone is not None and "valid" in alone:
        run["valid"] = alone["valid"]
        run["seconds"] += alone["wall_seconds"]
        if test:
            run["test"] = alone["test"]
    elif phase.get("label") == "M":
        run["valid"] = phase["valid"]
    return run if "valid" in run else None


def _fold_means(runs: dict[tuple[int, int], dict[str, Any]], key: str, folds: list[int],
                seeds: list[int]) -> tuple[dict[int, dict[str, float]], list[str]]:
    """Per seed with every fold: the mean over the folds of ``run[key]``; the incomplete."""
    per_seed, incomplete = {}, []
    for seed in seeds:
        have = [runs[(f, seed)][key] for f in folds if key in runs.get((f, seed), {})]
        if have and len(have) == len(folds):
            per_seed[seed] = {k: float(np.mean([m[k] for m in have])) for k in have[0]}
        elif have:
            incomplete.append(f"seed {seed}: {len(have)}/{len(folds)} folds")
    return per_seed, incomplete


def _row(runs: dict[tuple[int, int], dict[str, Any]], folds: list[int], seeds: list[int],
         test: bool, shared_seconds: float = 0.0) -> dict[str, Any]:
    """A table row from its runs ``{(fold, seed): run}``."""
    valid_per_seed, incomplete = _fold_means(runs, "valid", folds, seeds)
    row: dict[str, Any] = {"valid_per_seed": valid_per_seed, "incomplete": incomplete,
                           "train_seconds": sum(r["seconds"] for r in runs.values())
                           + shared_seconds,
                           "selected_epochs": [r["best_epoch"] for r in runs.values()],
                           "valid_curves": [r["curve"] for r in runs.values() if "curve" in r],
                           "cl_losses": [c for r in runs.values() for c in r.get("cl", [])],
                           "runs": [{"fold": f, "seed": s, **{k: v for k, v in r.items()
                                                               if k in ("valid", "test")}}
                                    for (f, s), r in runs.items()]}
    per_fold: dict[int, dict[str, list[float]]] = {}
    for (fold, _), run in sorted(runs.items()):
        entry = per_fold.setdefault(fold, {"valid_MAE": []} if not test else
                                    {"MAE": [], "Corr": [], "valid_MAE": []})
        entry["valid_MAE"].append(run["valid"]["MAE"])
        if test:
            entry["MAE"].append(run["test"]["MAE"])
            entry["Corr"].append(run["test"]["Corr"])
    row["per_fold"] = per_fold
    if test:
        row["per_seed"] = _fold_means(runs, "test", folds, seeds)[0]
    return row


def collect(args: argparse.Namespace, test: bool = True) -> dict[str, Any]:
    """Every row's runs, fold means per seed (complete seeds only), per fold, curves.

    With ``test=False`` (``--selection``) no test metric is read: the rows hold validation
    numbers only. ``summary["text_alone"]`` is the pre-trained text model's row.
    """
    fusion: dict[str, dict[tuple[int, int], dict[str, Any]]] = {v: {} for v in args.variants}
    text: dict[tuple[int, int], dict[str, Any]] = {}
    pre_seconds: dict[tuple[int, int], float] = {}
    for seed in args.seeds:
        for fold in args.folds:
            base = args.out / f"fold{fold}" / f"seed{seed}"
            for variant in args.variants:
                run = _fusion_run(base, variant, seed, test)
                if run is not None:
                    fusion[variant][(fold, seed)] = run
            pre = _read(base / "pretrain" / "results.json")
            if pre is not None:
                pre_seconds[(fold, seed)] = pre["per_seed"][0]["wall_seconds"]
            text_run = _text_run(base, test)
            if text_run is not None:
                text[(fold, seed)] = text_run
    # a pre-training is shared by the variants: counted in every row that uses it
    rows = {variant: _row(runs, args.folds, args.seeds, test,
                          sum(pre_seconds.get(pair, 0.0) for pair in runs))
            for variant, runs in fusion.items()}
    files = [Path(args.data[f]).name for f in args.folds] if hasattr(args, "data") else []
    return {"table": args.name, "config": args.config, "folds": args.folds, "seeds": args.seeds,
            "files": files, "program": getattr(args, "program", "python -m dmmsa.compare"),
            "rows": rows, "text_alone": _row(text, args.folds, args.seeds, test) if text
            else None}


def _rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The variants' rows, then the pre-trained text model's row where it has runs."""
    rows = dict(summary["rows"])
    if summary.get("text_alone") and summary["text_alone"]["runs"]:
        rows[TEXT] = summary["text_alone"]
    return rows


def _label(key: str) -> str:
    return TEXT_ALONE_LABEL if key == TEXT else variant_label(key)


def _cell(per_seed: dict[int, dict[str, float]], keys: tuple[str, ...]) -> str:
    """Mean ± std over the seeds of each metric of ``keys`` (3 decimals; accuracies × 100, 1)."""
    values = {key: mean_std([m[key] for m in per_seed.values()]) for key in keys}
    return format_cell(values, keys, decimals=3)


def _epochs(chosen: list[int]) -> str:
    return f"{np.mean(chosen):.1f} ({min(chosen)}–{max(chosen)})" if chosen else "—"


def _pooled(summary: dict[str, Any]) -> str:
    folds, files = summary["folds"], summary.get("files") or []
    if len(folds) == 1 and files:
        return f"test metrics of the test split of `{files[0]}`"
    return (f"test metrics of each fold averaged over the folds {folds} (each fold's test "
            "part: its held-out videos)")


def _main_table(summary: dict[str, Any]) -> list[str]:
    """Mean ± std over seeds per row, validation MAE, selected epochs, run time."""
    lines = [f"### {summary['table']} (preset `{summary['config']}`)", "",
             f"Mean ± sample std over seeds of the {_pooled(summary)} (MMSA's metrics, "
             "`mtobjectives.metrics.msa_metrics`; accuracies and F1 × 100). Model selection: "
             "lowest validation MAE.", "",
             "| objective | seeds | " + " | ".join(h for h, _ in COLUMNS)
             + " | valid MAE | selected epoch | summed run time (s) |",
             "|---" * (len(COLUMNS) + 5) + "|"]
    for key, row in _rows(summary).items():
        per_seed = row["per_seed"]
        if not per_seed:
            lines.append(f"| {_label(key)} | 0 | " + " | ".join(
                "—" for _ in COLUMNS) + " | — | — | — |")
            continue
        valid = mean_std([m["MAE"] for m in row["valid_per_seed"].values()])
        lines.append(f"| {_label(key)} | {len(per_seed)} | "
                     + " | ".join(_cell(per_seed, keys) for _, keys in COLUMNS)
                     + f" | {format_cell({'MAE': valid}, ('MAE',), 3)} | "
                     f"{_epochs(row.get('selected_epochs') or [])} | "
                     f"{row['train_seconds']:.0f} |")
    if TEXT in _rows(summary):
        lines += ["", f"{TEXT_ALONE_LABEL}: the text encoder and its pre-training regressor at "
                  "the end of the unimodal text stage (its best validation epoch, before any "
                  "fusion), predicting the multimodal label; run time = pre-training + this "
                  "evaluation."]
    return lines


def _per_fold_table(summary: dict[str, Any], test: bool = True) -> list[str]:
    """Per fold: test MAE / Corr (validation MAE), mean over the seeds; nothing for one fold."""
    folds = summary["folds"]
    if len(folds) < 2:
        return []
    what = ("test MAE / test Corr (validation MAE)" if test else
            "validation MAE at the selected epoch")
    lines = ["", f"Per fold (mean over the seeds each fold has): {what}", "",
             "| objective | " + " | ".join(f"fold {f}" for f in folds) + " |",
             "|---" * (len(folds) + 1) + "|"]
    rows = _rows(summary) if test else summary["rows"]
    for key, row in rows.items():
        cells = []
        for fold in folds:
            entry = row["per_fold"].get(fold) or row["per_fold"].get(str(fold))
            n = len(entry["valid_MAE"]) if entry else 0
            cells.append("—" if not entry else
                         f"{np.mean(entry['MAE']):.3f} / {np.mean(entry['Corr']):.3f} "
                         f"({np.mean(entry['valid_MAE']):.3f}; {n} seed(s))" if test else
                         f"{np.mean(entry['valid_MAE']):.3f} ({n} seed(s))")
        lines.append(f"| {_label(key)} | " + " | ".join(cells) + " |")
    return lines


def _complete_runs(row: dict[str, Any], seeds: set[int], key: str
                   ) -> dict[tuple[int, int], dict[str, float]]:
    return {(r["fold"], r["seed"]): r[key] for r in row["runs"]
            if r["seed"] in seeds and key in r}


def paired_summaries(summary: dict[str, Any], reference: str, resamples: int = 10_000,
                     split: str = "test", metrics: tuple[str, ...] = ("MAE", "Corr"),
                     ) -> dict[str, list[stats.PairedSummary]]:
    """Each other row − ``reference``, run by run, over the seeds complete in both rows.

    Returns ``{row key: [PairedSummary per metric]}`` (``dmmsa.stats.paired_summary``:
    Wilcoxon over the fold × seed pairs, bootstrap interval resampling seeds, better in k of
    n seeds) of the ``split`` (``"test"``, or ``"valid"`` for a selection, where the text
    model alone is not a row); empty without the reference row or a shared complete seed.
    """
    rows = _rows(summary) if split == "test" else summary["rows"]
    per_seed = "per_seed" if split == "test" else "valid_per_seed"
    if reference not in rows or not rows[reference].get(per_seed):
        return {}
    out: dict[str, list[stats.PairedSummary]] = {}
    for key, row in rows.items():
        seeds = set(row.get(per_seed, {})) & set(rows[reference][per_seed])
        if key == reference or not seeds:
            continue
        base = _complete_runs(rows[reference], seeds, split)
        mine = _complete_runs(row, seeds, split)
        out[key] = [stats.paired_summary(base, mine, metric, metric == "MAE",
                                         resamples=resamples) for metric in metrics]
    return out


def _paired_table(paired: dict[str, list[stats.PairedSummary]], reference: str) -> list[str]:
    """The paired test against ``reference`` (nothing without that row)."""
    if not paired:
        return []
    return ["", stats.paired_table_note(reference), "",
            *stats.paired_table_markdown({_label(k): v for k, v in paired.items()})]


def paired_differences(rows: dict[str, Any], reference: str = "baseline",
                       keys: tuple[str, ...] = ("MAE", "Corr")) -> dict[str, dict[str, Any]]:
    """Each variant minus ``reference``, seed by seed (each seed's fold mean).

    Only seeds that both rows have are paired. For every key: the per-seed differences, their
    mean and sample std, and ``better``: in how many seeds the variant is better (lower MAE,
    higher anything else). Variants without a shared seed are left out.
    """
    if reference not in rows:
        return {}
    base = rows[reference]["per_seed"]
    out: dict[str, dict[str, Any]] = {}
    for variant, row in rows.items():
        seeds = [s for s in row["per_seed"] if s in base]
        if variant == reference or not seeds:
            continue
        entry: dict[str, Any] = {"seeds": seeds}
        for key in keys:
            diffs = [row["per_seed"][s][key] - base[s][key] for s in seeds]
            mean, std = mean_std(diffs)
            better = sum(d < 0 if key == "MAE" else d > 0 for d in diffs)
            entry[key] = {"diffs": diffs, "mean": mean, "std": std, "better": better}
        out[variant] = entry
    return out


def fusion_gains(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per row: fusion's best validation MAE − the text pre-training's, run by run.

    Both are validation MAEs against the multimodal label at each stage's selected epoch, of
    the same fold × seed (the fusion starts from that pre-training). Negative: the fusion
    stage improves on the text model alone.
    """
    text = summary.get("text_alone")
    if not text:
        return {}
    pre = {(r["fold"], r["seed"]): r["valid"]["MAE"] for r in text["runs"]}
    out = {}
    for key, row in summary["rows"].items():
        pairs = [(pre[(r["fold"], r["seed"])], r["valid"]["MAE"]) for r in row["runs"]
                 if (r["fold"], r["seed"]) in pre]
        if pairs:
            diffs = [fused - alone for alone, fused in pairs]
            out[key] = {"runs": len(pairs), "text_valid_MAE": float(np.mean([p[0] for p in pairs])),
                        "fusion_valid_MAE": float(np.mean([p[1] for p in pairs])),
                        "delta": mean_std(diffs), "better": sum(d < 0 for d in diffs)}
    return out


def _gains_table(summary: dict[str, Any]) -> list[str]:
    gains = fusion_gains(summary)
    if not gains:
        return []
    lines = ["", "What the fusion stage adds (validation only): the fusion's best validation "
             "MAE minus the text pre-training's best validation MAE (both against the "
             "multimodal label) of the same fold × seed; mean ± sample std over the runs; "
             "\"better\": runs in which the fusion stage lowers it", "",
             "| objective | runs | text pre-training valid MAE | fusion valid MAE | Δ valid MAE "
             "| better |", "|---|---|---|---|---|---|"]
    for key, g in gains.items():
        mean, std = g["delta"]
        lines.append(f"| {_label(key)} | {g['runs']} | {g['text_valid_MAE']:.3f} | "
                     f"{g['fusion_valid_MAE']:.3f} | {mean:+.3f} ± {std:.3f} | "
                     f"{g['better']}/{g['runs']} |")
    return lines


def _curves_table(summary: dict[str, Any]) -> list[str]:
    """Validation MAE (and CL loss) after each fusion epoch, mean over the row's runs."""
    curves = {v: epoch_means(r.get("valid_curves", [])) for v, r in summary["rows"].items()}
    curves = {v: c for v, c in curves.items() if c}
    if not curves:
        return []
    n_epochs = max(len(c) for c in curves.values())
    lines = ["", "Validation MAE after each fusion epoch, mean over every run (fold × seed) "
             "of the row; the CL loss of the epoch (unweighted, mean over the runs) where "
             "the row has CL", "",
             "| objective | runs | " + " | ".join(f"epoch {i + 1}" for i in range(n_epochs))
             + " |", "|---" * (n_epochs + 2) + "|"]
    for variant, curve in curves.items():
        row = summary["rows"][variant]
        cells = [f"{value:.3f}" for value in curve]
        cl = epoch_means(row.get("cl_losses", []))
        if cl:
            cells = [f"{c} (CL {loss:.2f})" for c, loss in zip(cells, cl)] + cells[len(cl):]
        lines.append(f"| {_label(variant)} | {len(row['valid_curves'])} | "
                     + " | ".join(cells) + " |")
    return lines


def _footer(summary: dict[str, Any], wall: float, hw: str, argv: list[str]) -> list[str]:
    notes = [f"{_label(v)}: {', '.join(r['incomplete'])} (not in the table)"
             for v, r in _rows(summary).items() if r["incomplete"]]
    timing = ("table written from finished runs (--report-only)" if "--report-only" in argv
              else f"this invocation's wall time {wall / 60:.1f} min")
    program = summary.get("program", "python -m dmmsa.compare")
    lines = ["", f"Command: `{program} {' '.join(argv)}`; "
             f"{timing}; hardware: {hw}. Run time = summed "
             "wall seconds of the row's train.py runs (each pre-training counted in every row "
             "that uses it)."]
    return lines + (["", "Unfinished: " + "; ".join(notes)] if notes else [])


def markdown(summary: dict[str, Any], wall: float, hw: str, argv: list[str],
             references: list[str] | None = None,
             paired: dict[str, dict[str, list[stats.PairedSummary]]] | None = None) -> str:
    """``table.md``: main table, per fold, paired tests, fusion gains, curves, the command.

    ``paired``: ``{reference: paired_summaries(summary, reference)}`` when the caller has them
    already (the bootstrap is not redone); computed here otherwise.
    """
    lines = _main_table(summary) + _per_fold_table(summary)
    for reference in references or ["baseline"]:
        known = paired.get(reference) if paired is not None else None
        lines += _paired_table(known if known is not None
                               else paired_summaries(summary, reference), reference)
    lines += _gains_table(summary) + _curves_table(summary)
    return "\n".join(lines + _footer(summary, wall, hw, argv)) + "\n"


def selection_ranking(summary: dict[str, Any], flags: dict[str, list[str]]
                      ) -> list[tuple[str, dict[str, Any]]]:
    """Rows with runs by mean validation MAE over their runs (ties: fewer flags first)."""
    scored = []
    for key, row in summary["rows"].items():
        values = [r["valid"]["MAE"] for r in row["runs"]]
        if values:
            mean, std = mean_std(values)
            scored.append((key, {"runs": len(values), "valid_MAE": mean, "valid_MAE_std": std,
                                 "flags": flags.get(key, [])}))
    return sorted(scored, key=lambda item: (item[1]["valid_MAE"], len(item[1]["flags"])))


def selection_markdown(summary: dict[str, Any], flags: dict[str, list[str]], wall: float,
                       hw: str, argv: list[str], references: tuple[str, ...] = (),
                       ranking: list[tuple[str, dict[str, Any]]] | None = None) -> str:
    """``selection.md``: validation numbers only, rows sorted by mean validation MAE, and the
    paired validation MAE against each of ``references`` (it does not change the ranking).
    ``ranking``: :func:`selection_ranking` when the caller has it already."""
    ranking = selection_ranking(summary, flags) if ranking is None else ranking
    lines = [f"### {summary['table']} (preset `{summary['config']}`): selection, validation "
             "only", "", "Mean ± sample std over the runs (fold × seed) of each run's "
             "validation MAE at its selected epoch (the fusion epoch with the lowest validation "
             "MAE); rows sorted by it (ties: fewer flags first). No test metric is read.", "",
             "| rank | objective | train.py flags | runs | mean valid MAE | selected epoch |",
             "|---|---|---|---|---|---|"]
    for rank, (key, entry) in enumerate(ranking, start=1):
        chosen = summary["rows"][key]["selected_epochs"]
        lines.append(f"| {rank} | {_label(key)} | `{' '.join(entry['flags']) or '—'}` | "
                     f"{entry['runs']} | {entry['valid_MAE']:.3f} ± "
                     f"{entry['valid_MAE_std']:.3f} | {_epochs(chosen)} |")
    lines += _per_fold_table(summary, test=False)
    for reference in references:
        paired = paired_summaries(summary, reference, split="valid", metrics=("MAE",))
        if paired:
            lines += ["", "Validation MAE (at each run's selected epoch), paired: "
                      + stats.paired_table_note(reference), "",
                      *stats.paired_table_markdown({_label(k): v for k, v in paired.items()})]
    lines += _gains_table(summary) + _curves_table(summary)
    return "\n".join(lines + _footer(summary, wall, hw, argv)) + "\n"


def plot_valid_curves(summary: dict[str, Any], path: Path) -> bool:
    """The validation MAE per fusion epoch of every row, mean over its runs."""
    curves = {_label(key): row.get("valid_curves", []) for key, row in summary["rows"].items()}
    return plot_mean_curves(curves, path, f"{summary['table']}: validation MAE per fusion "
                            "epoch (mean over fold × seed)")


def write_report(args: argparse.Namespace, argv: list[str], wall: float, hw: str) -> str:
    """Write ``table.md``/``.json``, ``paired.png`` and ``curves.png`` (or
    ``selection.md``/``.json`` and ``selection_curves.png``)."""
    args.out.mkdir(parents=True, exist_ok=True)
    flags = getattr(args, "variant_flags", {})
    if getattr(args, "selection", False):
        summary = collect(args, test=False)
        ranking = selection_ranking(summary, flags)
        text = selection_markdown(summary, flags, wall, hw, argv,
                                  tuple(getattr(args, "reference", ["baseline"])), ranking)
        summary.update({"ranking": ranking, "hardware": hw,
                        "argv": argv, "wall_seconds_this_invocation": wall})
        write_json(summary, args.out / "selection.json")
        (args.out / "selection.md").write_text(text)
        plot_valid_curves(summary, args.out / "selection_curves.png")
        print(text, flush=True)
        return text
    summary = collect(args)
    references = list(getattr(args, "reference", ["baseline"]))
    paired = {ref: paired_summaries(summary, ref) for ref in references}
    summary.update({"wall_seconds_this_invocation": wall, "hardware": hw, "argv": argv,
                    "paired_to_baseline": paired_differences(summary["rows"]),
                    "paired": {ref: {k: [s.to_json() for s in v] for k, v in p.items()}
                               for ref, p in paired.items()},
                    "fusion_gains": fusion_gains(summary)})
    write_json(summary, args.out / "table.json")
    text = markdown(summary, wall, hw, argv, references, paired)
    (args.out / "table.md").write_text(text)
    plot_valid_curves(summary, args.out / "curves.png")
    for i, (ref, summaries) in enumerate(paired.items()):
        objectives = {_label(k): v for k, v in summaries.items() if k != TEXT}
        if objectives:  # the objectives only: the text model alone is in the table
            stats.plot_paired_differences(objectives,
                                          args.out / ("paired.png" if i == 0 else
                                                      f"paired_vs_{ref}.png"),
                                          reference=ref, title=summary["table"])
    print(text, flush=True)
    return text
