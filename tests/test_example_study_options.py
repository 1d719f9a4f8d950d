"""The objective study's options of ``train.py``, each one configuration line (issue 11).

``--cl-detach-anchor``, ``--cl-warmup K``, ``--cl-label-positives`` and ``--weighting
{gdwg,equal,uncertainty}``: each is a field of the frozen configuration (so in the resume
fingerprint), reaches ``mt.MultiTaskObjective.dmmsa``, changes what a short synthetic run trains
where it should, and is refused (naming the flag) where it contradicts another flag. With
uncertainty weighting the log-variances are trained, saved and restored, and averaged over the
processes. Also the ``text`` preset, whose dataset kind is decided from the data.
"""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mtobjectives as mt
from dmmsa import cli, configs, data, objectives, synthetic, train, training
from dmmsa import model as model_lib
from dmmsa.checkpoint import Checkpointer, EpochSums, Progress
from dmmsa.distributed import Dist

FULL = data.DataFacts({"T": 32, "A": 5, "V": 20}, ("T", "A", "V"), ())
TEXT_ONLY = data.DataFacts({"T": 32, "A": None, "V": None}, ("T",), ())
BINNING = mt.CoarseGrainedBinning.preset("mosi", 3)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    return synthetic.make_synthetic(path, seed=0, n_train=48, n_valid=15, n_test=15)


