"""Train the DMMSA reference system: unimodal pre-training, then fusion with the DMMSA objective.

The training loop is ``dmmsa/training.py``; this script sets a run up and reports it. Usage
(from the repository root; ``python -m dmmsa.train`` is the same command)::

    python examples/dmmsa/train.py                                   # embedded synthetic default
    python examples/dmmsa/train.py --config mosi --data MOSI/Processed/unaligned_50.pkl \\
        --text-model bert-base-uncased --out runs/mosi
    python examples/dmmsa/train.py --config sims --data SIMS/Processed/unaligned_39.pkl \\
        --no-gdwg --seeds 1 12 123 1234 12345 --out runs/sims_wo_gdwg
    torchrun --nproc_per_node=2 examples/dmmsa/train.py --config mosi --data ... --out runs/ddp

What it does, per seed (``--seeds``):

1. Unimodal pre-training (``--stage pretrain|both``): each encoder with its own small regressor
   (``model.pretrain_heads``) is trained on its own labels (``T``/``A``/``V`` unimodal labels
   when the file has them, CH-SIMS; else the multimodal label ``M``) with smooth L1, with the
   learning rate, batch size and epochs of Table 6 (``config.train.pretrain[m]``); the encoder of
   the epoch with the lowest validation MAE is kept and carried into the fusion stage.
2. Fusion (``--stage fusion|both``): AdamW (no weight decay on biases and norms) with a linear
   warm-up over ``warmup_epochs`` then a linear decay to 0 (ConFEDE), the DMMSA objective (Eq. 5,
   ``mt.MultiTaskObjective.dmmsa``) or the baseline, ``objective.step()`` at every epoch end (a
   GDWG stage is an epoch), model selection on the validation MAE (lower is better), test
   metrics with ``msa_metrics`` on the best epoch's model.

``--objective baseline`` trains the same model with the plain regression losses of ConFEDE/MMSA:
``L = SmoothL1(y*, y) + 1/6 sum_f SmoothL1(u*_f, u_f)`` with fixed weights 1 and 1, where the
unimodal targets are those of the DMMSA ``Uni`` task (``y`` for the similarity features, the
unimodal label ``y^m`` for the dissimilarity features when the file has it, else ``y``); no MSC,
no contrastive loss, no GDWG. ``--no-msc``, ``--no-cl``, ``--no-gdwg`` are Table 5's ablations
("w/o GDWG": the weights of GDWG's first stage, ``lambda_Uni = lambda_CL = 1/2``, held fixed).
``--cl-detach-anchor``, ``--cl-warmup K``, ``--cl-label-positives`` and ``--weighting
uncertainty`` are the options of the objective study (``docs/results.md``), off by default.

``--objective confede|self_mm|misa|plain`` trains the fusion stage with another recipe of
``mt.recipes`` (``plain`` is ``baseline``'s name there), each with its paper's defaults:
ConFEDE's retrieves six training samples per anchor (its selector rebuilt from the model's
encoder outputs before epochs 1, 3, 5, ...; ``--confede-sampler``, ``--rebuild-every``),
Self-MM's keeps a generated label per training sample, MISA's adds reconstruction decoders to
the head (created from their own random stream, so that every other weight is the same). The
log says which terms are active (on text-only data ConFEDE's and DMMSA's contrastive terms are
left out). A flag of one objective given with another is an error.

Outputs in ``--out``: ``config.json``; per seed ``seed<s>/pretrain_<m>.csv`` and
``seed<s>/fusion.csv`` (one row per epoch: lr, every task loss and weight, validation metrics),
``seed<s>/checkpoint.pt`` (written atomically every ``--save-every`` steps and at each epoch end;
everything ``--resume`` needs), ``seed<s>/pretrained.pt`` (the model after pre-training),
``seed<s>/model_best.pt`` and ``seed<s>/result.json``; ``results.json`` (every seed, mean and
std), ``results.md`` (our test metrics beside the paper's), ``val_mae.png`` (Fig. 4) and
``task_weights.png`` (the weights of the weighted tasks per epoch). A seed's ``checkpoint.pt``
is deleted when the seed has finished (``--keep-checkpoint`` keeps it).

A run folder describes one run. ``seed<s>/result.json`` carries the fingerprint of the settings
that made it (``configs.fingerprint``: every setting, the data by resolved path and content
digest), and ``--resume`` re-uses a finished seed only when it matches (else the seed is
trained again, and the log says which setting differed). While a run writes, ``OUT/.lock``
names it: a second ``train.py`` on the same ``--out`` is refused with the holder's pid, and the
lock of a process that died is taken over.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from dmmsa import batching, cli, configs, data, objectives, runlock, synthetic
from dmmsa.distributed import Dist
from dmmsa.evaluation import TrainingStopped
from dmmsa.reporting import plot_curves, results_table, summarize, write_json
from dmmsa.training import Run, run_seed

__all__ = ["main", "record_config", "report", "setup", "weighting_label"]


def setup(args: argparse.Namespace) -> Run:
    """The run, built once: processes, the data (the synthetic default generated if absent),
    the frozen configuration (``cli.resolve_config``) and the datasets."""
    path = cli.data_path(args)
    generate = cli.generates_synthetic(args)
    world = Dist(args.device)
    if generate:
        if world.main:
            print(f"generating the synthetic dataset into {path}")
            synthetic.make_synthetic(path, seed=0)
        world.barrier()
    splits = _load(path, args)
    facts = data.facts_of(splits)
    config = cli.resolve_config(args, facts, path, log=print if world.main else None)
    cli.check_text_model(config, facts)
    text_source = config.experiment.model.text_source
    datasets = {name: batching.MSADataset(split, text_source=text_source)
                for name, split in splits.items()}
    return Run(args, config, datasets, world)


def _load(path: Path, args: argparse.Namespace) -> dict[str, data.MMSASplit]:
    """The feature file, or a one-line error naming it (a label CSV is pointed to prepare)."""
    try:
        return data.load_mmsa(path, label_range=cli.load_range(args))
    except data.MMSADataError as error:
        hint = ""
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            hint = ("; a label file is turned into a feature pickle by "
                    "`python -m dmmsa.prepare --labels FILE --out FILE.pkl`")
        raise SystemExit(f"train.py: error: --data {error}{hint}") from None


def record_config(run: Run) -> None:
    """Write ``OUT/config.json``; with ``--resume`` first check that the run that wrote it
    trained the same experiment (its finished seeds are kept, and so is the file, otherwise)."""
    path = run.args.out / "config.json"
    if run.args.resume and path.exists():
        saved = json.loads(path.read_text()).get("fingerprint")
        if saved is None:
            raise SystemExit(f"--resume: {path} was written by an older train.py, without the "
                             "fingerprint that tells whether this run continues the same "
                             "experiment; start again in another --out")
        changed = configs.fingerprint_differences(saved, run.fingerprint)
        if changed:
            raise SystemExit(f"--resume: {run.args.out} holds a run made with other arguments "
                             f"(saved → now: {'; '.join(changed)}); its results and config.json "
                             "are left as they are. Rerun with the same arguments, or start "
                             "again in another --out")
    run.dist.barrier()  # every rank has checked before rank 0 writes
    if run.dist.main:
        run.args.out.mkdir(parents=True, exist_ok=True)
        write_json({"args": {k: _as_json(v) for k, v in vars(run.args).items()},
                    "config": dataclasses.asdict(run.experiment),
                    "phases": list(run.config.phases), "world_size": run.dist.world,
                    "device": str(run.dist.device), "fingerprint": run.fingerprint}, path)


def _as_json(value: Any) -> Any:
    """An argument as a JSON value: paths as strings, tuples as lists, the rest as it is."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_as_json(item) for item in value]
    return value


