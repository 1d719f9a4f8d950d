"""End-to-end checks of ``examples/dmmsa/train.py`` on a tiny synthetic file.

Each run is a few optimiser steps of the synthetic (64-wide) model, so that the whole file stays
well under a minute or two on 2 cores; the kill-and-resume test runs a real subprocess.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mtobjectives as mt
from dmmsa import cli, data, objectives, synthetic, train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dmmsa"


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    # odd split sizes, so that two processes' DistributedSampler pads (and must de-duplicate)
    return synthetic.make_synthetic(path, seed=0, n_train=48, n_valid=15, n_test=15)



def fast_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--pretrain-epochs", "1", "--epochs", "2",
            "--batch-size", "16", "--threads", "1", *extra]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def assert_finite_metrics(metrics: dict[str, float]) -> None:
    assert metrics, "no metrics"
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    assert not bad, f"non-finite metrics {bad}"


def test_both_stages_write_every_output(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = train.main(fast_args(tiny_data, out, "--seeds", "0", "1", "--limit-batches", "2",
                                "--constrain-prediction"))
    assert code == 0
    for name in ("config.json", "results.json", "results.md"):
        assert (out / name).is_file(), name
    for name in ("val_mae.png", "task_weights.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    for seed in (0, 1):
        seed_dir = out / f"seed{seed}"
        for name in ("pretrained.pt", "model_best.pt", "result.json"):
            assert (seed_dir / name).is_file(), f"seed{seed}/{name}"
        assert not (seed_dir / "checkpoint.pt").exists()  # a finished seed needs none
        for phase in ("pretrain_T", "pretrain_A", "pretrain_V"):
            rows = read_csv(seed_dir / f"{phase}.csv")
            assert [row["epoch"] for row in rows] == ["1"]
        rows = read_csv(seed_dir / "fusion.csv")
        assert [row["epoch"] for row in rows] == ["1", "2"]
        for column in ("lr", "loss_MSR", "loss_MSC", "loss_Uni", "loss_CL", "weight_MSR",
                       "weight_Uni", "weight_CL", "val_MAE", "val_Corr"):
            assert all(math.isfinite(float(row[column])) for row in rows), column
    summary = results(out)["summary"]
    assert summary["seeds"] == [0, 1]
    assert_finite_metrics({k: v["mean"] for k, v in summary["test"].items()})
    assert_finite_metrics({k: v["std"] for k, v in summary["test"].items()})
    # the clamped predictions of a 2-epoch model can be constant (Corr undefined): check MAE
    assert math.isfinite(summary["test_constrained"]["MAE"]["mean"])
    table = (out / "results.md").read_text()
    assert "| ours: DMMSA |" in table and "±" in table


def test_gdwg_weights_sum_to_one_and_change_after_two_epochs(tiny_data: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "3",
                                "--limit-batches", "2")) == 0
    rows = read_csv(out / "seed1" / "fusion.csv")
    uni = [float(row["weight_Uni"]) for row in rows]
    cl = [float(row["weight_CL"]) for row in rows]
    assert uni[:2] == [0.5, 0.5] and cl[:2] == [0.5, 0.5]  # stages 1 and 2: equal weights
    assert uni[2] != 0.5
    assert all(math.isclose(u + c, 1.0, abs_tol=1e-6) for u, c in zip(uni, cl))


@pytest.mark.parametrize(
    ("flags", "tasks", "constant_weights"),
    [
        (["--no-msc"], {"MSR", "Uni", "CL"}, None),
        (["--no-cl"], {"MSR", "MSC", "Uni"}, None),
        (["--no-gdwg"], {"MSR", "MSC", "Uni", "CL"}, {"Uni": 0.5, "CL": 0.5}),
        (["--objective", "baseline"], {"MSR", "Uni"}, {"MSR": 1.0, "Uni": 1.0}),
    ],
    ids=["no-msc", "no-cl", "no-gdwg", "baseline"],
)
def test_ablations_and_baseline_train_their_tasks(tiny_data: Path, tmp_path: Path,
                                                  flags: list[str], tasks: set[str],
                                                  constant_weights: dict | None) -> None:
    out = tmp_path / "run"
    assert train.main(fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "3",
                                "--limit-batches", "2", *flags)) == 0
    rows = read_csv(out / "seed1" / "fusion.csv")
    logged = {key[5:] for key in rows[0] if key.startswith("loss_")}
    assert logged == tasks
    for task, weight in (constant_weights or {}).items():
        assert [float(row[f"weight_{task}"]) for row in rows] == [weight] * 3
    assert_finite_metrics(results(out)["per_seed"][0]["test"])


def test_ablation_flags_are_refused_with_the_baseline(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--objective", "baseline", "--no-cl"])


def test_objective_knobs_reach_the_dmmsa_objective(tiny_data: Path, tmp_path: Path) -> None:
    args = cli.parse_args(["--cl-temperature", "0.25", "--cl-form", "out",
                           "--weight-scale", "num_tasks"])
    facts = data.facts_of(data.load_mmsa(tiny_data))
    config = cli.resolve_config(args, facts, tiny_data)
    objective = objectives.fusion_objective(config, mt.CoarseGrainedBinning.preset("mosi", 3))
    contrastive = objective.tasks["CL"].keywords["contrastive"]  # functools.partial
    assert (contrastive.temperature, contrastive.form) == (0.25, "out")
    assert objectives.run_name(config) == ("DMMSA (CL temperature 0.25, CL form out, "
                                           "weight scale num_tasks)")
    out = tmp_path / "run"
    assert train.main(fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "3",
                                "--limit-batches", "2", "--weight-scale", "num_tasks")) == 0
    rows = read_csv(out / "seed1" / "fusion.csv")
    assert [float(row["weight_Uni"]) for row in rows[:2]] == [1.0, 1.0]  # DWA scale: sum = 2
    assert all(math.isclose(float(row["weight_Uni"]) + float(row["weight_CL"]), 2.0,
                            abs_tol=1e-6) for row in rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--objective", "baseline", "--cl-temperature", "0.1"], "--cl-temperature set the"),
        (["--objective", "baseline", "--weight-scale", "num_tasks"], "--weight-scale set the"),
        (["--cl-temperature", "0"], "--cl-temperature must be a finite number > 0, got 0.0"),
        (["--cl-temperature", "nan"], "--cl-temperature must be a finite number > 0, got nan"),
        (["--cl-form", "both"], "invalid choice: 'both'"),
    ],
)
def test_bad_objective_knobs_are_refused(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_nan_loss_stops_naming_the_task_and_keeps_the_last_checkpoint(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = train.main(fast_args(tiny_data, out, "--stage", "fusion", "--save-every", "1",
                                "--inject-nan", "3"))
    assert code == 1
    message = capsys.readouterr().err
    assert "non-finite loss in task(s) MSR at step 3" in message
    assert "checkpoint.pt (step 2)" in message
    checkpoint = torch.load(out / "seed1" / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 2
    assert not (out / "results.json").exists()


def test_resume_refuses_a_checkpoint_made_with_other_arguments(tiny_data: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "1",
                                "--limit-batches", "1")) == 0
    (out / "seed1" / "result.json").unlink()
    with pytest.raises(SystemExit, match="other arguments"):
        train.main(fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "3",
                             "--limit-batches", "1", "--resume"))


def _wait_for_fusion_checkpoint(process: subprocess.Popen, path: Path, timeout: float) -> dict:
    """Poll until ``path`` holds a fusion checkpoint past its first steps (the run is mid-way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended (code {process.returncode}) before a mid-run "
                        f"fusion checkpoint was seen")
        if path.exists():
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except (OSError, EOFError, RuntimeError):
                state = None  # replaced while reading: try again
            if state is not None and state["phase"] == "fusion" and state["step"] >= 2:
                return state
        time.sleep(0.005)
    pytest.fail(f"no fusion checkpoint in {path} after {timeout} s")


