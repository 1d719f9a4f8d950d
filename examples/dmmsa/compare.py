"""Paired comparison of fusion objectives on your own prepared data: one resumable command.

For every fold (one MMSA pickle each, or one pickle with its official split) and seed it runs
``train.py --stage pretrain`` once, copies that ``pretrained.pt`` into one folder per variant and
runs ``train.py --stage fusion`` there: every variant of a fold and seed starts from the same
pre-trained encoders, so two rows are paired run by run. The text model at the end of the
pre-training is also evaluated alone (``text_alone.py``), the row every objective must beat.

Examples (``$DATA`` is your folder of pickles, e.g. made by ``python -m dmmsa.prepare``)::

    # 4 folds (one pickle each), 2 objectives, 3 seeds, 2 runs at a time
    python -m dmmsa.compare --data $DATA/fold0.pkl $DATA/fold1.pkl $DATA/fold2.pkl \\
        $DATA/fold3.pkl --config mosi400 --variants dmmsa baseline --seeds 1 12 123 \\
        --jobs 2 --out runs/compare/mine
    # one pickle with its own train/valid/test split, text only, a variant of your own
    python -m dmmsa.compare --data $DATA/mine_text.pkl --config mosi_text \\
        --variant lr1e4="--lr 1e-4" --variants dmmsa baseline lr1e4 --out runs/cmp
    # validation-only selection table (no test metric read): OUT/selection.md
    python -m dmmsa.compare --data $DATA/fold*.pkl --config mosi400 --seeds 1 12 \\
        --variants baseline dmmsa sg warmup --selection --out runs/study

A run whose ``results.json`` exists is skipped: rerun the same command to resume (a run that
was stopped mid-way continues from its last epoch's checkpoint, ``train.py --resume``). It
is re-used only when it was made with the settings this command gives it (the fingerprint in its
``config.json``: the variant's flags, the preset, the data's resolved path and content); a
finished run made with other settings is refused before anything is trained, with the setting
that differs named. One ``compare`` at a time per ``--out`` (``OUT/.lock``). Outputs in
``--out``: ``fold<k>/seed<s>/{pretrain,<variant>}/`` (train.py's folders), ``logs/``,
``table.md`` / ``table.json`` (test metrics: mean ± std over seeds of each seed's fold mean, per
fold, the pretrained text model alone, what the fusion stage adds, the paired test against each
``--reference``, validation curves), ``paired.png`` (the paired differences per seed with
their interval) and ``curves.png`` (validation MAE per fusion epoch, mean over the runs of each
row); with ``--selection``: ``selection.md`` / ``selection.json`` and
``selection_curves.png`` instead (validation only, rows sorted by mean validation MAE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dmmsa import configs, runlock
from dmmsa.variants import TEXT_ALONE_LABEL, VARIANT_FLAGS, VARIANT_NAMES, variant_label

__all__ = ["TEXT_ALONE_LABEL", "VARIANT_FLAGS", "VARIANT_NAMES", "Job", "MissingPretrained",
           "changed_cells",
           "hardware", "main", "parse_args", "plan", "run_jobs", "variant_label"]

HERE = Path(__file__).resolve().parent
TRAIN = HERE / "train.py"
TEXT_ALONE = HERE / "text_alone.py"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _user_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=FLAGS`` of ``--variant`` as ``(NAME, [flags])``; an ArgumentTypeError if malformed."""
    name, sep, flags = text.partition("=")
    if not sep or not _NAME.fullmatch(name) or name == "pretrain":
        raise argparse.ArgumentTypeError(
            f"--variant must be NAME=\"--flag ...\" with NAME made of letters, digits and "
            f"_.+- (not 'pretrain'), got {text!r}")
    return name, shlex.split(flags)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dmmsa.compare", description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", type=Path, nargs="+", required=True,
        help="MMSA pickles, one per fold (fold k = the k-th file), or one with its own split")
    add("--config", required=True, choices=configs.config_names(),
        help="train.py preset of every run (mosi400: T/A/V MiniLM; mosi_text: text only)")
    add("--variants", nargs="+", default=["dmmsa", "baseline"],
        help=f"rows to train (default: dmmsa baseline); built in: {', '.join(VARIANT_FLAGS)}")
    add("--variant", type=_user_variant, action="append", default=[], metavar="NAME=FLAGS",
        help="define a variant: NAME=\"train.py fusion flags\" (repeatable), then list NAME "
        "in --variants, e.g. --variant tau1=\"--cl-temperature 1.0\"")
    add("--seeds", type=int, nargs="+", default=None, help="default: the preset's seeds")
    add("--folds", type=int, nargs="+", default=None,
        help="subset of the folds (indices into --data; default: all)")
    add("--reference", nargs="+", default=None,
        help="rows every other row is paired with, each one of --variants (one paired table "
        "each; the figure paired.png is against the first; default: baseline)")
    add("--selection", action="store_true",
        help="validation-only report (selection.md/.json): no test metric is read or written, "
        "rows sorted by mean validation MAE, the paired validation MAE against each --reference")
    add("--name", default=None, help="the table's title (default: the preset's name)")
    add("--jobs", type=int, default=1, help="train.py processes at once")
    add("--out", type=Path, required=True, help="folder of every run and of the tables")
    add("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="of every run")
    add("--threads", type=int, default=1, help="CPU threads of every run")
    add("--report-only", action="store_true",
        help="write the table from the finished runs, train nothing")
    add("--keep-checkpoints", action="store_true",
        help="keep each finished run's resume checkpoint and pretrained.pt copy (default: "
        "delete them, ~0.5 GB per run with MiniLM)")
    add("--extra", nargs=argparse.REMAINDER, default=[],
        help="further train.py arguments for every run (last on the command line)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, checked (``--help`` says how to run it on your own data)."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.variant_flags = {**VARIANT_FLAGS}
    for name, flags in args.variant:
        if name in VARIANT_FLAGS and VARIANT_FLAGS[name] != flags:
            parser.error(f"--variant {name}=...: {name!r} is a built-in variant "
                         f"({' '.join(VARIANT_FLAGS[name]) or 'no flags'}); choose another name")
        args.variant_flags[name] = flags
    unknown = [v for v in args.variants if v not in args.variant_flags]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; built in: {list(VARIANT_FLAGS)}, or "
                     "define one with --variant NAME=\"--flag ...\"")
    if args.reference is not None and not set(args.reference) <= set(args.variants):
        parser.error(f"--reference {args.reference}: each must be one of --variants "
                     f"{args.variants}")
    args.reference = args.reference or ["baseline"]
    for option in ("variants", "reference"):
        values = getattr(args, option)
        if len(set(values)) != len(values):
            parser.error(f"--{option} must be distinct, got {values}")
    args.seeds = list(args.seeds or configs.get_config(args.config).train.seeds)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    n_files = len(args.data)
    args.folds = list(range(n_files)) if args.folds is None else args.folds
    if any(not 0 <= f < n_files for f in args.folds) or len(set(args.folds)) != len(args.folds):
        parser.error(f"--folds must be distinct indices into --data, in [0, {n_files - 1}]; "
                     f"got {args.folds}")
    if args.jobs < 1 or args.threads < 1:
        parser.error(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    args.name = args.name or args.config
    args.program = "python -m dmmsa.compare"
    return args


class MissingPretrained(RuntimeError):
    """A fusion run would start without its fold × seed's pre-trained encoders."""


class Job:
    """One subprocess (``train.py`` by default); ``after`` is the job whose output it needs.

    It is done when ``out / marker`` exists (``results.json`` for ``train.py``).
    """

    def __init__(self, name: str, out: Path, argv: list[str], after: Job | None = None,
                 before_start: Callable[[], None] | None = None, script: Path = TRAIN,
                 marker: str = "results.json") -> None:
        self.name, self.out, self.argv, self.after = name, out, argv, after
        self.before_start, self.script, self.marker = before_start, script, marker
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.returncode: int | None = None

    @property
    def done(self) -> bool:
        return (self.out / self.marker).exists()

    def checkpoints(self) -> list[Path]:
        """A ``train.py`` run's epoch checkpoints (``seed*/checkpoint.pt``); none for others."""
        return list(self.out.glob("seed*/checkpoint.pt")) if self.marker == "results.json" else []

    def clean(self) -> int:
        """Delete what a finished ``train.py`` run no longer needs; the bytes deleted.

        The resume checkpoint (model + AdamW state) and a fusion run's copy of the pre-trained
        weights go (~0.5 GB per run with MiniLM); ``model_best.pt``, the pre-training's
        ``pretrained.pt`` (the fusion runs copy it) and every log, CSV and JSON stay. Other
        jobs delete nothing.
        """
        if self.marker != "results.json":  # not a train.py run
            return 0
        paths = self.checkpoints()
        if self.after is not None:
            paths += self.out.glob("seed*/pretrained.pt")
        freed = 0
        for path in paths:
            freed += path.stat().st_size
            path.unlink()
        return freed


def _copier(source: Path, target: Path, name: str) -> Callable[[], None]:
    """Copy the fold × seed's ``pretrained.pt`` into a fusion folder, or refuse to start."""

    def copy() -> None:
        if not source.exists():
            raise MissingPretrained(
                f"{name}: {source} does not exist, so the fusion would start without unimodal "
                f"pre-training (not a paired run). Delete {source.parent.parent} to pre-train "
                "this fold and seed again, then rerun")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    return copy


def plan(args: argparse.Namespace) -> list[Job]:
    """Per seed and fold: a pre-training, the text model's evaluation, a fusion per variant."""
    jobs: list[Job] = []
    for seed in args.seeds:  # seed-major: whole seeds finish first
        for fold in args.folds:
            base = args.out / f"fold{fold}" / f"seed{seed}"
            common = ["--config", args.config, "--data", str(args.data[fold]), "--seeds",
                      str(seed), "--threads", str(getattr(args, "threads", 1)), "--device",
                      getattr(args, "device", "cpu"), "--save-every", "0"]
            pre_out = base / "pretrain"
            pre_argv = [*common, "--stage", "pretrain", "--out", str(pre_out), *args.extra]
            pretrain = Job(f"fold{fold} seed{seed} pretrain", pre_out, pre_argv)
            jobs.append(pretrain)
            jobs.append(Job(f"fold{fold} seed{seed} text-alone", pre_out, pre_argv,
                            after=pretrain, script=TEXT_ALONE, marker="text_alone.json"))
            flags = getattr(args, "variant_flags", VARIANT_FLAGS)
            for variant in args.variants:
                out = base / variant
                name = f"fold{fold} seed{seed} {variant}"
                copy = _copier(pre_out / f"seed{seed}" / "pretrained.pt",
                               out / f"seed{seed}" / "pretrained.pt", name)
                shared = (["--feature-cache", str(base / "encoder_features")]
                          if "--freeze-encoders" in [*flags[variant], *args.extra] else [])
                jobs.append(Job(name, out, [*common, "--stage", "fusion", *flags[variant],
                                            *shared, "--out", str(out), *args.extra],
                                after=pretrain, before_start=copy))
    return jobs


def changed_cells(jobs: Sequence[Job]) -> list[str]:
    """Each finished ``train.py`` cell whose settings are not those its flags give now.

    A cell's ``config.json`` holds the fingerprint of what it trained (``configs.fingerprint``:
    every setting, the data by resolved path and content digest); the fingerprint that this
    command's flags give the cell is resolved here, as ``train.py`` would, without training.
    """
    from dmmsa import cli

    facts: dict[tuple[str, object], Any] = {}
    changed = []
    for job in jobs:
        if job.script != TRAIN or not job.done:
            continue
        args = cli.parse_args(job.argv)
        path = cli.data_path(args)
        key = (str(path.resolve()), cli.load_range(args))
        if key not in facts:
            facts[key] = _facts(path, key[1])
        now = configs.fingerprint(cli.resolve_config(args, facts[key], path, log=None))
        saved = _saved_fingerprint(job.out / "config.json")
        differences = (["(no fingerprint: written by an older train.py)"] if saved is None
                       else configs.fingerprint_differences(saved, now))
        if differences:
            changed.append(f"{job.name} in {job.out}: {'; '.join(differences[:3])}"
                           + ("; ..." if len(differences) > 3 else ""))
    return changed


def _facts(path: Path, label_range: object) -> Any:
    from dmmsa import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.MMSADataWarning)  # train.py reports them
        return data.facts_of(data.load_mmsa(path, label_range=label_range))  # type: ignore[arg-type]


def _saved_fingerprint(config_json: Path) -> dict[str, str] | None:
    try:
        saved = json.loads(config_json.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if isinstance(saved, dict) else None


def _finished(job: Job, failed: list[Job], keep_checkpoints: bool) -> None:
    code = job.process.poll() if job.process else 0
    job.returncode = code
    status = "ok" if code == 0 and job.done else f"FAILED (exit {code})"
    if status != "ok":
        failed.append(job)
    elif not keep_checkpoints:
        job.clean()
    print(f"[{time.strftime('%H:%M:%S')}] {job.name}: {status} in "
          f"{time.perf_counter() - job.started:.0f} s", flush=True)


def _start(job: Job, log_dir: Path) -> None:
    # an earlier command stopped this run: its epoch checkpoint continues it (train.py --resume
    # gives the uninterrupted result, and refuses a checkpoint of other settings, naming it)
    resume = bool(job.checkpoints())
    log_path = log_dir / (job.name.replace(" ", "_") + ".log")
    log = open(log_path, "a" if resume else "w")  # noqa: SIM115
    job.started = time.perf_counter()
    argv = [*job.argv, "--resume"] if resume else job.argv
    job.process = subprocess.Popen([sys.executable, str(job.script), *argv], stdout=log,
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1",
                                        "TQDM_DISABLE": "1"})
    print(f"[{time.strftime('%H:%M:%S')}] {'resume' if resume else 'start'} {job.name}",
          flush=True)


def run_jobs(jobs: list[Job], n_parallel: int, log_dir: Path,
             keep_checkpoints: bool = False) -> list[Job]:
    """Run the unfinished jobs, ``n_parallel`` at once, each after its ``after``; the failed."""
    pending = [job for job in jobs if not job.done]
    print(f"{len(jobs)} runs, {len(jobs) - len(pending)} finished earlier (skipped), "
          f"{len(pending)} to run, {n_parallel} at once", flush=True)
    if not keep_checkpoints:  # a command stopped between a run's end and its clean-up
        freed = sum(job.clean() for job in jobs if job.done)
        if freed:
            print(f"deleted {freed / 1e6:.0f} MB of resume files that runs finished earlier "
                  "had left (--keep-checkpoints keeps them)", flush=True)
    running: list[Job] = []
    failed: list[Job] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    while pending or running:
        for job in [job for job in running if job.process and job.process.poll() is not None]:
            running.remove(job)
            _finished(job, failed, keep_checkpoints)
        for job in list(pending):
            if len(running) >= n_parallel:
                break
            if job.after is not None and not job.after.done:
                if job.after in failed or job.after.returncode is not None:
                    pending.remove(job)  # its pre-training failed
                    failed.append(job)
                    print(f"{job.name}: skipped, its pre-training failed", flush=True)
                continue
            pending.remove(job)
            try:
                if job.before_start is not None:
                    job.before_start()
            except MissingPretrained as error:
                failed.append(job)
                print(f"error: {error}", flush=True)
                continue
            _start(job, log_dir)
            running.append(job)
        if running:
            time.sleep(0.2)
    if failed:
        print(f"{len(failed)} run(s) failed: {[job.name for job in failed]} (see "
              f"{log_dir})", flush=True)
    return failed


def hardware(threads: int = 1) -> str:
    """The CPU model, the visible CPUs, Python and torch versions, threads per run."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    return (f"{model}, {os.cpu_count()} logical CPU(s) visible (shared with other users), "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            + ("one thread" if threads == 1 else f"{threads} threads") + " per train.py process")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Train what is missing, then write the tables and the figure; 1 if a run failed."""
    from dmmsa import compare_tables

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv) if args is None else args
    started = time.perf_counter()
    with runlock.hold_output(args.out, "compare"):
        jobs = plan(args)
        changed = changed_cells(jobs)
        if changed:
            raise SystemExit(
                f"compare: error: --out {args.out}: {len(changed)} finished run(s) were made "
                f"with other settings than this command gives them, and would be reported "
                f"under it: {changed[0]}" + (f" (and {len(changed) - 1} more)"
                                             if len(changed) > 1 else "")
                + ". Delete those folders to train them again, or choose another --out")
        failed: list[Job] = []
        if not args.report_only:
            failed = run_jobs(jobs, args.jobs, args.out / "logs", args.keep_checkpoints)
        compare_tables.write_report(args, argv, time.perf_counter() - started,
                                    hardware(getattr(args, "threads", 1)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
