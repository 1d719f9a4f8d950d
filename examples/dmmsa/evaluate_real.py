"""One command per table: DMMSA, the baseline objective and the ablations on real CMU-MOSI.

Usage (from the repository root; the pickles come from ``prepare_mosi.py``)::

    python examples/dmmsa/evaluate_real.py --table mosi400 --jobs 2
    python examples/dmmsa/evaluate_real.py --table mosi_text --jobs 2
    python examples/dmmsa/evaluate_real.py --table mosi400 --seeds 1 12 --variants dmmsa baseline

For every fold x seed it runs ``train.py --stage pretrain`` once (the unimodal pre-training does
not depend on the fusion objective), copies ``pretrained.pt`` into one folder per variant and runs
``train.py --stage fusion`` there, so that every variant of a fold and seed starts from the same
pre-trained encoders (a paired comparison). Each ``train.py`` is a subprocess with ``--threads 1``;
up to ``--jobs`` run at once. A run whose ``results.json`` exists is skipped, so rerunning the same
command resumes an interrupted table.

Tables (``--table``):

- ``mosi400``: ``runs/real/mosi400_fold{0..3}.pkl`` (400 clips, T/A/V, 4 folds grouped by video,
  a validation part of 2 training videos in each fold), preset ``mosi400``, variants
  ``dmmsa``, ``baseline``, ``no-msc``, ``no-cl``, ``no-gdwg``. Metrics: the test metrics of each
  fold (``msa_metrics``, MOSI) averaged over the 4 folds, then mean ± sample std over the seeds.
- ``mosi_text``: ``runs/real/mosi_official_text.pkl`` (all of CMU-MOSI, official split, text
  only), preset ``mosi_text``, variants ``dmmsa`` (CL is switched off by ``train.py``: no audio or
  vision), ``baseline``, ``no-msc``. ``no-gdwg`` does not apply: with CL off GDWG weighs one task
  (``Uni``), whose weight is 1 under both GDWG and equal weights, so it equals ``dmmsa``.

Writes ``OUT/table.md`` (and ``OUT/table.json``): mean ± std over seeds, the number of seeds and
folds each row has, the summed run time, the wall time of this command and the hardware.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmmsa.reporting import format_cell, mean_std

__all__ = ["TABLES", "VARIANT_FLAGS", "Job", "collect", "main", "markdown", "paired_differences",
           "parse_args", "plan", "run_jobs"]

HERE = Path(__file__).resolve().parent
TRAIN = HERE / "train.py"

VARIANT_FLAGS: dict[str, list[str]] = {
    "dmmsa": [],
    "baseline": ["--objective", "baseline"],
    "no-msc": ["--no-msc"],
    "no-cl": ["--no-cl"],
    "no-gdwg": ["--no-gdwg"],
}
VARIANT_NAMES = {"dmmsa": "DMMSA", "baseline": "baseline (SmoothL1 fused + unimodal)",
                 "no-msc": "DMMSA w/o MSC", "no-cl": "DMMSA w/o CL", "no-gdwg": "DMMSA w/o GDWG"}
TABLES: dict[str, dict[str, Any]] = {
    "mosi400": {"config": "mosi400", "files": [f"mosi400_fold{k}.pkl" for k in range(4)],
                "variants": ["dmmsa", "baseline", "no-msc", "no-cl", "no-gdwg"],
                "seeds": [1, 12, 123, 1234, 12345]},
    "mosi_text": {"config": "mosi_text", "files": ["mosi_official_text.pkl"],
                  "variants": ["dmmsa", "baseline", "no-msc"], "seeds": [1, 12, 123]},
}
# (header, metric keys joined by "/"), accuracies and F1 x 100
COLUMNS = [("Acc-2 (has0/non0)", ("Has0_acc_2", "Non0_acc_2")),
           ("F1 (has0/non0)", ("Has0_F1_score", "Non0_F1_score")),
           ("Acc-7", ("Mult_acc_7",)), ("MAE", ("MAE",)), ("Corr", ("Corr",))]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--table", required=True, choices=sorted(TABLES))
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: the table's (mosi400 5 seeds, mosi_text 3)")
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANT_FLAGS))
    parser.add_argument("--folds", type=int, nargs="+", default=None,
                        help="subset of the folds (mosi400: 0 1 2 3)")
    parser.add_argument("--jobs", type=int, default=1, help="train.py processes at once")
    parser.add_argument("--data-dir", type=Path, default=Path("runs/real"))
    parser.add_argument("--out", type=Path, default=None, help="default: runs/eval/<table>")
    parser.add_argument("--report-only", action="store_true",
                        help="write the table from the finished runs, train nothing")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each finished run's resume checkpoint and pretrained.pt copy "
                        "(default: delete them, ~0.5 GB per run)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further train.py arguments for every run (after everything else)")
    args = parser.parse_args(argv)
    table = TABLES[args.table]
    args.seeds = args.seeds or table["seeds"]
    args.variants = args.variants or table["variants"]
    if args.table == "mosi_text":
        unusable = [v for v in args.variants if v in ("no-cl", "no-gdwg")]
        if unusable:
            parser.error(f"{unusable} do not apply to the text-only table (CL is off there, and "
                         "GDWG then weighs one task with weight 1)")
    n_files = len(table["files"])
    args.folds = list(range(n_files)) if args.folds is None else args.folds
    if any(not 0 <= f < n_files for f in args.folds):
        parser.error(f"--folds must lie in [0, {n_files - 1}]")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    args.out = args.out or Path("runs/eval") / args.table
    return args


class Job:
    """One ``train.py`` call; ``after`` is the job whose output it needs."""

    def __init__(self, name: str, out: Path, argv: list[str], after: Job | None = None,
                 before_start: Any = None) -> None:
        self.name, self.out, self.argv, self.after = name, out, argv, after
        self.before_start = before_start
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.returncode: int | None = None

    @property
    def done(self) -> bool:
        return (self.out / "results.json").exists()

    def clean(self) -> None:
        """Delete what a finished run no longer needs (~0.5 GB per run with MiniLM).

        The resume checkpoint (model + AdamW state) and a fusion run's copy of the pre-trained
        weights go; ``model_best.pt``, the pre-training's ``pretrained.pt`` (the fusion runs
        copy it) and every log, CSV and JSON stay.
        """
        for path in self.out.glob("seed*/checkpoint.pt"):
            path.unlink()
        if self.after is not None:
            for path in self.out.glob("seed*/pretrained.pt"):
                path.unlink()


def plan(args: argparse.Namespace) -> list[Job]:
    table = TABLES[args.table]
    jobs: list[Job] = []
    for seed in args.seeds:  # seed-major: whole seeds finish first
        for fold in args.folds:
            data = args.data_dir / table["files"][fold]
            base = args.out / f"fold{fold}" / f"seed{seed}"
            common = ["--config", table["config"], "--data", str(data), "--seeds", str(seed),
                      "--threads", "1", "--device", "cpu", "--save-every", "0"]
            pre_out = base / "pretrain"
            pretrain = Job(f"fold{fold} seed{seed} pretrain", pre_out,
                           [*common, "--stage", "pretrain", "--out", str(pre_out), *args.extra])
            jobs.append(pretrain)
            for variant in args.variants:
                out = base / variant
                source = pre_out / f"seed{seed}" / "pretrained.pt"
                target = out / f"seed{seed}" / "pretrained.pt"

                def copy(source: Path = source, target: Path = target) -> None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)

                jobs.append(Job(f"fold{fold} seed{seed} {variant}", out,
                                [*common, "--stage", "fusion", *VARIANT_FLAGS[variant],
                                 "--out", str(out), *args.extra], after=pretrain,
                                before_start=copy))
    return jobs


def run_jobs(jobs: list[Job], n_parallel: int, log_dir: Path,
             keep_checkpoints: bool = False) -> None:
    pending = [job for job in jobs if not job.done]
    skipped = len(jobs) - len(pending)
    print(f"{len(jobs)} runs, {skipped} finished earlier (skipped), {len(pending)} to run, "
          f"{n_parallel} at once", flush=True)
    running: list[Job] = []
    failed: list[Job] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    while pending or running:
        for job in list(running):
            code = job.process.poll() if job.process else 0
            if code is None:
                continue
            running.remove(job)
            job.returncode = code
            status = "ok" if code == 0 and job.done else f"FAILED (exit {code})"
            if status != "ok":
                failed.append(job)
            elif not keep_checkpoints:
                job.clean()
            print(f"[{time.strftime('%H:%M:%S')}] {job.name}: {status} in "
                  f"{time.perf_counter() - job.started:.0f} s", flush=True)
        for job in list(pending):
            if len(running) >= n_parallel:
                break
            if job.after is not None and not job.after.done:
                if job.after in failed or (job.after.returncode is not None):
                    pending.remove(job)  # its pre-training failed
                    failed.append(job)
                    print(f"{job.name}: skipped, its pre-training failed", flush=True)
                continue
            pending.remove(job)
            if job.before_start is not None:
                job.before_start()
            log = open(log_dir / (job.name.replace(" ", "_") + ".log"), "w")  # noqa: SIM115
            job.started = time.perf_counter()
            job.process = subprocess.Popen([sys.executable, str(TRAIN), *job.argv], stdout=log,
                                           stderr=subprocess.STDOUT,
                                           env={**os.environ, "OMP_NUM_THREADS": "1",
                                                "TQDM_DISABLE": "1"})
            running.append(job)
            print(f"[{time.strftime('%H:%M:%S')}] start {job.name}", flush=True)
        time.sleep(1.0)
    if failed:
        print(f"{len(failed)} run(s) failed: {[job.name for job in failed]} (see "
              f"{log_dir})", flush=True)


def hardware() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    return (f"{model}, {os.cpu_count()} logical CPU(s) visible (shared with other users), "
            f"Python {platform.python_version()}, torch {torch.__version__}, one thread per "
            "train.py process")


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Per variant and seed: the test metrics averaged over the folds (complete seeds only)."""
    table = TABLES[args.table]
    rows: dict[str, Any] = {}
    for variant in args.variants:
        per_seed, per_seed_valid, seconds, incomplete = {}, {}, 0.0, []
        selected: list[int] = []  # the fusion epoch chosen on validation, every run
        curves: list[list[float]] = []  # validation MAE after each fusion epoch, every run
        cl_losses: list[list[float]] = []  # mean CL loss of each fusion epoch, every run
        for seed in args.seeds:
            tests, valids = [], []
            for fold in args.folds:
                base = args.out / f"fold{fold}" / f"seed{seed}"
                path = base / variant / "results.json"
                if not path.exists():
                    continue
                result = json.loads(path.read_text())["per_seed"][0]
                tests.append(result["test"])
                valids.append(result["phases"]["fusion"]["valid"])
                selected.append(int(result["phases"]["fusion"]["best_epoch"]))
                curves.append(list(result["phases"]["fusion"]["curve"]["val_MAE"]))
                cl_losses += read_column(base / variant / f"seed{seed}" / "fusion.csv",
                                         "loss_CL")
                seconds += result["wall_seconds"]
                pre = base / "pretrain" / "results.json"
                if pre.exists():  # shared by the variants: count it once per variant row
                    seconds += json.loads(pre.read_text())["per_seed"][0]["wall_seconds"]
            if len(tests) == len(args.folds):
                per_seed[seed] = {k: float(np.mean([t[k] for t in tests])) for k in tests[0]}
                per_seed_valid[seed] = {k: float(np.mean([v[k] for v in valids]))
                                        for k in valids[0]}
            elif tests:
                incomplete.append(f"seed {seed}: {len(tests)}/{len(args.folds)} folds")
        per_fold: dict[int, dict[str, list[float]]] = {}
        for fold in args.folds:
            for seed in args.seeds:
                path = args.out / f"fold{fold}" / f"seed{seed}" / variant / "results.json"
                if path.exists():
                    result = json.loads(path.read_text())["per_seed"][0]
                    entry = per_fold.setdefault(fold, {"MAE": [], "Corr": [], "valid_MAE": []})
                    entry["MAE"].append(result["test"]["MAE"])
                    entry["Corr"].append(result["test"]["Corr"])
                    entry["valid_MAE"].append(result["phases"]["fusion"]["valid"]["MAE"])
        rows[variant] = {"per_seed": per_seed, "valid_per_seed": per_seed_valid,
                         "per_fold": per_fold, "train_seconds": seconds,
                         "selected_epochs": selected, "valid_curves": curves,
                         "cl_losses": cl_losses,
                         "incomplete": incomplete}
    return {"table": args.table, "config": table["config"], "folds": args.folds,
            "seeds": args.seeds, "rows": rows}


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
    longest = max((len(r) for r in runs), default=0)
    return [float(np.mean([r[i] for r in runs if len(r) > i])) for i in range(longest)]


