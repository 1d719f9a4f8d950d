"""Train the DMMSA reference system: unimodal pre-training, then fusion with the DMMSA objective.

The whole training loop is in this file. Usage (from the repository root)::

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

Outputs in ``--out``: ``config.json``; per seed ``seed<s>/pretrain_<m>.csv`` and
``seed<s>/fusion.csv`` (one row per epoch: lr, every task loss and weight, validation metrics),
``seed<s>/checkpoint.pt`` (written atomically every ``--save-every`` steps and at each epoch end;
everything ``--resume`` needs), ``seed<s>/pretrained.pt`` (the model after pre-training),
``seed<s>/model_best.pt`` and ``seed<s>/result.json``; ``results.json`` (every seed, mean and
std), ``results.md`` (our test metrics beside the paper's), ``val_mae.png`` (Fig. 4) and
``task_weights.png`` (the GDWG weights per epoch).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as tnf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import mtobjectives as mt
from dmmsa import configs, data, synthetic
from dmmsa import model as model_lib
from mtobjectives.metrics import msa_metrics

CHECKPOINT_FORMAT = 1

# The paper's numbers (SPEC section 4: Tables 2, 3 and 5), accuracies and F1 x 100.
PAPER: dict[str, dict[str, dict[str, str]]] = {
    "sims": {
        "ConFEDE": {"Mult_acc_3": "68.36", "Mult_acc_5": "43.72", "MAE": "0.3924",
                    "Corr": "0.6351"},
        "DMMSA": {"Mult_acc_3": "69.63", "Mult_acc_5": "46.92", "MAE": "0.3778", "Corr": "0.66"},
        "DMMSA w/o MSC": {"Mult_acc_3": "68.41", "Mult_acc_5": "44.68", "MAE": "0.3807",
                          "Corr": "0.656"},
        "DMMSA w/o CL": {"Mult_acc_3": "69.41", "Mult_acc_5": "46.74", "MAE": "0.3828",
                         "Corr": "0.651"},
        "DMMSA w/o GDWG": {"Mult_acc_3": "69.32", "Mult_acc_5": "46.17", "MAE": "0.3776",
                           "Corr": "0.663"},
    },
    "mosi": {
        "ConFEDE": {"Has0_acc_2": "83.85", "Non0_acc_2": "85.55", "Has0_F1_score": "83.83",
                    "Non0_F1_score": "85.76", "Mult_acc_7": "43.82", "MAE": "0.725",
                    "Corr": "0.789"},
        "DMMSA": {"Has0_acc_2": "83.97", "Non0_acc_2": "85.70", "Has0_F1_score": "83.92",
                  "Non0_F1_score": "85.70", "Mult_acc_7": "45.39", "MAE": "0.710",
                  "Corr": "0.793"},
    },
    "mosei": {
        "ConFEDE": {"Has0_acc_2": "80.7", "Non0_acc_2": "84.38", "Has0_F1_score": "81.2",
                    "Non0_F1_score": "84.32", "Mult_acc_7": "51.96", "MAE": "0.555",
                    "Corr": "0.753"},
        "DMMSA": {"Has0_acc_2": "82.63", "Non0_acc_2": "86.27", "Has0_F1_score": "83.04",
                  "Non0_F1_score": "86.21", "Mult_acc_7": "53.91", "MAE": "0.527",
                  "Corr": "0.777"},
    },
}

# Columns of the results table: (header, metric keys joined by "/").
COLUMNS = {
    "mosi": [("Acc-2 (has0/non0)", ("Has0_acc_2", "Non0_acc_2")),
             ("F1 (has0/non0)", ("Has0_F1_score", "Non0_F1_score")),
             ("Acc-5", ("Mult_acc_5",)), ("Acc-7", ("Mult_acc_7",)), ("MAE", ("MAE",)),
             ("Corr", ("Corr",))],
    "sims": [("Acc-2", ("Mult_acc_2",)), ("F1", ("F1_score",)), ("Acc-3", ("Mult_acc_3",)),
             ("Acc-5", ("Mult_acc_5",)), ("MAE", ("MAE",)), ("Corr", ("Corr",))],
}
COLUMNS["mosei"] = COLUMNS["mosi"]

# Arguments that change what is trained: --resume refuses a checkpoint made with other values.
RUN_KEYS = ("config", "data", "text_model", "text_source", "modalities", "stage", "objective",
            "no_msc", "no_cl", "no_gdwg", "epochs", "lr", "batch_size", "dropout",
            "pretrain_epochs", "limit_batches", "inject_nan")


class TrainingStopped(RuntimeError):
    """A non-finite loss (or prediction): the run stops, the last good checkpoint is kept."""


# ------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train DMMSA (ConFEDE's model + the DMMSA objective) in two stages.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="synthetic", choices=configs.config_names(),
                        help="Table 6 preset, or the embedded synthetic default")
    parser.add_argument("--data", type=Path, default=None,
                        help="MMSA feature pickle (synthetic: generated into OUT/data if absent)")
    parser.add_argument("--text-model", default=None,
                        help="BERT name or local folder; implies --text-source bert "
                             "(default: the config's model)")
    parser.add_argument("--text-source", default=None, choices=("bert", "features"),
                        help="text as token ids through BERT, or the file's precomputed token "
                             "features through a Transformer (default: the config's)")
    parser.add_argument("--modalities", default=None,
                        help="subset of TAV to use, e.g. 'T' or 'TA' (default: the config's)")
    parser.add_argument("--stage", default="both", choices=("pretrain", "fusion", "both"))
    parser.add_argument("--objective", default="dmmsa", choices=("dmmsa", "baseline"),
                        help="baseline: SmoothL1(fused) + SmoothL1(unimodal), fixed weights 1")
    parser.add_argument("--no-msc", action="store_true", help="ablation: drop L_MSC")
    parser.add_argument("--no-cl", action="store_true", help="ablation: drop L_CL")
    parser.add_argument("--no-gdwg", action="store_true",
                        help="ablation: fixed equal weights for Uni and CL")
    parser.add_argument("--cl-temperature", type=float, default=None,
                        help="temperature of the Multi NT-Xent loss (default: the config's, 0.5)")
    parser.add_argument("--cl-form", default=None, choices=("in", "out"),
                        help="Multi NT-Xent form: the paper's L_in or SupCon's L_out "
                             "(default: the config's, 'in')")
    parser.add_argument("--weight-scale", default=None, choices=("sum_one", "num_tasks"),
                        help="scale of the Uni/CL weights: the paper's (sum to one) or DWA's "
                             "(sum to the number of weighted tasks) (default: the config's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one run per seed, mean and std reported (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="fusion epochs")
    parser.add_argument("--lr", type=float, default=None, help="fusion learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="fusion (global) batch size")
    parser.add_argument("--dropout", type=float, default=None,
                        help="override every dropout rate of the model (encoders and projectors)")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="epochs of every unimodal pre-training stage")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="cuda trains with bf16 autocast")
    parser.add_argument("--constrain-prediction", action="store_true",
                        help="also evaluate with binning.constrain (Fig. 6's restricted scope)")
    parser.add_argument("--out", type=Path, default=Path("runs/dmmsa"))
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/seed*/checkpoint.pt (finished seeds are kept)")
    parser.add_argument("--save-every", type=int, default=1000,
                        help="also checkpoint every N optimiser steps (0: epoch ends only)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: 1 for the synthetic config, "
                             "whose tiny layers run slower with more; else torch's default)")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="at most N training batches per epoch (quick checks)")
    parser.add_argument("--inject-nan", type=int, default=None, metavar="STEP",
                        help="testing aid: make the fused prediction NaN at this fusion step")
    args = parser.parse_args(argv)
    if args.text_model is not None and args.text_source == "features":
        parser.error("--text-model needs --text-source bert")
    if args.objective == "baseline" and (args.no_msc or args.no_cl or args.no_gdwg):
        parser.error("--no-msc/--no-cl/--no-gdwg are ablations of --objective dmmsa")
    knobs = [flag for flag, value in (("--cl-temperature", args.cl_temperature),
                                      ("--cl-form", args.cl_form),
                                      ("--weight-scale", args.weight_scale)) if value is not None]
    if args.objective == "baseline" and knobs:
        parser.error(f"{'/'.join(knobs)} set the DMMSA objective; --objective baseline has no "
                     "contrastive task and fixed weights")
    if args.cl_temperature is not None and not (math.isfinite(args.cl_temperature)
                                                and args.cl_temperature > 0):
        parser.error(f"--cl-temperature must be a finite number > 0, got {args.cl_temperature}")
    if args.modalities is not None:
        wanted = args.modalities.upper()
        if not wanted or any(m not in "TAV" for m in wanted) or len(set(wanted)) != len(wanted):
            parser.error(f"--modalities must be a subset of TAV, got {args.modalities!r}")
        args.modalities = "".join(m for m in "TAV" if m in wanted)
    for name in ("epochs", "batch_size", "pretrain_epochs", "limit_batches", "save_every",
                 "num_workers", "threads"):
        value = getattr(args, name)
        minimum = 0 if name in ("save_every", "num_workers") else 1
        if value is not None and value < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    return args


def resolve_config(args: argparse.Namespace) -> configs.ExperimentConfig:
    """The preset with the command line's overrides applied."""
    config = configs.get_config(args.config)
    if args.text_source is not None:
        config.model.text_source = args.text_source
    if args.text_model is not None:
        config.model.text_source, config.model.text_model = "bert", args.text_model
    if args.modalities is not None:
        config.model.modalities = tuple(args.modalities)
    fusion = config.train.fusion
    fusion.epochs = fusion.epochs if args.epochs is None else args.epochs
    fusion.lr = fusion.lr if args.lr is None else args.lr
    fusion.batch_size = fusion.batch_size if args.batch_size is None else args.batch_size
    if args.dropout is not None:
        config.model.encoder_dropout = config.model.head_dropout = args.dropout
    if args.pretrain_epochs is not None:
        for stage in config.train.pretrain.values():
            stage.epochs = args.pretrain_epochs
    if args.no_msc:
        config.train.objective.msc = False
    if args.no_cl:
        config.train.objective.cl = False
    if args.no_gdwg:
        config.train.objective.weighting = "equal"
    if args.cl_temperature is not None:
        config.train.objective.temperature = args.cl_temperature
    if args.cl_form is not None:
        config.train.objective.form = args.cl_form
    if args.weight_scale is not None:
        config.train.objective.scale = args.weight_scale
    if args.seeds is not None:
        config.train.seeds = tuple(args.seeds)
    if config.train.selection_metric != "MAE":
        raise ValueError("this script selects on the validation MAE (lower is better); got "
                         f"selection_metric={config.train.selection_metric!r}")
    return config


