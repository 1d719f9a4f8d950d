"""Two gloo processes train exactly what one process trains on the same global batches.

``examples/dmmsa/train.py`` is run twice on a tiny synthetic file: once as a single process and
once under ``torchrun --standalone --nproc_per_node=2`` (gloo, CPU), with the same seed, the same
global batch size, ``--dropout 0`` and a training split whose size is divisible by every batch
size (so the :class:`~torch.utils.data.DistributedSampler` pads nothing). Rank ``r`` then takes
``perm[r::2]`` of the permutation that the single process walks in order, so batch ``j`` of the two
ranks together holds exactly the samples of the single process's batch ``j``. Every loss term is a
mean over the samples of a batch and the two halves are equal, so DDP's gradient average equals
the single-process gradient and both runs take the same optimiser steps up to float rounding.

The processes run a small wrapper around ``train.main`` that only *records* (each rank into its
own file): the GDWG state of the objective before and after every ``objective.step()`` (the end of
a GDWG stage), and a digest of the network's parameters at every evaluation (every epoch end of
every phase, and the test evaluation). ``train.py`` writes its CSV and JSON files on rank 0 only,
so this is how rank 1's weights are observed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dmmsa import synthetic

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dmmsa"


N_TRAIN, N_VALID, N_TEST = 64, 15, 15  # 64: divisible by the fusion (16) and pre-training (32)
GLOBAL_BATCH = 16  # batches; odd evaluation splits exercise the gathered, de-duplicated metrics
FUSION_EPOCHS = 4  # GDWG stages 1-2 use equal weights; stages 3 and 4 follow the losses
TASKS = ("MSR", "MSC", "Uni", "CL")
DYNAMIC = ("Uni", "CL")

# Tolerances, the two runs against each other. Measured on CPU (torch 2.13): GDWG weights differ
# by < 1e-8, task losses by < 1e-7 (relative), parameters by < 4e-7 (but see key_bias_free),
# metrics by 0. A run that saw other batches or took other steps differs by 1e-3 or more.
WEIGHT_ATOL = 1e-6  # GDWG weights: softmax of ratios of float64 stage means of float32 losses
LOSS_RTOL = 1e-5  # per-epoch mean task losses (mean of half-batch means vs of full-batch means)
PARAMETER_ATOL = 1e-5  # the selected model's parameters after every optimiser step of both stages
# ``msa_metrics`` rounds to 4 decimals: a float-rounding difference can move the 4th decimal by
# one unit, so metrics may differ by one rounding step.
METRIC_ATOL = 1e-4 + 1e-9

WRAPPER = '''
"""Run train.main unchanged, recording each rank's GDWG state and parameter digests."""
import hashlib
import json
import os
import sys

import mtobjectives as mt
from dmmsa import evaluation, train

RECORD = os.path.join({record!r}, "rank" + os.environ.get("RANK", "0") + ".jsonl")


def log(entry):
    with open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\\n")


def gdwg_state(weighter):
    return {{"stage": weighter.stage, "weights": weighter.task_weights.tolist(),
             "baseline": weighter.baseline.tolist()}}


original_step = mt.MultiTaskObjective.step


def step(self):
    if self.weighter is not None:
        log({{"kind": "gdwg_before_step", **gdwg_state(self.weighter)}})
    original_step(self)
    if self.weighter is not None:
        log({{"kind": "gdwg_after_step", **gdwg_state(self.weighter)}})


mt.MultiTaskObjective.step = step

original_predict = evaluation.predict


def predict(net, dataset, batch_size, label, run):
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    log({{"kind": "parameters", "net": type(net).__name__, "digest": digest.hexdigest()}})
    return original_predict(net, dataset, batch_size, label, run)