def weighting_label(config: configs.RunConfig) -> str:
    """The name of what sets the weights of the fusion's tasks, for the plot's title."""
    if config.objective == "baseline":
        return "fixed weights"
    return {"gdwg": "GDWG", "equal": "fixed equal weights",
            "uncertainty": "uncertainty weighting"}.get(
        config.experiment.train.objective.weighting, config.experiment.train.objective.weighting)


def report(run: Run, results: list[dict[str, Any]]) -> None:
    """``results.json``, ``results.md`` (printed too) and the plots of every seed's results."""
    out = run.args.out
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in results],
                               "test": summarize(results, "test"),
                               "test_constrained": summarize(results, "test_constrained"),
                               "pretrain": {}}
    if "fusion" in run.config.phases:
        summary["selected_epochs"] = [r["phases"]["fusion"]["best_epoch"] for r in results]
    for phase in run.config.phases:
        if phase.startswith("pretrain"):
            summary["pretrain"][phase] = summarize(
                [{"valid": r["phases"][phase]["valid"]} for r in results], "valid")
    name = objectives.run_name(run.config)
    everything = {"run": name, "config": run.experiment.name, "metrics": run.metric_set,
                  "selection": "validation MAE, lower is better",
                  "std": "sample standard deviation over seeds (ddof=1; 0 for one seed, and "
                         "results.md then shows none)",
                  "summary": summary, "per_seed": results}
    write_json(everything, out / "results.json")
    table = results_table(run.experiment.name, name, run.metric_set, summary)
    (out / "results.md").write_text(table)
    plot_curves(results, out, weighting=weighting_label(run.config), log=run.log)
    print(table, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``train.py`` with ``argv`` (default: the command line); 1 when training stopped."""
    args = cli.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif args.config == "synthetic" and args.device != "cuda":
        # OpenMP threads cost more than they give on 64-wide layers (10x slower on a busy machine)
        torch.set_num_threads(1)
    with runlock.hold_output(args.out, "train.py"):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    """Set the run up, train every seed and report (``--out`` is held by this process)."""
    run = setup(args)
    record_config(run)
    run.log(f"{objectives.run_name(run.config)} on {run.experiment.name} ({run.metric_set} "
            f"metrics), device {run.dist.device}{' bf16' if run.use_bf16 else ''}, "
            f"{run.dist.world} process(es), phases {list(run.config.phases)}, seeds "
            f"{list(run.experiment.train.seeds)}")
    try:
        results = [run_seed(run, seed) for seed in run.experiment.train.seeds]
        if run.dist.main:
            report(run, results)
        # Tear the process group down together: a rank that destroys it while another still
        # writes the report can abort in gloo's teardown ("terminate called ...").
        run.dist.barrier()
    except TrainingStopped as stop:
        if run.dist.main:
            print(f"error: {stop}", file=sys.stderr, flush=True)
        return 1
    finally:
        run.dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
