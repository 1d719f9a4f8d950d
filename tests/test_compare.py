"""``python -m dmmsa.compare``: the plan for any pickles, the study's variants, resuming, the
refusal of a fusion without pre-trained encoders, the paired test, the figure, the selection
table (validation only) and the pre-trained text model alone.

Most tests write fake ``results.json`` files or run a stand-in script instead of ``train.py``;
one runs the real command on a tiny synthetic file (a few optimiser steps per run).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from dmmsa import compare, compare_tables, evaluate_real, reporting, synthetic, text_alone, train

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = ("Has0_acc_2", "Non0_acc_2", "Has0_F1_score", "Non0_F1_score", "Mult_acc_7")



def args_for(tmp_path: Path, *extra: str, files: int = 4) -> list[str]:
    data = [str(tmp_path / f"f{k}.pkl") for k in range(files)]
    return ["--data", *data, "--config", "synthetic", "--out", str(tmp_path / "out"), *extra]


def fake_run(base: Path, variant: str, test_mae: float, valid_mae: float,
             test_corr: float = 0.5) -> None:
    """A finished fusion run (what ``train.py`` writes, trimmed to what the tables read)."""
    out = base / variant
    out.mkdir(parents=True, exist_ok=True)
    test = {"MAE": test_mae, "Corr": test_corr, **{k: 0.5 for k in METRICS}}
    (out / "results.json").write_text(json.dumps({"per_seed": [{
        "test": test, "wall_seconds": 10.0,
        "phases": {"fusion": {"valid": {"MAE": valid_mae, "Corr": 0.4}, "best_epoch": 2,
                              "curve": {"val_MAE": [valid_mae + 0.1, valid_mae]}}}}]}))


def fake_pretrain(base: Path, valid_mae: float, test_mae: float | None = None) -> None:
    """A finished pre-training (label M) and, with ``test_mae``, its ``text_alone.json``."""
    out = base / "pretrain"
    out.mkdir(parents=True, exist_ok=True)
    phase = {"best_epoch": 3, "label": "M", "valid": {"MAE": valid_mae, "Corr": 0.3},
             "curve": {"val_MAE": [valid_mae]}}
    (out / "results.json").write_text(json.dumps({"per_seed": [{
        "wall_seconds": 5.0, "phases": {"pretrain_T": phase}}]}))
    if test_mae is not None:
        (out / "text_alone.json").write_text(json.dumps({
            "label": "M", "valid": {"MAE": valid_mae, "Corr": 0.3}, "wall_seconds": 1.0,
            "test": {"MAE": test_mae, "Corr": 0.1, **{k: 0.5 for k in METRICS}}}))


# ----------------------------------------------------------------------------- the plan
def test_plan_runs_every_pickle_as_a_fold_with_the_study_flags(tmp_path: Path) -> None:
    args = compare.parse_args(args_for(tmp_path, "--variants", "baseline", "sg-warmup", "uw-sg",
                                       "--seeds", "1", "12", files=3))
    jobs = compare.plan(args)
    assert len(jobs) == 2 * 3 * (2 + 3)  # per fold x seed: pretrain, text alone, 3 fusions
    for job in jobs:
        fold, seed, kind = job.name.split()
        data = job.argv[job.argv.index("--data") + 1]
        assert data == str(tmp_path / f"f{fold[4:]}.pkl")
        assert job.argv[job.argv.index("--seeds") + 1] == seed[4:]
        if kind in ("pretrain", "text-alone"):
            assert job.out == tmp_path / "out" / fold / seed / "pretrain"
            assert job.argv[job.argv.index("--stage") + 1] == "pretrain"
            continue
        assert job.after is not None and job.after.name == f"{fold} {seed} pretrain"
        flags = job.argv[job.argv.index("fusion") + 1:job.argv.index("--out")]
        assert flags == compare.VARIANT_FLAGS[kind]
    assert compare.VARIANT_FLAGS["uw-sg"] == ["--weighting", "uncertainty", "--cl-detach-anchor"]


def test_the_study_variants_are_the_protocol_table_of_docs_results() -> None:
    text = (ROOT / "docs" / "results.md").read_text()
    protocol = text[text.index("## Study protocol"):]
    rows = re.findall(r"^\| `([a-z-]+)` \| [^|]* \| ([^|]*) \|", protocol, flags=re.M)
    assert len(rows) == 8
    for name, flags in rows:
        assert compare.VARIANT_FLAGS[name] == flags.replace("`", "").split(), name


def test_a_variant_defined_on_the_command_line(tmp_path: Path) -> None:
    args = compare.parse_args(args_for(tmp_path, "--variant", "tau1=--cl-temperature 1.0 --no-msc",
                                       "--variants", "tau1", "dmmsa", "--seeds", "1"))
    fusion = [job for job in compare.plan(args) if job.name.endswith("tau1")]
    assert len(fusion) == 4
    argv = fusion[0].argv
    assert argv[argv.index("fusion") + 1:argv.index("--out")] == ["--cl-temperature", "1.0",
                                                                  "--no-msc"]
    assert compare.variant_label("tau1") == "tau1"


@pytest.mark.parametrize(("extra", "message"), [
    (["--variants", "nope"], "unknown"),
    (["--variant", "sg=--no-msc"], "built-in"),
    (["--variant", "bad name=--no-msc"], "NAME"),
    (["--variant", "pretrain=--no-msc"], "pretrain"),
    (["--folds", "4"], "--folds"),
    (["--seeds", "1", "1"], "distinct"),
    (["--variants", "sg", "--reference", "dmmsa"], "--reference"),
])
def test_bad_arguments_are_refused_naming_them(tmp_path: Path, capsys, extra: list[str],
                                               message: str) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(args_for(tmp_path, *extra))
    assert message in capsys.readouterr().err


def test_help_says_how_to_run_it_on_your_own_data(capsys) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "$DATA/fold0.pkl" in text and "--selection" in text and "--variant" in text


def test_each_table_of_evaluate_real_is_one_compare_invocation(tmp_path: Path) -> None:
    argv = ["--table", "mosi_text", "--seeds", "1", "12", "--out", str(tmp_path)]
    table = evaluate_real.parse_args(argv)
    same = compare.parse_args(evaluate_real.compare_argv(evaluate_real._table_args(argv)))
    assert [(j.name, j.argv) for j in compare.plan(table)] == [
        (j.name, j.argv) for j in compare.plan(same)]
    assert same.data == [Path("runs/real/mosi_official_text.pkl")]
    assert same.variants == ["dmmsa", "baseline", "no-msc"] and same.config == "mosi_text"


# ---------------------------------------------------------------- running and resuming
STAND_IN = """
import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = Path(argv[argv.index("--out") + 1])
seed = argv[argv.index("--seeds") + 1]
with open(Path(sys.argv[0]).parent / "calls.txt", "a") as log:
    log.write(str(out) + (" --resume" if "--resume" in argv else "") + "\\n")