evaluation.predict = predict
sys.exit(train.main())
'''


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_args(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--stage", "both", "--pretrain-epochs", "1",
            "--epochs", str(FUSION_EPOCHS), "--batch-size", str(GLOBAL_BATCH), "--dropout", "0",
            "--seeds", "1", "--threads", "1", "--save-every", "0"]


def run_training(root: Path, data: Path, processes: int) -> dict[str, Any]:
    """Train in ``processes`` process(es); return the outputs of rank 0 and every rank's record."""
    out, record = root / f"run{processes}", root / f"record{processes}"
    record.mkdir(parents=True)
    wrapper = root / f"wrapper{processes}.py"
    wrapper.write_text(WRAPPER.format(example=str(EXAMPLE), record=str(record)))
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone",
                     f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # the single process must not think it is part of a job
    finished = subprocess.run([*launcher, str(wrapper), *train_args(data, out)],
                              capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == processes
    return {
        "fusion": read_csv(out / "seed1" / "fusion.csv"),
        "pretrain": {m: read_csv(out / "seed1" / f"pretrain_{m}.csv") for m in "TAV"},
        "result": json.loads((out / "seed1" / "result.json").read_text()),
        "model_best": torch.load(out / "seed1" / "model_best.pt", map_location="cpu"),
        "records": [read_records(record / f"rank{r}.jsonl") for r in range(processes)],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    root = tmp_path_factory.mktemp("ddp")
    data = synthetic.make_synthetic(root / "tiny.pkl", seed=0, n_train=N_TRAIN, n_valid=N_VALID,
                                    n_test=N_TEST)
    return {processes: run_training(root, data, processes) for processes in (1, 2)}


def gdwg_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in records if entry["kind"].startswith("gdwg")]


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows]


def test_every_rank_holds_identical_gdwg_weights_at_every_stage(runs: dict) -> None:
    rank0, rank1 = (gdwg_records(records) for records in runs[2]["records"])
    # before and after each of the FUSION_EPOCHS stage ends: stages 1..FUSION_EPOCHS + 1
    assert [entry["stage"] for entry in rank0 if entry["kind"] == "gdwg_before_step"] == list(
        range(1, FUSION_EPOCHS + 1))
    assert rank1 == rank0  # bit for bit: weights, baseline L_k(1) and stage counter
    assert rank0[-1]["weights"] != [0.5, 0.5]  # the last stages really followed the losses


def test_every_rank_holds_identical_parameters_at_every_evaluation(runs: dict) -> None:
    rank0, rank1 = ([entry for entry in records if entry["kind"] == "parameters"]
                    for records in runs[2]["records"])
    # one evaluation per pre-training epoch (T, A, V), per fusion epoch, and the test split
    assert len(rank0) == 3 + FUSION_EPOCHS + 1
    assert rank1 == rank0


def test_gdwg_weights_per_stage_match_the_single_process_run(runs: dict) -> None:
    single, double = gdwg_records(runs[1]["records"][0]), gdwg_records(runs[2]["records"][0])
    assert [e["stage"] for e in single] == [e["stage"] for e in double]
    for one, two in zip(single, double):
        assert one["weights"] == pytest.approx(two["weights"], rel=0, abs=WEIGHT_ATOL), one
        assert one["baseline"] == pytest.approx(two["baseline"], rel=LOSS_RTOL), one


def test_gdwg_weights_in_fusion_csv_match_the_single_process_run(runs: dict) -> None:
    for task in ("MSR", "MSC", *DYNAMIC):
        single = column(runs[1]["fusion"], f"weight_{task}")
        double = column(runs[2]["fusion"], f"weight_{task}")
        assert len(single) == len(double) == FUSION_EPOCHS
        assert single == pytest.approx(double, rel=0, abs=WEIGHT_ATOL), task
    assert column(runs[2]["fusion"], "weight_Uni")[2] != 0.5  # stage 3 is GDWG's first own


def test_task_losses_per_epoch_match_the_single_process_run(runs: dict) -> None:
    for task in TASKS:
        single = column(runs[1]["fusion"], f"loss_{task}")
        double = column(runs[2]["fusion"], f"loss_{task}")
        assert single == pytest.approx(double, rel=LOSS_RTOL), task
    for modality in "TAV":
        single = column(runs[1]["pretrain"][modality], f"loss_{modality}")
        double = column(runs[2]["pretrain"][modality], f"loss_{modality}")
        assert single == pytest.approx(double, rel=LOSS_RTOL), modality


def test_validation_mae_per_epoch_matches_the_single_process_run(runs: dict) -> None:
    single, double = column(runs[1]["fusion"], "val_MAE"), column(runs[2]["fusion"], "val_MAE")
    assert single == pytest.approx(double, rel=0, abs=METRIC_ATOL)
    for modality in "TAV":
        one = column(runs[1]["pretrain"][modality], "val_MAE")
        two = column(runs[2]["pretrain"][modality], "val_MAE")
        assert one == pytest.approx(two, rel=0, abs=METRIC_ATOL), modality
    assert runs[1]["result"]["phases"]["fusion"]["best_epoch"] == (
        runs[2]["result"]["phases"]["fusion"]["best_epoch"])


def key_bias_free(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating parameters, without the key third of every attention ``in_proj_bias``.

    Adding a key bias b_k adds q . b_k to every score of a softmax row, which the softmax
    ignores: its exact gradient is 0, its computed gradient is rounding noise, and
    AdamW (which divides by the gradient's running RMS) turns that noise into steps of the size of
    the learning rate. It never changes an output, and it differs between the runs (measured
    4e-5 after 4 fusion epochs with lr 5e-4) while the query and value thirds agree to 1e-8.
    """
    kept = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        tensor = tensor.double()
        if name.endswith("self_attn.in_proj_bias"):
            query, _, value = tensor.chunk(3)
            tensor = torch.cat([query, value])
        kept[name] = tensor
    return kept


def test_selected_model_matches_the_single_process_run(runs: dict) -> None:
    single, double = key_bias_free(runs[1]["model_best"]), key_bias_free(runs[2]["model_best"])
    assert single.keys() == double.keys()
    differences = {name: float((single[name] - double[name]).abs().max()) for name in single
                   if single[name].numel()}
    worst = max(differences, key=differences.__getitem__)
    assert differences[worst] <= PARAMETER_ATOL, (worst, differences[worst])


def test_final_test_metrics_match_the_single_process_run(runs: dict) -> None:
    single, double = runs[1]["result"], runs[2]["result"]
    assert single["test_samples"] == double["test_samples"] == N_TEST
    assert single["test"].keys() == double["test"].keys()
    for key, value in single["test"].items():
        assert math.isfinite(value), key
        # accuracies and F1 are counts over 15 samples: a flip would need a prediction within
        # float noise of a class edge, so they are held to the same rounding step as MAE/Corr
        assert value == pytest.approx(double["test"][key], rel=0, abs=METRIC_ATOL), key
