"""The two tables of ``docs/results.md`` (real CMU-MOSI), each one invocation of ``dmmsa.compare``.

Usage (from the repository root; the pickles come from ``python -m dmmsa.prepare``)::

    python examples/dmmsa/evaluate_real.py --table mosi400 --jobs 2
    python examples/dmmsa/evaluate_real.py --table mosi_text --jobs 2
    python examples/dmmsa/evaluate_real.py --table mosi400 --seeds 1 12 --variants dmmsa baseline

``--table mosi400`` is ``python -m dmmsa.compare --data DIR/mosi400_fold0.pkl ...
DIR/mosi400_fold3.pkl --config mosi400 --name mosi400 --variants dmmsa baseline no-msc no-cl
no-gdwg --seeds 1 12 123 1234 12345 --out runs/eval/mosi400`` (``DIR``: ``--data-dir``, default
``runs/real``); ``--table mosi_text`` is ``--data DIR/mosi_official_text.pkl --config mosi_text
--name mosi_text --variants dmmsa baseline no-msc --seeds 1 12 123``. Everything else (the
pre-training once per fold × seed, the paired fusion runs, resuming, the tables and
``paired.png``) is ``dmmsa.compare``'s; ``--print-command`` prints the equivalent command.

- ``mosi400``: 400 clips, T/A/V, 4 folds grouped by video (a validation part of 2 training
  videos in each fold). Metrics: the test metrics of each fold (``msa_metrics``, MOSI) averaged
  over the 4 folds, then mean ± sample std over the seeds.
- ``mosi_text``: all of CMU-MOSI, official split, text only. ``no-cl`` and ``no-gdwg`` do not
  apply: with CL off GDWG weighs one task (``Uni``), whose weight is 1 under both GDWG and equal
  weights, so ``no-gdwg`` equals ``dmmsa``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmmsa import compare
from dmmsa.compare import VARIANT_FLAGS, VARIANT_NAMES, Job, plan, run_jobs
from dmmsa.compare_tables import collect, epoch_means, markdown, paired_differences, read_column

__all__ = ["TABLES", "VARIANT_FLAGS", "VARIANT_NAMES", "Job", "collect", "compare_argv",
           "epoch_means", "main", "markdown", "paired_differences", "parse_args", "plan",
           "read_column", "run_jobs"]

PROGRAM = "python examples/dmmsa/evaluate_real.py"
TABLES: dict[str, dict[str, Any]] = {
    "mosi400": {"config": "mosi400", "files": [f"mosi400_fold{k}.pkl" for k in range(4)],
                "variants": ["dmmsa", "baseline", "no-msc", "no-cl", "no-gdwg"],
                "seeds": [1, 12, 123, 1234, 12345]},
    "mosi_text": {"config": "mosi_text", "files": ["mosi_official_text.pkl"],
                  "variants": ["dmmsa", "baseline", "no-msc"], "seeds": [1, 12, 123]},
}


def _table_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--table", required=True, choices=sorted(TABLES))
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: the table's (mosi400 5 seeds, mosi_text 3)")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANT_FLAGS))
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
    parser.add_argument("--print-command", action="store_true",
                        help="print the equivalent python -m dmmsa.compare command and exit")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further train.py arguments for every run (after everything else)")
    args = parser.parse_args(argv)
    if args.table == "mosi_text":
        unusable = [v for v in args.variants or [] if v in ("no-cl", "no-gdwg")]
        if unusable:
            parser.error(f"{unusable} do not apply to the text-only table (CL is off there, and "
                         "GDWG then weighs one task with weight 1)")
    return args


def compare_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m dmmsa.compare`` arguments of a ``--table`` invocation."""
    table = TABLES[args.table]
    argv = ["--data", *(str(args.data_dir / name) for name in table["files"]),
            "--config", table["config"], "--name", args.table,
            "--variants", *(args.variants or table["variants"]),
            "--seeds", *map(str, args.seeds or table["seeds"]),
            "--jobs", str(args.jobs), "--out", str(args.out or Path("runs/eval") / args.table)]
    if args.folds is not None:
        argv += ["--folds", *map(str, args.folds)]
    argv += [flag for flag, on in (("--report-only", args.report_only),
                                   ("--keep-checkpoints", args.keep_checkpoints)) if on]
    return argv + (["--extra", *args.extra] if args.extra else [])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments of ``dmmsa.compare`` that a ``--table`` invocation stands for."""
    table_args = _table_args(argv)
    args = compare.parse_args(compare_argv(table_args))
    args.program, args.print_command = PROGRAM, table_args.print_command
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.print_command:
        print("python -m dmmsa.compare " + shlex.join(compare_argv(_table_args(argv))))
        return 0
    return compare.main(argv, args=args)


if __name__ == "__main__":
    sys.exit(main())