# ----------------------------------------------------------------- processes, seeds, checkpoints
class Dist:
    """This process's place in a ``torchrun`` job (world size 1 without one)."""

    def __init__(self, device_arg: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for but CUDA is not available")
        if use_cuda:
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            dist.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a collective call)."""
        if self.world == 1:
            return [obj]
        objects: list[Any] = [None] * self.world
        dist.all_gather_object(objects, obj)
        return objects

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (a collective call)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global state other code may draw from)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` so that a kill at any moment leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cpu_clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- data and batches
def load_data(args: argparse.Namespace, config: configs.ExperimentConfig, world: Dist) -> dict:
    """The three splits of the feature file (the synthetic default is generated if absent)."""
    path = args.data
    if path is None:
        if args.config != "synthetic":
            raise SystemExit(f"--data is required for --config {args.config} (an MMSA pickle)")
        path = args.out / "data" / "synthetic.pkl"
    if not path.exists() and args.config == "synthetic":
        if world.main:
            print(f"generating the synthetic dataset into {path}")
            synthetic.make_synthetic(path, seed=0)
        world.barrier()
    splits = data.load_mmsa(path, label_range=config.label_range)
    dims = splits["train"].feature_dims
    text_dim = dims["T"] if config.model.text_source == "features" else None
    # the model reads the file's widths and keeps only the modalities the file has
    config.model = configs.with_input_dims(
        config, text=text_dim, audio=dims["A"], vision=dims["V"],
        available=splits["train"].modalities,
    ).model
    modalities = config.model.modalities
    if config.train.objective.cl and ("T" not in modalities or not {"A", "V"} & set(modalities)):
        # text-anchored pairs need the anchor T_s and a positive A_s or V_s
        warnings.warn(f"modalities {''.join(modalities)}: no text-anchored positive pair, so "
                      "the contrastive task (CL) is switched off", stacklevel=2)
        config.train.objective.cl = False
    return {name: data.MSADataset(split, text_source=config.model.text_source)
            for name, split in splits.items()}


def epoch_indices(size: int, seed: int, epoch: int, world: Dist, shuffle: bool) -> list[int]:
    """This rank's sample order: a DistributedSampler (padded to equal shares) for any world."""
    sampler = DistributedSampler(range(size), num_replicas=world.world, rank=world.rank,
                                 shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


def make_loader(dataset: Any, indices: list[int], batch_size: int, workers: int,
                seed: int) -> DataLoader:
    # The sampler is a fixed list, so the order never depends on the global RNG; the explicit
    # generator also keeps the loader from drawing from the global RNG (exact resume).
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed))