def test_resume_after_sigkill_gives_the_uninterrupted_results(tiny_data: Path,
                                                              tmp_path: Path) -> None:
    args = ["--epochs", "4", "--save-every", "1"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert train.main(fast_args(tiny_data, reference, *args)) == 0

    command = [sys.executable, str(EXAMPLE / "train.py"), *fast_args(tiny_data, killed, *args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env)
    try:
        state = _wait_for_fusion_checkpoint(process, killed / "seed1" / "checkpoint.pt", 120)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists()
    assert state["epoch"] < 4

    assert train.main(fast_args(tiny_data, killed, *args, "--resume")) == 0
    expected, actual = results(reference)["per_seed"][0], results(killed)["per_seed"][0]
    assert actual["test"] == expected["test"]
    assert actual["phases"] == expected["phases"]  # every validation curve and GDWG weight
    want = torch.load(reference / "seed1" / "model_best.pt")
    got = torch.load(killed / "seed1" / "model_best.pt")
    assert all(torch.equal(want[key], got[key]) for key in want)  # bit for bit on CPU


def test_a_local_bert_folder_reads_the_token_ids(tiny_data: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tiny-bert"
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(folder)
    out = tmp_path / "run"
    assert train.main(fast_args(tiny_data, out, "--text-model", str(folder),
                                "--limit-batches", "1")) == 0
    saved = json.loads((out / "config.json").read_text())["config"]["model"]
    assert saved["text_source"] == "bert" and saved["text_model"] == str(folder)
    assert_finite_metrics(results(out)["per_seed"][0]["test"])


def test_a_text_only_file_trains_without_the_contrastive_task(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    splits = pickle.loads(tiny_data.read_bytes())
    for split in splits.values():
        for key in ("audio", "audio_lengths", "vision", "vision_lengths"):
            del split[key]
    text_only = tmp_path / "text_only.pkl"
    text_only.write_bytes(pickle.dumps(splits))
    out = tmp_path / "run"
    assert train.main(fast_args(text_only, out, "--limit-batches", "2")) == 0
    printed = capsys.readouterr().out
    assert printed.count("the contrastive task (CL) is switched off") == 1
    # lambda_Uni alone is 1 at every epoch: nothing weighted, no weights plot
    assert "task_weights.png: not drawn" in printed
    assert not (out / "task_weights.png").exists() and (out / "val_mae.png").exists()
    assert sorted(results(out)["per_seed"][0]["phases"]) == ["fusion", "pretrain_T"]
    assert {key for key in read_csv(out / "seed1" / "fusion.csv")[0]
            if key.startswith("loss_")} == {"loss_MSR", "loss_MSC", "loss_Uni"}


def test_two_gloo_processes_evaluate_every_sample_once(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(EXAMPLE / "train.py"),
               *fast_args(tiny_data, out, "--epochs", "3", "--limit-batches", "2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = results(out)
    assert result["per_seed"][0]["test_samples"] == 15  # 2 x 8 predictions, one padded
    assert_finite_metrics(result["per_seed"][0]["test"])
    rows = read_csv(out / "seed1" / "fusion.csv")
    assert float(rows[2]["weight_Uni"]) != 0.5  # GDWG moved after all-reducing two stages
    assert all(math.isclose(float(r["weight_Uni"]) + float(r["weight_CL"]), 1.0, abs_tol=1e-6)
               for r in rows)


def test_a_finished_seed_drops_its_checkpoint_and_resumes_from_result_json(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "1", "--limit-batches", "1")
    assert train.main(argv) == 0
    assert not (out / "seed1" / "checkpoint.pt").exists()
    assert (out / "seed1" / "model_best.pt").is_file()
    first = results(out)["per_seed"][0]
    capsys.readouterr()
    assert train.main([*argv, "--resume"]) == 0
    assert "seed 1: finished earlier, reading" in capsys.readouterr().out
    assert results(out)["per_seed"][0] == first
    kept = tmp_path / "kept"
    assert train.main(fast_args(tiny_data, kept, "--stage", "fusion", "--epochs", "1",
                                "--limit-batches", "1", "--keep-checkpoint")) == 0
    assert (kept / "seed1" / "checkpoint.pt").is_file()


def test_config_json_holds_the_arguments_as_json_values(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(fast_args(tiny_data, out, "--stage", "fusion", "--epochs", "1",
                                "--limit-batches", "1", "--seeds", "1")) == 0
    saved = json.loads((out / "config.json").read_text())["args"]
    assert saved["seeds"] == [1] and saved["epochs"] == 1 and saved["lr"] is None
    assert saved["resume"] is False and saved["out"] == str(out) and saved["data"] == str(tiny_data)