@pytest.fixture(scope="module")
def text_only(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    splits = pickle.loads(tiny_data.read_bytes())
    for split in splits.values():
        for key in ("audio", "audio_lengths", "vision", "vision_lengths"):
            del split[key]
    path = tmp_path_factory.mktemp("text") / "text_only.pkl"
    path.write_bytes(pickle.dumps(splits))
    return path



def fusion_rows(data_path: Path, out: Path, *flags: str) -> list[dict[str, str]]:
    """A 3-epoch fusion run of 2 batches per epoch; its ``fusion.csv`` rows."""
    argv = ["--data", str(data_path), "--out", str(out), "--stage", "fusion", "--epochs", "3",
            "--batch-size", "16", "--limit-batches", "2", "--threads", "1", "--save-every", "0",
            *flags]
    assert train.main(argv) == 0
    with open(out / "seed1" / "fusion.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows]


@pytest.fixture(scope="module")
def default_rows(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    threads = torch.get_num_threads()
    try:
        return fusion_rows(tiny_data, tmp_path_factory.mktemp("default") / "run")
    finally:
        torch.set_num_threads(threads)


def resolve(argv: list[str], facts: data.DataFacts = FULL) -> configs.RunConfig:
    return cli.resolve_config(cli.parse_args(argv), facts, "d.pkl", log=None)


# ------------------------------------------------------------------ configuration and objective
def test_defaults_are_the_papers_objective_and_each_flag_sets_one_field() -> None:
    spec = resolve([]).experiment.train.objective
    assert (spec.weighting, spec.detach_anchor, spec.cl_warmup, spec.label_positives) == (
        "gdwg", False, 0, False)
    for argv, field, value in [(["--cl-detach-anchor"], "detach_anchor", True),
                               (["--cl-warmup", "3"], "cl_warmup", 3),
                               (["--cl-label-positives"], "label_positives", True),
                               (["--weighting", "uncertainty"], "weighting", "uncertainty"),
                               (["--weighting", "equal"], "weighting", "equal"),
                               (["--no-gdwg"], "weighting", "equal")]:
        config = resolve(argv)
        assert getattr(config.experiment.train.objective, field) == value, argv
        changed = [name for name, saved in configs.fingerprint(resolve([])).items()
                   if configs.fingerprint(config)[name] != saved]
        assert changed == [f"experiment.train.objective.{field}"], argv


def test_the_flags_reach_the_dmmsa_objective() -> None:
    config = resolve(["--cl-detach-anchor", "--cl-warmup", "3", "--cl-label-positives",
                      "--weighting", "uncertainty"])
    objective = objectives.fusion_objective(config, BINNING)
    keywords = objective.tasks["CL"].keywords  # functools.partial of mt.cl_loss
    assert keywords["detach_anchor"] is True and keywords["label_binning"] is BINNING
    assert objective.schedules == {"CL": mt.WarmupSchedule(3, mode="linear")}
    assert isinstance(objective.weighter, mt.UncertaintyWeighter)
    assert [name for name, _ in objective.named_parameters()] == ["weighter.log_variances"]
    assert objectives.run_name(config) == (
        "DMMSA (uncertainty weighting, CL anchor detached, CL warm-up 3, CL label positives)")
    default = objectives.fusion_objective(resolve([]), BINNING)
    assert default.schedules == {} and isinstance(default.weighter, mt.GDWGWeighter)
    assert default.tasks["CL"].keywords["label_binning"] is None
    assert objectives.run_name(resolve(["--weighting", "equal"])) == "DMMSA w/o GDWG"


@pytest.mark.parametrize(("argv", "message"), [
    (["--cl-warmup", "-1"], "--cl-warmup must be an int >= 0 (stages; 0: off), got -1"),
    (["--cl-warmup", "1.5"], "--cl-warmup: invalid int value: '1.5'"),
    (["--weighting", "dwa"], "--weighting: invalid choice: 'dwa'"),
    (["--no-gdwg", "--weighting", "uncertainty"],
     "--no-gdwg is --weighting equal; it contradicts --weighting uncertainty"),
    (["--no-gdwg", "--weighting", "gdwg"], "it contradicts --weighting gdwg"),
    (["--objective", "baseline", "--cl-detach-anchor"], "--cl-detach-anchor set the DMMSA"),
    (["--objective", "baseline", "--cl-warmup", "2"], "--cl-warmup set the DMMSA"),
    (["--objective", "baseline", "--cl-label-positives"], "--cl-label-positives set the"),
    (["--objective", "baseline", "--weighting", "equal"], "--weighting set the DMMSA"),
    (["--no-cl", "--cl-warmup", "2", "--cl-detach-anchor"],
     "--cl-detach-anchor/--cl-warmup change the contrastive task, which --no-cl drops"),
    (["--dataset", "sims"], "--dataset sims: the synthetic data is MOSI-like"),
])
def test_contradictory_or_bad_options_are_refused_naming_the_flag(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_no_gdwg_with_weighting_equal_is_the_same_run() -> None:
    assert configs.fingerprint(resolve(["--no-gdwg"])) == configs.fingerprint(
        resolve(["--no-gdwg", "--weighting", "equal"]))


def test_text_only_data_keeps_cl_for_label_positives_only() -> None:
    said: list[str] = []
    kept = cli.resolve_config(cli.parse_args(["--cl-label-positives"]), TEXT_ONLY, "d",
                              log=said.append)
    assert kept.experiment.train.objective.cl
    assert said == ["modalities T: no text-anchored positive pair; the contrastive task (CL) "
                    "keeps only its label-aware term (--cl-label-positives)"]
    for argv in (["--cl-detach-anchor"], ["--cl-warmup", "2"]):
        assert not resolve(argv, TEXT_ONLY).experiment.train.objective.cl, argv
    objective = objectives.fusion_objective(resolve(["--cl-warmup", "2"], TEXT_ONLY), BINNING)
    assert "CL" not in objective.tasks and objective.schedules == {}


def test_cl_switched_off_is_said_once_and_only_where_a_fusion_is_trained() -> None:
    for argv, expected in (([], 1), (["--stage", "pretrain"], 0),
                           (["--objective", "baseline"], 0)):
        said: list[str] = []
        config = cli.resolve_config(cli.parse_args(argv), TEXT_ONLY, "d", log=said.append)
        assert not config.experiment.train.objective.cl
        assert len(said) == expected, argv


# --------------------------------------------------------------------------- short runs
def test_warmup_ramps_the_cl_weight_from_zero(tiny_data: Path, tmp_path: Path,
                                              default_rows: list[dict]) -> None:
    rows = fusion_rows(tiny_data, tmp_path / "run", "--cl-warmup", "2")
    # stage t: rho = (t - 1) / 2 times GDWG's lambda (1/2 in stages 1 and 2)
    assert column(rows, "weight_CL")[:2] == [0.0, 0.25]
    assert column(default_rows, "weight_CL")[:2] == [0.5, 0.5]
    assert column(rows, "weight_Uni")[:2] == [0.5, 0.5]  # only CL is scheduled
    # epoch 1's CL term did not reach the gradient: the runs part after epoch 1
    assert column(rows, "val_MAE") != column(default_rows, "val_MAE")


def test_detached_anchor_and_label_positives_change_the_run(tiny_data: Path, tmp_path: Path,
                                                            default_rows: list[dict]) -> None:
    detached = fusion_rows(tiny_data, tmp_path / "sg", "--cl-detach-anchor")
    # the same CL value at the first step (a stop-gradient changes no value) ...
    assert column(detached, "loss_CL")[0] == pytest.approx(column(default_rows, "loss_CL")[0],
                                                           rel=0.05)
    # ... but other updates
    assert column(detached, "val_MAE") != column(default_rows, "val_MAE")
    labelled = fusion_rows(tiny_data, tmp_path / "labels", "--cl-label-positives")
    assert column(labelled, "loss_CL")[0] > column(default_rows, "loss_CL")[0] + 0.1  # a term more


def test_uncertainty_weighting_learns_saves_and_names_its_weights(
        tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rows = fusion_rows(tiny_data, out, "--weighting", "uncertainty", "--keep-checkpoint")
    for task in ("Uni", "CL"):
        weights = column(rows, f"weight_{task}")
        assert all(w != 1.0 for w in weights) and len(set(weights)) == 3, task  # e^{-s} moved
    assert column(rows, "weight_MSR") == [1.0] * 3
    state = torch.load(out / "seed1" / "checkpoint.pt", weights_only=True)
    log_variances = state["per_rank"][0]["objective"]["weighter.log_variances"]
    # the log holds the weight of the epoch's last step, taken before that step's update
    logged = torch.tensor([column(rows, "weight_Uni")[-1], column(rows, "weight_CL")[-1]])
    assert torch.allclose(torch.exp(-log_variances), logged, atol=1e-3)
    assert not torch.equal(log_variances, torch.zeros(2))
    groups = state["optimizer"]["param_groups"]
    assert (groups[-1]["lr"], groups[-1]["weight_decay"]) == (0.0, 0.0)  # decayed to 0 at the end
    assert "uncertainty weighting" in (out / "results.md").read_text()


def test_uncertainty_parameters_are_in_the_optimizer_and_restored_from_a_checkpoint(
        tiny_data: Path, tmp_path: Path) -> None:
    args = cli.parse_args(["--data", str(tiny_data), "--out", str(tmp_path), "--stage", "fusion",
                           "--weighting", "uncertainty", "--batch-size", "16", "--epochs", "2"])
    run = train.setup(args)

    def fresh() -> tuple[model_lib.DMMSAModel, training.Phase]:
        model = model_lib.DMMSAModel(run.experiment.model)
        return model, training.build_phase(run, "fusion", model, seed=1)

    model, phase = fresh()
    log_variances = phase.objective.weighter.log_variances
    group = phase.optimizer.param_groups[-1]
    assert group["params"] == [log_variances] and group["weight_decay"] == 0.0
    assert group["initial_lr"] == run.experiment.train.fusion.lr  # the synthetic head lr
    progress = Progress(sums=EpochSums.empty(phase.logged_by_us))
    batch = next(training.epoch_batches(run, phase, progress, seed=1))
    for _ in range(3):
        training.train_step(run, phase, progress, batch, "none", seed=1)
    assert not torch.equal(log_variances.detach(), torch.zeros(2))
    checkpointer = Checkpointer(tmp_path, 1, run.fingerprint, run.dist)
    checkpointer.save(phase, progress, model, {})
    model2, phase2 = fresh()
    checkpointer.restore(checkpointer.load(), phase2, model2)
    restored = phase2.objective.weighter.log_variances
    assert torch.equal(restored.detach(), log_variances.detach())
    assert phase2.optimizer.param_groups[-1]["params"][0] is restored  # still the one trained
    assert torch.equal(phase2.optimizer.state[restored]["exp_avg"],
                       phase.optimizer.state[log_variances]["exp_avg"])


AVERAGE_SCRIPT = textwrap.dedent('''
    import sys
    import types

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    import mtobjectives as mt
    from dmmsa.training import average_objective_gradients


    def work(rank, init, out):
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
        objective = mt.MultiTaskObjective.dmmsa(binning=None, msc=False,
                                                weighting="uncertainty")
        losses = {"Uni": 1.0 + 3.0 * rank, "CL": 2.0 - rank}  # other data on each rank
        s = objective.weighter.log_variances
        total = sum(torch.exp(-s[k]) * loss + s[k] for k, loss in enumerate(losses.values()))
        total.backward()
        average_objective_gradients(objective, types.SimpleNamespace(world=2))
        torch.save(s.grad.clone(), f"{out}/grad{rank}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(work, args=(sys.argv[1], sys.argv[2]), nprocs=2)
''')


def test_the_log_variance_gradients_are_averaged_over_two_gloo_processes(
        tmp_path: Path) -> None:
    script = tmp_path / "average.py"
    script.write_text(AVERAGE_SCRIPT)
    finished = subprocess.run(
        [sys.executable, str(script), f"file://{tmp_path / 'rendezvous'}", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    grads = [torch.load(tmp_path / f"grad{rank}.pt") for rank in (0, 1)]
    # d/ds (e^{-s} L + s) at s = 0 is 1 - L; rank 0: L = (1, 2), rank 1: L = (4, 1)
    expected = torch.tensor([((1 - 1.0) + (1 - 4.0)) / 2, ((1 - 2.0) + (1 - 1.0)) / 2])
    assert torch.allclose(grads[0], expected) and torch.equal(grads[0], grads[1])


def test_one_process_leaves_the_gradients_alone() -> None:
    objective = mt.MultiTaskObjective.dmmsa(binning=None, msc=False, weighting="uncertainty")
    objective.weighter.log_variances.grad = torch.tensor([0.25, -1.0])
    training.average_objective_gradients(objective, Dist("cpu"))
    assert torch.equal(objective.weighter.log_variances.grad, torch.tensor([0.25, -1.0]))


def test_text_only_runs_with_label_positives_train_cl(text_only: Path, tmp_path: Path) -> None:
    rows = fusion_rows(text_only, tmp_path / "run", "--cl-label-positives")
    assert {key[5:] for key in rows[0] if key.startswith("loss_")} == {"MSR", "MSC", "Uni", "CL"}


# ------------------------------------------------------------------------- the text preset
@pytest.mark.parametrize(("bound", "clips", "dataset"), [
    (1.0, 2281, "sims"), (0.6, 30, "sims"), (3.0, 2199, "mosi"), (2.8, 22856, "mosei")])
def test_the_text_preset_decides_the_dataset_from_the_data(bound: float, clips: int,
                                                           dataset: str) -> None:
    facts = data.DataFacts({"T": 32, "A": None, "V": None}, ("T",), (), bound, clips)
    said: list[str] = []
    config = cli.resolve_config(cli.parse_args(["--config", "text"]), facts, "d",
                                log=said.append)
    assert config.experiment.dataset == dataset
    assert config.experiment.label_range == cli.DATASET_RANGES[dataset]
    assert said[0].startswith(f"dataset: {dataset} (bins and metrics), decided from the data")
    forced = cli.resolve_config(cli.parse_args(["--config", "text", "--dataset", "mosei"]),
                                facts, "d", log=None)
    assert forced.experiment.dataset == "mosei"
    assert cli.resolve_config(cli.parse_args(["--config", "mosi_text"]), facts, "d",
                              log=None).experiment.dataset == "mosi"  # mosi_text stays MOSI


def test_facts_of_measure_the_label_bound_and_the_clips(tiny_data: Path) -> None:
    facts = data.facts_of(data.load_mmsa(tiny_data))
    assert facts.clips == 48 + 15 + 15
    assert 1.0 < facts.label_bound <= 3.0  # MOSI-like synthetic labels


def test_a_sims_like_text_file_trains_with_the_sims_metrics(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            ) -> None:
    path = synthetic.make_synthetic(tmp_path / "sims.pkl", seed=0, n_train=32, n_valid=10,
                                    n_test=10, label_range=1.0, label_step=0.2)
    splits = pickle.loads(path.read_bytes())
    for split in splits.values():
        for key in ("audio", "audio_lengths", "vision", "vision_lengths"):
            del split[key]
    path.write_bytes(pickle.dumps(splits))
    out = tmp_path / "run"
    argv = ["--config", "text", "--text-source", "features", "--data", str(path), "--out",
            str(out), "--pretrain-epochs", "1", "--epochs", "1", "--seeds", "1",
            "--limit-batches", "1", "--batch-size", "16", "--threads", "1"]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "dataset: sims (bins and metrics), decided from the data" in printed
    assert "on text (sims metrics)" in printed
    table = (out / "results.md").read_text()
    assert "Acc-3" in table and "1 seed [1], so no spread" in table and "±" not in table


def test_two_gloo_processes_keep_one_set_of_log_variances(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "dmmsa.train", "--data", str(tiny_data), "--out",
               str(out), "--stage", "fusion", "--epochs", "2", "--batch-size", "16",
               "--limit-batches", "2", "--threads", "1", "--weighting", "uncertainty",
               "--keep-checkpoint"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    state = torch.load(out / "seed1" / "checkpoint.pt", weights_only=True)
    rank0, rank1 = (entry["objective"]["weighter.log_variances"] for entry in state["per_rank"])
    assert not torch.equal(rank0, torch.zeros(2))  # learned from each rank's own batches ...
    assert torch.equal(rank0, rank1)  # ... with the gradients averaged: one set of weights