def cell(per_seed: dict[int, dict[str, float]], keys: tuple[str, ...]) -> str:
    """Mean ± std over the seeds of each metric of ``keys`` (3 decimals; accuracies × 100, 1)."""
    values = {key: mean_std([m[key] for m in per_seed.values()]) for key in keys}
    return format_cell(values, keys, decimals=3)


def paired_differences(rows: dict[str, Any], reference: str = "baseline",
                       keys: tuple[str, ...] = ("MAE", "Corr")) -> dict[str, dict[str, Any]]:
    """Each variant minus ``reference``, seed by seed (same seeds, folds and pre-training).

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


def _main_table(summary: dict[str, Any]) -> list[str]:
    """The table's rows: mean ± std over seeds per variant, validation MAE, selected epochs."""
    folds = summary["folds"]
    pooled = ("test metrics of the official test split (685 clips)"
              if summary["table"] == "mosi_text" else
              f"test metrics of each fold averaged over the folds {folds} (each fold's test "
              "part: its held-out videos)")
    lines = [f"### {summary['table']} (preset `{summary['config']}`)", "",
             f"Mean ± sample std over seeds of the {pooled} (MMSA's metrics, "
             "`mtobjectives.metrics.msa_metrics`; accuracies and F1 × 100). Model selection: "
             "lowest validation MAE.", "",
             "| objective | seeds | " + " | ".join(h for h, _ in COLUMNS)
             + " | valid MAE | selected epoch | summed run time (s) |",
             "|---" * (len(COLUMNS) + 5) + "|"]
    for variant, row in summary["rows"].items():
        per_seed = row["per_seed"]
        if not per_seed:
            lines.append(f"| {VARIANT_NAMES[variant]} | 0 | " + " | ".join(
                "—" for _ in COLUMNS) + " | — | — | — |")
            continue
        valid = mean_std([m["MAE"] for m in row["valid_per_seed"].values()])
        chosen = row.get("selected_epochs") or []
        epochs = f"{np.mean(chosen):.1f} ({min(chosen)}–{max(chosen)})" if chosen else "—"
        lines.append(f"| {VARIANT_NAMES[variant]} | {len(per_seed)} | "
                     + " | ".join(cell(per_seed, keys) for _, keys in COLUMNS)
                     + f" | {format_cell({'MAE': valid}, ('MAE',), 3)} | {epochs} | "
                     f"{row['train_seconds']:.0f} |")
    return lines