(out / f"seed{seed}").mkdir(parents=True, exist_ok=True)
if "pretrain" in argv:
    (out / f"seed{seed}" / "pretrained.pt").write_text("weights")
else:
    assert (out / f"seed{seed}" / "pretrained.pt").read_text() == "weights"
(out / "results.json").write_text("{}")
"""


def stand_in_jobs(tmp_path: Path, *extra: str) -> list[compare.Job]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    args = compare.parse_args(args_for(tmp_path, "--seeds", "1", "--variants", "dmmsa",
                                       "baseline", *extra, files=2))
    jobs = [job for job in compare.plan(args) if job.marker == "results.json"]
    for job in jobs:
        job.script = script
    return jobs


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_a_finished_run_is_skipped_and_the_rest_resumed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    jobs = stand_in_jobs(tmp_path)
    fake_run(out / "fold1" / "seed1", "baseline", 0.8, 0.9)  # finished earlier
    (out / "fold1" / "seed1" / "pretrain" / "seed1").mkdir(parents=True)
    (out / "fold1" / "seed1" / "pretrain" / "seed1" / "pretrained.pt").write_text("weights")
    (out / "fold1" / "seed1" / "pretrain" / "results.json").write_text("{}")
    assert compare.run_jobs(jobs, 2, out / "logs") == []
    assert "6 runs, 2 finished earlier (skipped), 4 to run" in capsys.readouterr().out
    assert sorted(calls(tmp_path)) == sorted(str(out / p) for p in (
        "fold0/seed1/pretrain", "fold0/seed1/dmmsa", "fold0/seed1/baseline", "fold1/seed1/dmmsa"))
    assert not (out / "fold0" / "seed1" / "dmmsa" / "seed1" / "pretrained.pt").exists()
    assert (out / "fold0" / "seed1" / "pretrain" / "seed1" / "pretrained.pt").exists()
    assert compare.run_jobs(stand_in_jobs(tmp_path), 2, out / "logs") == []
    assert len(calls(tmp_path)) == 4  # everything finished: nothing runs again


@pytest.mark.parametrize("keep", [False, True])
def test_a_resumed_command_deletes_what_finished_runs_left(tmp_path: Path, capsys,
                                                            keep: bool) -> None:
    out = tmp_path / "out"
    assert compare.run_jobs(stand_in_jobs(tmp_path), 2, out / "logs") == []
    left = [out / "fold0/seed1/dmmsa/seed1/pretrained.pt",  # a command stopped after these
            out / "fold0/seed1/dmmsa/seed1/checkpoint.pt",  # runs ended, before clean-up
            out / "fold1/seed1/pretrain/seed1/checkpoint.pt"]
    for path in left:
        path.write_bytes(b"x" * 1_500_000)
    capsys.readouterr()
    assert compare.run_jobs(stand_in_jobs(tmp_path), 2, out / "logs", keep) == []
    printed = capsys.readouterr().out
    assert [path.exists() for path in left] == [keep] * 3
    assert ("deleted 4 MB of resume files" in printed) is not keep
    assert (out / "fold1/seed1/pretrain/seed1/pretrained.pt").exists()  # the fusions' source
    assert (out / "fold0/seed1/dmmsa/results.json").exists()
    assert len(calls(tmp_path)) == 6  # nothing ran again


def test_a_run_an_earlier_command_stopped_resumes_from_its_checkpoint(tmp_path: Path,
                                                                      capsys) -> None:
    out = tmp_path / "out"
    stopped = out / "fold0/seed1/dmmsa/seed1/checkpoint.pt"  # stopped mid-run: no results.json
    stopped.parent.mkdir(parents=True)
    stopped.write_text("epoch 3")
    assert compare.run_jobs(stand_in_jobs(tmp_path), 2, out / "logs") == []
    ran = calls(tmp_path)
    assert ran[ran.index(str(out / "fold0/seed1/dmmsa")) + 1] == "--resume"
    assert ran.count("--resume") == 1  # the other runs start afresh
    assert "resume fold0 seed1 dmmsa" in capsys.readouterr().out


def test_a_fusion_without_pretrained_weights_is_an_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    jobs = stand_in_jobs(tmp_path)
    for fold in (0, 1):  # pre-trainings "finished", but their pretrained.pt is gone
        (out / f"fold{fold}" / "seed1" / "pretrain").mkdir(parents=True)
        (out / f"fold{fold}" / "seed1" / "pretrain" / "results.json").write_text("{}")
    failed = compare.run_jobs(jobs, 2, out / "logs")
    assert sorted(job.name for job in failed) == ["fold0 seed1 baseline", "fold0 seed1 dmmsa",
                                                  "fold1 seed1 baseline", "fold1 seed1 dmmsa"]
    printed = capsys.readouterr().out
    assert "pretrained.pt does not exist" in printed and "without unimodal pre-training" in printed
    assert calls(tmp_path) == []  # no fusion started
    assert not any(out.glob("fold*/seed1/dmmsa/results.json"))


def test_the_command_exits_1_when_a_run_failed(tmp_path: Path, monkeypatch) -> None:
    args = compare.parse_args(args_for(tmp_path, "--seeds", "1", "--variants", "baseline",
                                       files=1))
    monkeypatch.setattr(compare, "run_jobs", lambda *a, **k: [compare.Job("x", tmp_path, [])])
    assert compare.main([], args=args) == 1
    assert (tmp_path / "out" / "table.md").exists()


# ------------------------------------------------------------------------------ reports
def fake_grid(tmp_path: Path, seeds=(1, 12, 123), folds=(0, 1)) -> dict[str, np.ndarray]:
    """Fusion runs of three rows and the text pre-training, random but known."""
    rng = np.random.default_rng(3)
    shape = (len(seeds), len(folds))
    values = {f"{v}_{k}": rng.uniform(lo, hi, size=shape) for v in ("baseline", "dmmsa", "sg")
              for k, lo, hi in (("test", 0.7, 1.0), ("corr", 0.4, 0.8), ("valid", 0.8, 0.9))}
    values.update(text_valid=rng.uniform(0.75, 0.95, size=shape),
                  text_test=rng.uniform(0.8, 1.1, size=shape))
    for i, seed in enumerate(seeds):
        for j, fold in enumerate(folds):
            base = tmp_path / "out" / f"fold{fold}" / f"seed{seed}"
            for v in ("baseline", "dmmsa", "sg"):
                fake_run(base, v, values[f"{v}_test"][i, j], values[f"{v}_valid"][i, j],
                         values[f"{v}_corr"][i, j])
            fake_pretrain(base, values["text_valid"][i, j], values["text_test"][i, j])
    return values


def report_args(tmp_path: Path, *extra: str) -> compare.argparse.Namespace:
    return compare.parse_args(args_for(tmp_path, "--seeds", "1", "12", "123", "--variants",
                                       "baseline", "dmmsa", "sg", *extra, files=2))


def test_the_paired_test_is_in_the_table_the_json_and_the_figure(tmp_path: Path) -> None:
    values = fake_grid(tmp_path)
    args = report_args(tmp_path, "--reference", "baseline", "dmmsa")
    text = compare_tables.write_report(args, ["--report-only"], 0.0, "test machine")
    assert "| objective | seeds | pairs | Δ MAE | 95% CI | p (MAE) | better (MAE) |" in text
    assert "Paired differences to baseline" in text and "Paired differences to dmmsa" in text
    summary = json.loads((tmp_path / "out" / "table.json").read_text())
    mae = summary["paired"]["baseline"]["sg"][0]
    diffs = values["sg_test"] - values["baseline_test"]  # [seed, fold]
    assert mae["metric"] == "MAE" and mae["n_pairs"] == 6 and mae["n_seeds"] == 3
    assert mae["mean"] == pytest.approx(diffs.mean())
    assert mae["seed_std"] == pytest.approx(diffs.mean(axis=1).std(ddof=1))
    assert mae["better"] == int((diffs.mean(axis=1) < 0).sum())
    assert mae["p_value"] == pytest.approx(wilcoxon(diffs.ravel()).pvalue)
    assert mae["ci"][0] <= mae["mean"] <= mae["ci"][1]
    corr = summary["paired"]["dmmsa"]["baseline"][1]  # baseline − dmmsa
    corr_diffs = values["baseline_corr"] - values["dmmsa_corr"]
    assert corr["metric"] == "Corr" and corr["mean"] == pytest.approx(corr_diffs.mean())
    assert corr["better"] == int((corr_diffs.mean(axis=1) > 0).sum())
    row = next(line for line in text.splitlines() if line.startswith("| DMMSA + sg | 3 | 6 |"))
    assert f"{mae['mean']:+.3f} ± {mae['seed_std']:.3f}" in row
    for name in ("paired.png", "paired_vs_dmmsa.png", "curves.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC


def test_the_text_model_alone_is_a_row_and_what_fusion_adds_is_reported(tmp_path: Path) -> None:
    values = fake_grid(tmp_path)
    text = compare_tables.write_report(report_args(tmp_path), [], 0.0, "test machine")
    row = next(line for line in text.splitlines()
               if line.startswith("| pre-trained text model alone | 3 |"))
    per_seed = values["text_test"].mean(axis=1)
    assert f"| {per_seed.mean():.3f} ± {per_seed.std(ddof=1):.3f} |" in row
    summary = json.loads((tmp_path / "out" / "table.json").read_text())
    gain = summary["fusion_gains"]["dmmsa"]
    delta = values["dmmsa_valid"] - values["text_valid"]
    assert gain["runs"] == 6 and gain["delta"][0] == pytest.approx(delta.mean())
    assert gain["better"] == int((delta < 0).sum())
    assert f"| DMMSA | 6 | {values['text_valid'].mean():.3f} |" in text
    text_mae = summary["paired"]["baseline"]["text-alone"][0]  # paired like any other row
    assert text_mae["mean"] == pytest.approx((values["text_test"] - values["baseline_test"]).mean())


def test_selection_shows_validation_only_sorted_by_mean_validation_mae(tmp_path: Path) -> None:
    values = fake_grid(tmp_path)
    args = report_args(tmp_path, "--selection")
    text = compare_tables.write_report(args, ["--selection"], 0.0, "a CPU")
    stored = (tmp_path / "out" / "selection.json").read_text()
    assert '"test' not in stored and "| Corr" not in text and "Δ Corr" not in text
    for key in [k for k in values if k.endswith(("_test", "_corr"))]:
        for number in values[key].ravel():
            assert f"{number:.3f}" not in text.split("Command:")[0], (key, number)
    ranked = [line.split(" | ")[1] for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    means = {compare.variant_label(v): values[f"{v}_valid"].mean()
             for v in ("baseline", "dmmsa", "sg")}
    assert ranked == sorted(means, key=means.get)
    assert not (tmp_path / "out" / "table.md").exists()
    assert "What the fusion stage adds" in text
    # paired validation MAE against the reference (baseline), run by run
    row = next(line for line in text.splitlines() if line.startswith("| DMMSA + sg | 3 | 6 |"))
    diffs = values["sg_valid"] - values["baseline_valid"]  # [seed, fold]
    assert f"{diffs.mean():+.3f} ± {diffs.mean(axis=1).std(ddof=1):.3f}" in row
    assert row.endswith(f"| {int((diffs.mean(axis=1) < 0).sum())}/3 |")
    assert (tmp_path / "out" / "selection_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "out" / "curves.png").exists()


def test_the_curves_figure_draws_each_row_mean_and_spread_over_its_runs(tmp_path: Path,
                                                                        monkeypatch) -> None:
    values = fake_grid(tmp_path)
    drawn = {}
    monkeypatch.setattr(compare_tables, "plot_mean_curves",
                        lambda curves, path, title: drawn.update(curves) or True)
    compare_tables.write_report(report_args(tmp_path), [], 0.0, "a CPU")
    assert set(drawn) == {compare.variant_label(v) for v in ("baseline", "dmmsa", "sg")}
    # fake_run's curve: [valid + 0.1, valid] for each of the 6 (seed, fold) runs
    mean, std, counts = reporting.epoch_mean_std(drawn[compare.variant_label("sg")])
    valid = values["sg_valid"].ravel()
    assert counts == [6, 6] and mean == pytest.approx([valid.mean() + 0.1, valid.mean()])
    assert std == pytest.approx([valid.std(ddof=1)] * 2)


def test_the_curves_figure_is_not_drawn_without_curves(tmp_path: Path) -> None:
    stale = tmp_path / "curves.png"
    stale.write_bytes(PNG_MAGIC)
    assert not reporting.plot_mean_curves({"a": [], "b": [[]]}, stale, "t")
    assert not stale.exists()
    assert reporting.plot_mean_curves({"a": [[1.0, 0.5, 0.7]], "b": [[1.0], [2.0, 1.0]]},
                                      stale, "t", band=True)
    assert stale.read_bytes()[:8] == PNG_MAGIC


def test_selection_reads_no_test_metric(tmp_path: Path) -> None:
    fake_grid(tmp_path, seeds=(1,))
    for path in (tmp_path / "out").glob("fold*/seed1/*/results.json"):
        result = json.loads(path.read_text())
        result["per_seed"][0].pop("test", None)  # a test metric read would be a KeyError
        path.write_text(json.dumps(result))
    for path in (tmp_path / "out").glob("fold*/seed1/pretrain/text_alone.json"):
        result = json.loads(path.read_text())
        del result["test"]
        path.write_text(json.dumps(result))
    args = compare.parse_args(args_for(tmp_path, "--seeds", "1", "--variants", "baseline",
                                       "dmmsa", "--selection", files=2))
    assert "| 1 |" in compare_tables.write_report(args, [], 0.0, "a CPU")
    with pytest.raises(KeyError, match="test"):
        compare_tables.collect(args, test=True)


def test_selection_ties_go_to_the_variant_with_fewer_options(tmp_path: Path) -> None:
    for fold in (0, 1):
        base = tmp_path / "out" / f"fold{fold}" / "seed1"
        for v in ("sg-warmup", "sg", "dmmsa"):
            fake_run(base, v, 0.8, 0.85 if v != "dmmsa" else 0.9)
    args = compare.parse_args(args_for(tmp_path, "--seeds", "1", "--variants", "sg-warmup",
                                       "sg", "dmmsa", "--selection", files=2))
    ranking = compare_tables.selection_ranking(compare_tables.collect(args, test=False),
                                               args.variant_flags)
    assert [key for key, _ in ranking] == ["sg", "sg-warmup", "dmmsa"]


# ----------------------------------------------------------- real runs on a tiny file
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    return synthetic.make_synthetic(path, seed=0, n_train=32, n_valid=12, n_test=12)


def test_text_alone_is_the_pretrained_text_model(tiny: Path, tmp_path: Path) -> None:
    argv = ["--data", str(tiny), "--out", str(tmp_path), "--stage", "pretrain", "--seeds", "3",
            "--pretrain-epochs", "2", "--batch-size", "16", "--threads", "1",
            "--limit-batches", "1"]
    with pytest.raises(FileNotFoundError, match="pretrained.pt"):
        text_alone.evaluate(argv)
    assert train.main(argv) == 0
    phase = json.loads((tmp_path / "results.json").read_text())["per_seed"][0]["phases"]
    own = text_alone.evaluate(argv, label=phase["pretrain_T"]["label"])  # the synthetic T label
    assert own["valid"] == phase["pretrain_T"]["valid"]  # the best epoch's weights, re-evaluated
    assert text_alone.main(argv) == 0
    written = json.loads((tmp_path / "text_alone.json").read_text())
    assert written["label"] == "M" and written["test_samples"] == 12
    assert written["valid"] != own["valid"]  # against the multimodal label


def test_the_command_end_to_end_and_resumed(tiny: Path, tmp_path: Path, capsys) -> None:
    argv = ["--data", str(tiny), "--config", "synthetic", "--seeds", "1", "--variants",
            "baseline", "--jobs", "2", "--out", str(tmp_path), "--extra", "--pretrain-epochs",
            "1", "--epochs", "1", "--batch-size", "16", "--limit-batches", "1"]
    assert compare.main(argv) == 0
    for path in ("fold0/seed1/baseline/results.json", "fold0/seed1/pretrain/text_alone.json",
                 "table.md", "table.json"):
        assert (tmp_path / path).exists(), path
    assert not (tmp_path / "fold0/seed1/baseline/seed1/pretrained.pt").exists()  # cleaned
    assert not (tmp_path / "paired.png").exists()  # one objective: nothing to draw
    capsys.readouterr()
    assert compare.main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 runs, 3 finished earlier (skipped), 0 to run" in printed
    assert "| pre-trained text model alone | 1 |" in printed
