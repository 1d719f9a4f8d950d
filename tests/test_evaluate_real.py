"""examples/dmmsa/evaluate_real.py: the run plan, the clean-up of finished runs, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dmmsa import evaluate_real


def test_plan_pretrains_once_per_fold_and_seed_and_pairs_every_variant_with_it(tmp_path):
    args = evaluate_real.parse_args(["--table", "mosi400", "--seeds", "1", "12", "--folds", "0",
                                     "2", "--variants", "dmmsa", "baseline", "--out",
                                     str(tmp_path)])
    jobs = evaluate_real.plan(args)
    pretrains = [job for job in jobs if job.after is None]
    assert [job.name for job in pretrains] == ["fold0 seed1 pretrain", "fold2 seed1 pretrain",
                                               "fold0 seed12 pretrain", "fold2 seed12 pretrain"]
    fusions = [job for job in jobs if job.after is not None and job.marker == "results.json"]
    assert len(fusions) == 8
    text_alone = [job for job in jobs if job.marker == "text_alone.json"]
    assert [job.after for job in text_alone] == pretrains  # one per pre-training, after it
    assert all(job.out == job.after.out for job in text_alone)
    for job in fusions:
        fold, seed, variant = job.name.split()
        assert job.after.name == f"{fold} {seed} pretrain"
        assert job.out == tmp_path / fold / seed / variant
        assert job.argv[job.argv.index("--stage") + 1] == "fusion"
        assert ("--objective" in job.argv) == (variant == "baseline")


def test_text_table_refuses_the_ablations_that_do_not_apply():
    with pytest.raises(SystemExit):
        evaluate_real.parse_args(["--table", "mosi_text", "--variants", "no-cl"])


def test_clean_deletes_the_resume_checkpoint_and_the_pretrained_copy_only(tmp_path):
    pretrain = evaluate_real.Job("p", tmp_path / "pretrain", [])
    fusion = evaluate_real.Job("f", tmp_path / "dmmsa", [], after=pretrain)
    for job in (pretrain, fusion):
        for name in ("checkpoint.pt", "pretrained.pt", "model_best.pt", "fusion.csv"):
            (job.out / "seed1").mkdir(parents=True, exist_ok=True)
            (job.out / "seed1" / name).write_text("x")
        (job.out / "results.json").write_text("{}")
        job.clean()
    assert sorted(p.name for p in (tmp_path / "pretrain" / "seed1").iterdir()) == [
        "fusion.csv", "model_best.pt", "pretrained.pt"]  # the fusion runs copy pretrained.pt
    assert sorted(p.name for p in (tmp_path / "dmmsa" / "seed1").iterdir()) == [
        "fusion.csv", "model_best.pt"]


def fake_result(out: Path, mae: float, corr: float, valid_mae: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    test = {"MAE": mae, "Corr": corr, "Has0_acc_2": 0.8, "Non0_acc_2": 0.8,
            "Has0_F1_score": 0.8, "Non0_F1_score": 0.8, "Mult_acc_7": 0.4}
    (out / "results.json").write_text(json.dumps({"per_seed": [{
        "test": test, "wall_seconds": 10.0,
        "phases": {"fusion": {"valid": {"MAE": valid_mae, "Corr": corr}, "best_epoch": 3,
                              "curve": {"val_MAE": [valid_mae + 0.2, valid_mae]}}},
    }]}))


def test_table_averages_folds_then_seeds_and_pairs_each_variant_with_the_baseline(tmp_path):
    rng = np.random.default_rng(0)
    maes = {v: rng.uniform(0.7, 1.0, size=(2, 4)) for v in ("dmmsa", "baseline")}
    corrs = {v: rng.uniform(0.5, 0.8, size=(2, 4)) for v in ("dmmsa", "baseline")}
    for v in maes:
        for s, seed in enumerate((1, 12)):
            for fold in range(4):
                fake_result(tmp_path / f"fold{fold}" / f"seed{seed}" / v, maes[v][s, fold],
                            corrs[v][s, fold], 0.9)
    args = evaluate_real.parse_args(["--table", "mosi400", "--seeds", "1", "12", "--variants",
                                     "dmmsa", "baseline", "--out", str(tmp_path)])
    summary = evaluate_real.collect(args)
    for v in maes:
        per_seed = summary["rows"][v]["per_seed"]
        assert [per_seed[s]["MAE"] for s in (1, 12)] == pytest.approx(maes[v].mean(axis=1))
    paired = evaluate_real.paired_differences(summary["rows"])
    diffs = maes["dmmsa"].mean(axis=1) - maes["baseline"].mean(axis=1)
    assert paired["dmmsa"]["MAE"]["diffs"] == pytest.approx(diffs)
    assert paired["dmmsa"]["MAE"]["mean"] == pytest.approx(diffs.mean())
    assert paired["dmmsa"]["MAE"]["std"] == pytest.approx(diffs.std(ddof=1))
    assert paired["dmmsa"]["MAE"]["better"] == int((diffs < 0).sum())
    corr_diffs = corrs["dmmsa"].mean(axis=1) - corrs["baseline"].mean(axis=1)
    assert paired["dmmsa"]["Corr"]["better"] == int((corr_diffs > 0).sum())
    text = evaluate_real.markdown(summary, 1.0, "test machine", ["--table", "mosi400"])
    assert f"{diffs.mean():+.3f} ± {diffs.std(ddof=1):.3f}" in text


def test_a_seed_missing_a_fold_is_left_out_of_the_table_and_named(tmp_path):
    for fold in range(4):
        fake_result(tmp_path / f"fold{fold}" / "seed1" / "dmmsa", 0.8, 0.7, 0.9)
    for fold in range(3):
        fake_result(tmp_path / f"fold{fold}" / "seed12" / "dmmsa", 0.1, 0.9, 0.9)
    args = evaluate_real.parse_args(["--table", "mosi400", "--seeds", "1", "12", "--variants",
                                     "dmmsa", "--out", str(tmp_path)])
    summary = evaluate_real.collect(args)
    assert list(summary["rows"]["dmmsa"]["per_seed"]) == [1]
    assert summary["rows"]["dmmsa"]["incomplete"] == ["seed 12: 3/4 folds"]
    assert evaluate_real.paired_differences(summary["rows"]) == {}  # no baseline row


def test_epoch_means_average_over_the_runs_that_reach_each_epoch():
    assert evaluate_real.epoch_means([[1.0, 2.0, 3.0], [3.0, 4.0]]) == [2.0, 3.0, 3.0]
    assert evaluate_real.epoch_means([]) == []


def test_read_column_skips_missing_files_and_nan_cells(tmp_path):
    path = tmp_path / "fusion.csv"
    assert evaluate_real.read_column(path, "loss_CL") == []
    path.write_text("epoch,loss_CL\n1,0.5\n2,nan\n3,0.25\n")
    assert evaluate_real.read_column(path, "loss_CL") == [[0.5, 0.25]]
    assert evaluate_real.read_column(path, "loss_MSC") == []


def test_table_shows_the_mean_validation_curve_of_each_row(tmp_path):
    for fold in range(4):
        fake_result(tmp_path / f"fold{fold}" / "seed1" / "dmmsa", 0.8, 0.7, 0.9 + 0.1 * fold)
    args = evaluate_real.parse_args(["--table", "mosi400", "--seeds", "1", "--variants",
                                     "dmmsa", "--out", str(tmp_path)])
    text = evaluate_real.markdown(evaluate_real.collect(args), 1.0, "test machine", [])
    assert "| DMMSA | 4 | 1.250 | 1.050 |" in text  # means of 1.1..1.4 and of 0.9..1.2
