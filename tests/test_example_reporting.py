"""``dmmsa.reporting``: one rule for every table cell, and the tables of ``train.py`` and
``evaluate_real.py`` exactly as they were before the two shared it.

``tests/fixtures/reporting_tables.json`` holds ``results.md`` and ``evaluate_real``'s table as the
code wrote them before the refactoring into ``dmmsa.reporting`` (the tables of
``docs/results.md`` were produced with that rounding). ``table_md`` was updated once, on purpose,
when the paired section gained the paired test (``dmmsa.stats``: bootstrap interval, Wilcoxon p,
the number of pairs); ``table_md_before_paired_test`` is the table before it, and every other
section must still be byte for byte the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dmmsa import evaluate_real, reporting

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "reporting_tables.json"

SUMMARY = {
    "seeds": [1, 12],
    "test": {key: {"mean": mean, "std": std} for key, mean, std in [
        ("Has0_acc_2", 0.8397, 0.01234), ("Non0_acc_2", 0.857, 0.0051),
        ("Has0_F1_score", 0.83925, 0.0), ("Non0_F1_score", 0.857, 0.01),
        ("Mult_acc_5", 0.5112, 0.0213), ("Mult_acc_7", 0.4539, 0.00995),
        ("MAE", 0.71049, 0.012345), ("Corr", 0.79351, 0.0049999)]},
    "test_constrained": {},
    "pretrain": {"pretrain_T": {"MAE": {"mean": 1.23456, "std": 0.0345}}, "pretrain_A": {}},
}


def _fake_result(out: Path, mae: float, corr: float, valid_mae: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    test = {"MAE": mae, "Corr": corr, "Has0_acc_2": 0.8 + mae / 10, "Non0_acc_2": 0.81,
            "Has0_F1_score": 0.8, "Non0_F1_score": 0.8 - corr / 100, "Mult_acc_7": 0.4 + mae / 7}
    (out / "results.json").write_text(json.dumps({"per_seed": [{
        "test": test, "wall_seconds": 10.0,
        "phases": {"fusion": {"valid": {"MAE": valid_mae, "Corr": corr}, "best_epoch": 3,
                              "curve": {"val_MAE": [valid_mae + 0.2, valid_mae]}}},
    }]}))


def test_results_md_of_train_py_is_unchanged() -> None:
    expected = json.loads(FIXTURE.read_text())["results_md"]
    assert reporting.results_table("mosi", "DMMSA", "mosi", SUMMARY) == expected


def test_the_table_of_evaluate_real_is_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for variant in ("dmmsa", "baseline", "no-msc"):
        for seed in (1, 12, 123):
            for fold in range(4):
                _fake_result(tmp_path / f"fold{fold}" / f"seed{seed}" / variant,
                             rng.uniform(0.7, 1.0), rng.uniform(0.5, 0.8), rng.uniform(0.6, 0.9))
    args = evaluate_real.parse_args(["--table", "mosi400", "--seeds", "1", "12", "123",
                                     "--variants", "dmmsa", "baseline", "no-msc",
                                     "--out", str(tmp_path)])
    text = evaluate_real.markdown(evaluate_real.collect(args), 12.0, "test machine",
                                  ["--table", "mosi400"])
    fixture = json.loads(FIXTURE.read_text())
    assert text == fixture["table_md"]
    before = fixture["table_md_before_paired_test"]
    assert _without_paired_section(text) == _without_paired_section(before)
    old_rows = [line for line in before.splitlines()
                if line.startswith("| DMMSA") and line.endswith("/3 |")]
    assert len(old_rows) == 2
    for old in old_rows:  # the same Δ ± std and better counts, now with interval and p
        name, seeds, mae, better_mae, corr, better_corr = old.strip("| ").split(" | ")
        new = next(line for line in text.splitlines()
                   if line.startswith(f"| {name} | {seeds} | 12 | {mae} |"))
        assert f"| {better_mae} | {corr} |" in new and new.endswith(f"| {better_corr} |")


def _without_paired_section(text: str) -> str:
    """The table without its paired section (from its first line to the curves' section)."""
    start = text.index("\nPaired difference")
    return text[:start] + text[text.index("\nValidation MAE after each"):]


@pytest.mark.parametrize("decimals", [3, 4])
def test_one_rounding_rule_for_both_tables(decimals: int) -> None:
    values = {"MAE": (0.712345, 0.0123456), "Mult_acc_7": (0.453912, 0.0099876)}
    cell = reporting.format_cell(values, ("Mult_acc_7", "MAE"), decimals)
    accuracy, mae = cell.split(" / ")
    assert mae == f"{0.712345:.{decimals}f} ± {0.0123456:.{decimals}f}"
    assert accuracy == f"{45.3912:.{decimals - 2}f} ± {0.99876:.{decimals - 2}f}"


def test_mean_std_is_the_sample_std_and_zero_for_one_value() -> None:
    values = [0.3, 0.9, 0.4]
    assert reporting.mean_std(values) == pytest.approx((np.mean(values), np.std(values, ddof=1)))
    assert reporting.mean_std([0.5]) == (0.5, 0.0)


def test_results_md_of_one_seed_shows_no_spread_and_the_selected_epoch() -> None:
    summary = {**SUMMARY, "seeds": [1], "selected_epochs": [4]}
    table = reporting.results_table("mosi", "DMMSA", "mosi", summary)
    assert "±" not in table and "1 seed [1], so no spread" in table
    assert "| model | Acc-2 (has0/non0) |" in table and table.count("| selected epoch |") == 1
    assert "| 0.7105 | 0.7935 | 4 |" in table  # ours: MAE, Corr, the selected epoch
    assert "| paper: DMMSA | 83.97/85.70 | 83.92/85.70 |  | 45.39 | 0.710 | 0.793 |  |" in table
    assert "Unimodal pre-training, best validation MAE (1 seed): T 1.2346" in table
    several = reporting.results_table("mosi", "DMMSA", "mosi",
                                      {**SUMMARY, "selected_epochs": [4, 2]})
    assert "| 0.7105 ± 0.0123 | 0.7935 ± 0.0050 | 4, 2 |" in several


def test_the_weights_plot_shows_the_weighted_tasks_only(tmp_path: Path) -> None:
    def result(seed: int, weights: dict) -> dict:
        return {"seed": seed, "phases": {"fusion": {"curve": {"val_MAE": [1.0, 0.9],
                                                              "weights": weights}}}}

    fixed = {"MSR": [1.0, 1.0], "MSC": [1.0, 1.0], "Uni": [1.0, 1.0]}
    said: list[str] = []
    (tmp_path / "task_weights.png").write_bytes(b"stale")
    reporting.plot_curves([result(1, fixed)], tmp_path, log=said.append)
    assert not (tmp_path / "task_weights.png").exists() and (tmp_path / "val_mae.png").exists()
    assert said and "not drawn" in said[0]
    moving = {**fixed, "Uni": [0.5, 0.4], "CL": [0.5, 0.6]}
    assert reporting.weighted_tasks([{"weights": fixed}, {"weights": moving}]) == ["Uni", "CL"]
    reporting.plot_curves([result(1, moving)], tmp_path, log=said.append)
    assert (tmp_path / "task_weights.png").read_bytes()[:4] == b"\x89PNG"
