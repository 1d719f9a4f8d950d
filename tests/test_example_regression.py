"""``examples/dmmsa/train.py`` gives the same numbers as when the fixture was written.

A short run of both stages on a tiny synthetic file, with the DMMSA objective and with the
baseline objective: every per-epoch loss of every task of every stage (the CSV rows), the task
weights, the validation MAE and the test metrics are compared, to 6 significant digits, with
``tests/fixtures/regression_synthetic.json``. A refactoring of the reference system must leave them
unchanged; a deliberate change of what is trained rewrites the fixture::

    PYTHONPATH=.:examples python tests/test_example_regression.py --write

(and says why in the commit). The numbers are CPU numbers of one thread; another CPU or torch
version may round differently in the last digits.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from dmmsa import synthetic, train

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "regression_synthetic.json"
SIGNIFICANT = 6
RUNS = {
    "dmmsa": ["--stage", "both"],
    "baseline": ["--stage", "fusion", "--objective", "baseline"],
}
COMMON = ["--pretrain-epochs", "1", "--epochs", "3", "--batch-size", "16", "--seeds", "1",
          "--threads", "1", "--save-every", "0"]
LOGGED = ("train_loss", "lr", "val_MAE")  # besides every loss_* and weight_* column


def _numbers_of(out: Path) -> dict[str, Any]:
    """The per-epoch numbers of every phase and the test metrics of one run."""
    result = json.loads((out / "results.json").read_text())["per_seed"][0]
    phases = {}
    for phase in result["phases"]:
        with open(out / "seed1" / f"{phase}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        phases[phase] = {key: [float(row[key]) for row in rows] for key in rows[0]
                         if key.startswith(("loss_", "weight_")) or key in LOGGED}
    return {"phases": phases, "test": result["test"]}


def run_all(root: Path) -> dict[str, Any]:
    data = synthetic.make_synthetic(root / "tiny.pkl", seed=0, n_train=48, n_valid=15,
                                    n_test=15)
    threads = torch.get_num_threads()
    numbers = {}
    try:
        for name, flags in RUNS.items():
            out = root / name
            assert train.main(["--data", str(data), "--out", str(out), *COMMON, *flags]) == 0
            numbers[name] = _numbers_of(out)
    finally:
        torch.set_num_threads(threads)
    return numbers


def _same(expected: Any, actual: Any, where: str) -> list[str]:
    """The places where ``actual`` differs from ``expected`` beyond 6 significant digits."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or sorted(expected) != sorted(actual):
            keys = sorted(actual) if isinstance(actual, dict) else actual
            return [f"{where}: keys {sorted(expected)} != {keys}"]
        return [d for key in expected for d in _same(expected[key], actual[key], f"{where}.{key}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return [f"{where}: {expected} != {actual}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual))
                for d in _same(e, a, f"{where}[{i}]")]
    if math.isnan(expected) and math.isnan(actual):
        return []
    if f"{expected:.{SIGNIFICANT - 1}e}" == f"{actual:.{SIGNIFICANT - 1}e}" or math.isclose(
            expected, actual, rel_tol=10.0 ** (1 - SIGNIFICANT) / 2, abs_tol=1e-12):
        return []
    return [f"{where}: expected {expected!r}, got {actual!r}"]


def test_a_short_synthetic_run_gives_the_recorded_losses_and_metrics(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    actual = run_all(tmp_path)
    differences = _same(expected["runs"], actual, "runs")
    assert not differences, "\n".join(differences[:20])


def test_the_comparison_notices_a_change_in_the_sixth_digit() -> None:
    assert _same({"a": [1.23456]}, {"a": [1.23456]}, "x") == []
    assert _same({"a": [1.23456]}, {"a": [1.234561]}, "x") == []
    assert _same({"a": [1.23456]}, {"a": [1.23458]}, "x") != []
    assert _same({"a": [1.0]}, {"b": [1.0]}, "x") != []


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        numbers = run_all(Path(root))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    fixture = {"about": "tests/test_example_regression.py: numbers of a short synthetic run of "
                        "examples/dmmsa/train.py", "argv": COMMON, "flags": RUNS,
               "runs": numbers}
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