def targets_of(batch: dict[str, Any]) -> dict[str, Tensor]:
    return {key: value.float() for key, value in batch["labels"].items()}


def as_float(outputs: Any) -> Any:
    """Cast (nested) floating outputs to float32, so losses are computed outside bf16."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {key: as_float(value) for key, value in outputs.items()}
    return outputs


# ------------------------------------------------------------------------ networks, objectives
class UnimodalRegressor(nn.Module):
    """One encoder of the model and its pre-training regressor (only these two are trained)."""

    def __init__(self, model: model_lib.DMMSAModel, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = model.encoders[modality]
        self.regressor = model.pretrain_heads[modality]
        self.encode = model.encode  # the model's input routing; a method, not a submodule

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        feature = self.encode(batch, [self.modality])[self.modality]
        return {"prediction": self.regressor(feature).squeeze(-1)}


def smooth_l1(prediction: Tensor, target: Tensor, beta: float) -> Tensor:
    return tnf.smooth_l1_loss(prediction, target.to(prediction.dtype), beta=beta)


def pretrain_objective(modality: str, label: str, beta: float) -> mt.MultiTaskObjective:
    def regression(outputs: dict[str, Any], targets: dict[str, Tensor]) -> Tensor:
        return smooth_l1(outputs["prediction"], targets[label], beta)

    return mt.MultiTaskObjective({modality: regression})


def baseline_objective(beta: float) -> mt.MultiTaskObjective:
    """ConFEDE/MMSA's regression losses: fused + unimodal smooth L1, fixed weights 1 and 1.

    The DMMSA objective with MSC, CL and GDWG switched off (one Uni weight, scale 1), so that
    the comparison changes nothing but the objective's extra terms and weighting.
    """
    return mt.MultiTaskObjective.dmmsa(binning=None, beta=beta, msc=False, cl=False,
                                       weighting="equal", scale="num_tasks")


def fusion_objective(args: argparse.Namespace, config: configs.ExperimentConfig,
                     binning: mt.CoarseGrainedBinning) -> mt.MultiTaskObjective:
    spec = config.train.objective
    if args.objective == "baseline":
        return baseline_objective(spec.beta)
    return mt.MultiTaskObjective.dmmsa(
        binning=binning, temperature=spec.temperature, form=spec.form, beta=spec.beta,
        msc=spec.msc, uni=spec.uni, cl=spec.cl, weighting=spec.weighting,
        weighting_temperature=spec.weighting_temperature, scale=spec.scale,
    )


def run_name(args: argparse.Namespace, config: configs.ExperimentConfig) -> str:
    if args.objective == "baseline":
        return "baseline (SmoothL1 fused + unimodal, fixed weights)"
    spec = config.train.objective
    ablations = [name for off, name in ((not spec.msc, "w/o MSC"), (not spec.cl, "w/o CL"),
                                        (spec.weighting == "equal", "w/o GDWG")) if off]
    default = configs.ObjectiveConfig()
    changed = [f"{label} {value}" for label, value, default_value in (
        ("CL temperature", spec.temperature, default.temperature),
        ("CL form", spec.form, default.form), ("weight scale", spec.scale, default.scale),
    ) if value != default_value]
    return ("DMMSA" + (" " + ", ".join(ablations) if ablations else "")
            + (f" ({', '.join(changed)})" if changed else ""))


# ----------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(net: nn.Module, dataset: Any, batch_size: int, label: str, run: Run) -> dict:
    """Predictions over a whole split, gathered across ranks, each sample exactly once."""
    indices = epoch_indices(len(dataset), 0, 0, run.dist, shuffle=False)
    loader = make_loader(dataset, indices, batch_size, run.args.num_workers, seed=0)
    was_training = net.training
    net.eval()
    parts: dict[str, list[np.ndarray]] = {"index": [], "prediction": [], "target": []}
    for batch in loader:
        batch = model_lib.batch_to(batch, run.dist.device)
        with run.autocast():
            outputs = as_float(net(batch))
        parts["index"].append(batch["index"].cpu().numpy())
        parts["prediction"].append(outputs["prediction"].cpu().numpy())
        parts["target"].append(batch["labels"][label].float().cpu().numpy())
        if "logits" in outputs:
            parts.setdefault("logits", []).append(outputs["logits"].cpu().numpy())
    net.train(was_training)
    local = {key: np.concatenate(value) for key, value in parts.items()}
    gathered = run.dist.gather(local)
    merged = {key: np.concatenate([part[key] for part in gathered]) for key in local}
    # DistributedSampler pads the last share with repeated samples: keep each index once
    _, first = np.unique(merged["index"], return_index=True)
    merged = {key: value[first] for key, value in merged.items()}
    if len(merged["index"]) != len(dataset):
        raise RuntimeError(f"gathered {len(merged['index'])} predictions for {len(dataset)} "
                           "samples")
    bad = int((~np.isfinite(merged["prediction"])).sum())
    if bad:
        raise TrainingStopped(f"{bad} non-finite prediction(s) in evaluation; stopping")
    return merged


def metrics_of(result: dict[str, np.ndarray], dataset_name: str) -> dict[str, float]:
    return msa_metrics(result["prediction"], result["target"], dataset_name)


# ----------------------------------------------------------------------------------- the run
class Run:
    """What every phase of every seed shares: arguments, config, data, device."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dist = Dist(args.device)
        self.config = resolve_config(args)
        self.datasets = load_data(args, self.config, self.dist)
        self.metric_set = self.config.dataset  # "sims" | "mosi" | "mosei": bins and metrics
        self.binning = mt.CoarseGrainedBinning.preset(self.metric_set,
                                                      self.config.model.num_classes)
        self.use_bf16 = self.dist.device.type == "cuda"
        self.phases: list[str] = []
        if args.stage in ("pretrain", "both"):
            self.phases += [f"pretrain_{m}" for m in self.config.model.modalities]
        if args.stage in ("fusion", "both"):
            self.phases.append("fusion")

    def autocast(self) -> Any:
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def log(self, message: str) -> None:
        if self.dist.main:
            print(message, flush=True)

    def fingerprint(self) -> dict[str, Any]:
        return {key: str(getattr(self.args, key)) for key in RUN_KEYS}