def _per_fold_table(summary: dict[str, Any]) -> list[str]:
    """Per fold: test MAE / Corr (validation MAE), mean over the seeds; nothing for one fold."""
    folds = summary["folds"]
    if len(folds) < 2:
        return []
    lines = ["", "Per fold (mean over the seeds each fold has): test MAE / test Corr "
             "(validation MAE)", "",
             "| objective | " + " | ".join(f"fold {f}" for f in folds) + " |",
             "|---" * (len(folds) + 1) + "|"]
    for variant, row in summary["rows"].items():
        cells = []
        for fold in folds:
            entry = row["per_fold"].get(fold) or row["per_fold"].get(str(fold))
            cells.append("—" if not entry else
                         f"{np.mean(entry['MAE']):.3f} / {np.mean(entry['Corr']):.3f} "
                         f"({np.mean(entry['valid_MAE']):.3f}; {len(entry['MAE'])} seed(s))")
        lines.append(f"| {VARIANT_NAMES[variant]} | " + " | ".join(cells) + " |")
    return lines


def _paired_table(summary: dict[str, Any]) -> list[str]:
    """Each variant minus the baseline, seed by seed (nothing without a baseline row)."""
    paired = paired_differences(summary["rows"])
    if not paired:
        return []
    lines = ["", "Paired difference to the baseline objective (variant − baseline, seed by "
             "seed, each seed's fold average; mean ± sample std over the seeds; \"better\": "
             "seeds in which the variant has the lower MAE / higher Corr)", "",
             "| objective | seeds | Δ MAE | better (MAE) | Δ Corr | better (Corr) |",
             "|---|---|---|---|---|---|"]
    for variant, entry in paired.items():
        n = len(entry["seeds"])
        mae, corr = entry["MAE"], entry["Corr"]
        lines.append(f"| {VARIANT_NAMES[variant]} | {n} | {mae['mean']:+.3f} ± "
                     f"{mae['std']:.3f} | {mae['better']}/{n} | {corr['mean']:+.3f} ± "
                     f"{corr['std']:.3f} | {corr['better']}/{n} |")
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
        lines.append(f"| {VARIANT_NAMES[variant]} | {len(row['valid_curves'])} | "
                     + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict[str, Any], wall: float, hw: str, argv: list[str]) -> str:
    """``table.md``: the main table, per fold, paired differences, curves, the command."""
    lines = (_main_table(summary) + _per_fold_table(summary) + _paired_table(summary)
             + _curves_table(summary))
    notes = [f"{VARIANT_NAMES[v]}: {', '.join(r['incomplete'])} (not in the table)"
             for v, r in summary["rows"].items() if r["incomplete"]]
    timing = ("table written from finished runs (--report-only)" if "--report-only" in argv
              else f"this invocation's wall time {wall / 60:.1f} min")
    lines += ["", f"Command: `python examples/dmmsa/evaluate_real.py {' '.join(argv)}`; "
              f"{timing}; hardware: {hw}. Run time = summed "
              "wall seconds of the row's train.py runs (each pre-training counted in every row "
              "that uses it)."]
    if notes:
        lines += ["", "Unfinished: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.report_only:
        run_jobs(plan(args), args.jobs, args.out / "logs", args.keep_checkpoints)
    wall = time.perf_counter() - started
    summary = collect(args)
    hw = hardware()
    summary.update({"wall_seconds_this_invocation": wall, "hardware": hw, "argv": argv,
                    "paired_to_baseline": paired_differences(summary["rows"])})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary, wall, hw, argv)
    (args.out / "table.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