def build_model(run: Run) -> model_lib.DMMSAModel:
    return model_lib.DMMSAModel(run.config.model).to(run.dist.device)


def optimizer_for(net: nn.Module, lr: float, weight_decay: float, head_lr: float | None = None,
                  text: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW; biases and normalisation weights get no weight decay (BERT's/ConFEDE's groups).

    With ``head_lr`` (``StageConfig.head_lr``), every parameter outside ``text`` (the BERT text
    encoder) learns at ``head_lr`` and the text encoder at ``lr``; without it, all at ``lr``.
    """
    text_ids = ({id(p) for p in text.parameters()} if head_lr is not None and text is not None
                else set())
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in net.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim < 2 or "norm" in name.lower() or name.endswith("bias")
        other = head_lr is not None and id(parameter) not in text_ids
        groups.setdefault((other, plain), []).append(parameter)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if plain else weight_decay,
          "lr": head_lr if other else lr}
         for (other, plain), params in sorted(groups.items()) if params] or
        [{"params": [], "weight_decay": weight_decay}], lr=lr)


def linear_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the lr, then linear decay to 0 (``get_linear_schedule...``)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def new_accumulator(tasks: list[str]) -> dict[str, Any]:
    return {"sum": dict.fromkeys(tasks, 0.0), "count": dict.fromkeys(tasks, 0),
            "total": 0.0, "batches": 0, "weights": {}}


def check_finite(losses: dict[str, float], run: Run, where: str, last_saved: str) -> None:
    """Stop every rank when any rank's loss is not finite; name the task(s) and the step."""
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    if run.dist.world > 1:
        if run.dist.sum([float(bool(bad))])[0] == 0:
            return
        bad = sorted({name for names in run.dist.gather(bad) for name in names})
    if bad:
        values = ", ".join(f"{name}={losses[name]:.4g}" for name in bad if name in losses)
        raise TrainingStopped(
            f"non-finite loss in task(s) {', '.join(bad)} at {where} ({values}); stopping. "
            f"Nothing was saved after this step; the last good checkpoint is {last_saved}"
        )


def train_phase(run: Run, phase: str, model: model_lib.DMMSAModel, seed: int, seed_dir: Path,
                completed: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any]:
    """Train one phase (``pretrain_T|A|V`` or ``fusion``), checkpointing as it goes.

    ``state`` is a checkpoint of this phase to continue from (``--resume``). Returns the phase's
    summary (best epoch, its validation metrics, the per-epoch rows).
    """
    args, config, world = run.args, run.config, run.dist
    train_set, valid_set = run.datasets["train"], run.datasets["valid"]
    if phase == "fusion":
        stage = config.train.fusion
        model.set_text_trainable(not config.train.freeze_text_in_fusion)
        net: nn.Module = model
        objective = fusion_objective(args, config, run.binning)
        label = "M"
    else:
        modality, stage = phase[-1], config.train.pretrain[phase[-1]]
        model.set_text_trainable(True)
        net = UnimodalRegressor(model, modality)
        label = modality if modality in train_set.labels else "M"
        objective = pretrain_objective(modality, label, config.train.objective.beta)
    objective.to(world.device).train()
    tasks = list(objective.tasks)
    trained = net
    if world.world > 1:
        trained = DistributedDataParallel(
            net, device_ids=[world.device.index] if world.device.type == "cuda" else None,
            # fusion leaves the pre-training regressors (and without MSC the classifier)
            # unused; BERT's pooler is unused unless text_pooling="pooler"
            find_unused_parameters=phase == "fusion" or config.model.text_source == "bert",
        )

    # global batch -> per-rank batch (DDP averages the gradients of equal per-rank batches)
    per_rank_batch = max(1, stage.batch_size // world.world)
    if stage.batch_size % world.world:
        warnings.warn(f"batch size {stage.batch_size} is not divisible by {world.world} "
                      f"processes; using {per_rank_batch * world.world}", stacklevel=1)
    steps_per_epoch = math.ceil(
        len(epoch_indices(len(train_set), seed, 0, world, shuffle=True)) / per_rank_batch
    )
    if args.limit_batches is not None:
        steps_per_epoch = min(steps_per_epoch, args.limit_batches)
    total_steps = max(1, stage.epochs * steps_per_epoch)
    warmup_steps = min(total_steps - 1, round(stage.warmup_epochs * steps_per_epoch))
    text_encoder = (model.encoders["T"] if "T" in model.encoders
                    and config.model.text_source == "bert" else None)
    optimizer = optimizer_for(net, stage.lr, stage.weight_decay, stage.head_lr, text_encoder)
    scheduler = linear_warmup(optimizer, warmup_steps, total_steps)

    checkpoint_path = seed_dir / "checkpoint.pt"
    csv_path = seed_dir / f"{phase}.csv"
    epoch, batch_in_epoch, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"MAE": math.inf, "epoch": 0, "metrics": None, "state": None}
    accumulator = new_accumulator(tasks)
    last_saved = (f"{checkpoint_path} (the previous phase's)" if checkpoint_path.exists()
                  else "none (no checkpoint was written yet)")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        mine = state["per_rank"][world.rank]
        objective.load_state_dict(mine["objective"])
        accumulator = mine["accumulator"]
        epoch, batch_in_epoch, step = state["epoch"], state["batch"], state["step"]
        history, best = state["history"], state["best"]
        set_rng_state(mine["rng"])  # last: everything above may have drawn random numbers
        last_saved = f"{checkpoint_path} (step {step})"
        run.log(f"seed {seed} {phase}: resumed at epoch {epoch + 1}, batch {batch_in_epoch}, "
                f"step {step}")
        if world.main and history:
            write_csv(history, csv_path)

    def save() -> str:
        per_rank = world.gather({
            "rng": rng_state(),
            "objective": cpu_clone(objective.state_dict()),
            "accumulator": accumulator,
        })
        if world.main:
            atomic_save({
                "format": CHECKPOINT_FORMAT, "fingerprint": run.fingerprint(), "seed": seed,
                "phase": phase, "epoch": epoch, "batch": batch_in_epoch, "step": step,
                "completed": completed, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history, "best": best, "per_rank": per_rank,
            }, checkpoint_path)
        return f"{checkpoint_path} (step {step})"

    progress = None
    if world.main:
        from tqdm.auto import tqdm

        progress = tqdm(total=stage.epochs * steps_per_epoch, initial=step,
                        desc=f"seed {seed} {phase}", unit="step", leave=False,
                        disable=None, dynamic_ncols=True)
    while epoch < stage.epochs:
        started = time.perf_counter()
        order = epoch_indices(len(train_set), seed, epoch, world, shuffle=True)
        order = order[: steps_per_epoch * per_rank_batch]
        loader = make_loader(train_set, order[batch_in_epoch * per_rank_batch:], per_rank_batch,
                             args.num_workers, seed=seed * 100_003 + epoch)
        trained.train()
        for batch in loader:
            batch = model_lib.batch_to(batch, world.device)
            with run.autocast():
                outputs = trained(batch)
            outputs = as_float(outputs)
            if phase == "fusion" and args.inject_nan == step + 1:
                outputs["prediction"] = outputs["prediction"] * float("nan")
            result = objective(outputs, targets_of(batch))
            # one device-to-host copy per step for the check and the log
            values = torch.stack([term.float() for term in result.terms.values()]
                                 + [result.loss.detach().float()]).tolist()
            losses = dict(zip(result.terms, values[:-1]))
            if not math.isfinite(values[-1]) and all(map(math.isfinite, values[:-1])):
                losses["(total)"] = values[-1]
            where = (f"step {step + 1} (seed {seed}, {phase}, epoch {epoch + 1}, "
                     f"batch {batch_in_epoch + 1})")
            check_finite(losses, run, where, last_saved)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            if config.train.grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), config.train.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            for name in result.terms:
                accumulator["sum"][name] += losses[name]
                accumulator["count"][name] += 1
            accumulator["total"] += values[-1]
            accumulator["batches"] += 1
            for name, weight in result.weights.items():  # constant within an epoch (stage)
                accumulator["weights"].setdefault(name, float(weight))
            if progress is not None:
                progress.update()
                progress.set_postfix(loss=f"{values[-1]:.4f}", refresh=False)
            if args.save_every and step % args.save_every == 0:
                last_saved = save()

        # epoch end: validation, model selection, the GDWG stage, the log row, a checkpoint
        sums = world.sum([accumulator["sum"][t] for t in tasks]
                         + [accumulator["count"][t] for t in tasks]
                         + [accumulator["total"], accumulator["batches"]])
        k = len(tasks)
        valid = metrics_of(predict(net, valid_set, stage.batch_size, label, run), run.metric_set)
        improved = valid["MAE"] < best["MAE"]
        if improved:
            best = {"MAE": valid["MAE"], "epoch": epoch + 1, "metrics": valid,
                    "state": cpu_clone(net.state_dict())}
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                               "lr": scheduler.get_last_lr()[0],
                               "train_loss": sums[2 * k] / max(1.0, sums[2 * k + 1])}
        for i, name in enumerate(tasks):
            row[f"loss_{name}"] = sums[i] / sums[k + i] if sums[k + i] else float("nan")
        for name in tasks:
            row[f"weight_{name}"] = accumulator["weights"].get(name, float("nan"))
        row.update({f"val_{key}": value for key, value in valid.items()})
        row["best"] = int(improved)
        row["seconds"] = round(time.perf_counter() - started, 3)
        history.append(row)
        objective.step()  # end of a GDWG stage (collective under DDP)
        epoch, batch_in_epoch = epoch + 1, 0
        accumulator = new_accumulator(tasks)
        last_saved = save()
        if world.main:
            write_csv(history, csv_path)
            if progress is not None:
                progress.set_postfix(val_MAE=f"{valid['MAE']:.4f}", best=best["epoch"])
    if progress is not None:
        progress.close()

    if best["state"] is not None:
        net.load_state_dict(best["state"])
    summary = {"best_epoch": best["epoch"], "selection": "valid MAE (lower is better)",
               "valid": best["metrics"], "label": label, "history": history}
    if best["metrics"] is not None:
        run.log(f"seed {seed} {phase}: best epoch {best['epoch']}/{stage.epochs}, "
                f"valid MAE {best['MAE']:.4f}")
    return summary


def load_checkpoint(path: Path, run: Run) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"{path}: not a checkpoint of this script (format {state.get('format')})")
    mine, theirs = run.fingerprint(), state["fingerprint"]
    changed = {key: (theirs.get(key), mine[key]) for key in mine if theirs.get(key) != mine[key]}
    if changed:
        raise SystemExit(f"--resume: {path} was made with other arguments "
                         f"(saved, now): {changed}; rerun with the same ones or another --out")
    if len(state["per_rank"]) != run.dist.world:
        raise SystemExit(f"--resume: {path} was written by {len(state['per_rank'])} "
                         f"process(es), this run has {run.dist.world}")
    return state


def run_seed(run: Run, seed: int) -> dict[str, Any]:
    """Both stages for one seed; returns its results (also written to seed<s>/result.json)."""
    seed_dir = run.args.out / f"seed{seed}"
    result_path = seed_dir / "result.json"
    if run.args.resume and result_path.exists():
        run.log(f"seed {seed}: finished earlier, reading {result_path}")
        return json.loads(result_path.read_text())
    if run.dist.main:
        seed_dir.mkdir(parents=True, exist_ok=True)
    run.dist.barrier()
    checkpoint_path = seed_dir / "checkpoint.pt"
    checkpoint = None
    if run.args.resume and checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path, run)
    started = time.perf_counter()

    set_seed(seed)
    model = build_model(run)  # identical on every rank (DDP also broadcasts rank 0's parameters)
    if run.dist.rank:
        # Every rank must draw its own dropout masks: correlated masks across the global batch
        # would make N processes train a different model than one process with the same batch.
        set_seed(seed + 7919 * run.dist.rank)
    completed: dict[str, Any] = {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        completed = checkpoint["completed"]
    elif run.args.stage == "fusion":
        pretrained = seed_dir / "pretrained.pt"
        if pretrained.exists():
            model.load_state_dict(torch.load(pretrained, map_location=run.dist.device))
            run.log(f"seed {seed}: fusion starts from the pre-trained encoders in {pretrained}")
        else:
            run.log(f"seed {seed}: no {pretrained}; fusion starts without unimodal pre-training")
    for phase in run.phases:
        if phase in completed:
            continue
        state = checkpoint if checkpoint is not None and checkpoint["phase"] == phase else None
        completed[phase] = train_phase(run, phase, model, seed, seed_dir, completed, state)
        if phase.startswith("pretrain") and phase == [p for p in run.phases if p != "fusion"][-1]:
            if run.dist.main:
                atomic_save(model.state_dict(), seed_dir / "pretrained.pt")

    result: dict[str, Any] = {"seed": seed, "phases": {}}
    for phase, summary in completed.items():
        result["phases"][phase] = {key: summary[key] for key in ("best_epoch", "valid", "label")}
        result["phases"][phase]["curve"] = {
            "val_MAE": [row["val_MAE"] for row in summary["history"]],
            "weights": {key[7:]: [row[key] for row in summary["history"]]
                        for key in summary["history"][0] if key.startswith("weight_")}
            if summary["history"] else {},
        }
    if "fusion" in run.phases:
        test = predict(model, run.datasets["test"], run.config.train.fusion.batch_size, "M", run)
        result["test"] = metrics_of(test, run.metric_set)
        result["test_samples"] = len(test["index"])
        if run.args.constrain_prediction:
            msc = run.args.objective == "dmmsa" and run.config.train.objective.msc
            if "logits" not in test or not msc:
                run.log("--constrain-prediction needs the MSC classifier, which this objective "
                        "does not train; skipped")
            else:
                constrained = run.binning.constrain(torch.from_numpy(test["prediction"]),
                                                    torch.from_numpy(test["logits"]))
                result["test_constrained"] = msa_metrics(constrained, test["target"],
                                                         run.metric_set)
        if run.dist.main:
            atomic_save(model.state_dict(), seed_dir / "model_best.pt")
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    if run.dist.main:
        write_json(result, result_path)
    return result


# ------------------------------------------------------------------------------------ reports
def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def summarize(results: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for one seed) of every metric of ``result[key]``."""
    runs = [r[key] for r in results if key in r]
    if not runs:
        return {}
    return {metric: dict(zip(("mean", "std"), mean_std([r[metric] for r in runs])))
            for metric in runs[0]}


def format_cell(summary: dict[str, dict[str, float]], keys: tuple[str, ...]) -> str:
    cells = []
    for key in keys:
        mean, std = summary[key]["mean"], summary[key]["std"]
        if key in ("MAE", "Corr"):
            cells.append(f"{mean:.4f} ± {std:.4f}")
        else:
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
    return " / ".join(cells)


def results_table(run: Run, summary: dict[str, Any]) -> str:
    """Markdown: our test metrics (mean ± std over seeds) beside the paper's (Tables 2, 3, 5)."""
    args, config = run.args, run.config
    lines = [f"# DMMSA reference system: {config.name}", ""]
    if summary.get("test"):
        n = len(summary["seeds"])
        lines += [f"Test metrics of the model with the lowest validation MAE, mean ± std over "
                  f"{n} seed(s) {summary['seeds']} (accuracies and F1 × 100).", ""]
        columns = COLUMNS[run.metric_set]
        lines.append("| model | " + " | ".join(header for header, _ in columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        rows = [(f"ours: {run_name(args, config)}", summary["test"])]
        if summary.get("test_constrained"):
            rows.append((f"ours: {run_name(args, config)} + restricted scope (Fig. 6)",
                         summary["test_constrained"]))
        for label, metrics in rows:
            lines.append(f"| {label} | " + " | ".join(format_cell(metrics, keys)
                                                      for _, keys in columns) + " |")
        if config.name in PAPER:
            for label, values in PAPER[config.name].items():
                cells = ["/".join(values[k] for k in keys) if all(k in values for k in keys)
                         else "" for _, keys in columns]
                lines.append(f"| paper: {label} | " + " | ".join(cells) + " |")
            lines += ["", "Paper: Tables 2, 3 and 5 (mean of 5 seeds on the paper's feature "
                      "files); its ConFEDE row is the paper's re-run of ConFEDE."]
    else:
        lines.append("No fusion stage in this run (--stage pretrain): no test metrics.")
    pre = {phase: s for phase, s in summary.get("pretrain", {}).items() if s}
    if pre:
        lines += ["", "Unimodal pre-training, best validation MAE (mean ± std): " + ", ".join(
            f"{phase[-1]} {s['MAE']['mean']:.4f} ± {s['MAE']['std']:.4f}"
            for phase, s in pre.items())]
    return "\n".join(lines) + "\n"


def plot_curves(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fusion = [(r["seed"], r["phases"]["fusion"]["curve"]) for r in results
              if "fusion" in r.get("phases", {})]
    if not fusion:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in fusion:
        mae = curve["val_MAE"]
        epochs = np.arange(1, len(mae) + 1)
        (line,) = ax.plot(epochs, mae, label=f"seed {seed}")
        best = int(np.argmin(mae))
        ax.plot(epochs[best], mae[best], "o", markerfacecolor="none", markersize=10,
                color=line.get_color())  # Fig. 4 circles the lowest MAE
    ax.set(xlabel="epoch", ylabel="validation MAE", title="Validation MAE per epoch (Fig. 4)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "val_mae.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in fusion:
        for task, weights in curve["weights"].items():
            ax.plot(np.arange(1, len(weights) + 1), weights, marker=".",
                    label=f"λ_{task} (seed {seed})")
    ax.set(xlabel="epoch", ylabel="task weight",
           title="Task weights per epoch (GDWG: Uni and CL)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "task_weights.png", dpi=120)
    plt.close(fig)


def report(run: Run, results: list[dict[str, Any]]) -> None:
    out = run.args.out
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in results],
                               "test": summarize(results, "test"),
                               "test_constrained": summarize(results, "test_constrained"),
                               "pretrain": {}}
    for phase in run.phases:
        if phase.startswith("pretrain"):
            summary["pretrain"][phase] = summarize(
                [{"valid": r["phases"][phase]["valid"]} for r in results], "valid")
    everything = {"run": run_name(run.args, run.config), "config": run.config.name,
                  "metrics": run.metric_set, "selection": "validation MAE, lower is better",
                  "std": "sample standard deviation over seeds (ddof=1; 0 for one seed)",
                  "summary": summary, "per_seed": results}
    write_json(everything, out / "results.json")
    table = results_table(run, summary)
    (out / "results.md").write_text(table)
    plot_curves(results, out)
    print(table, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif args.config == "synthetic" and args.device != "cuda":
        # OpenMP threads cost more than they give on 64-wide layers (10x slower on a busy machine)
        torch.set_num_threads(1)
    run = Run(args)
    if run.dist.main:
        args.out.mkdir(parents=True, exist_ok=True)
        config_dump = {"args": {k: str(v) for k, v in vars(args).items()},
                       "config": dataclasses.asdict(run.config), "phases": run.phases,
                       "world_size": run.dist.world, "device": str(run.dist.device)}
        write_json(config_dump, args.out / "config.json")
    run.log(f"{run_name(args, run.config)} on {run.config.name} ({run.metric_set} metrics), device "
            f"{run.dist.device}{' bf16' if run.use_bf16 else ''}, {run.dist.world} process(es), "
            f"phases {run.phases}, seeds {list(run.config.train.seeds)}")
    try:
        results = [run_seed(run, seed) for seed in run.config.train.seeds]
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
        if run.dist.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
