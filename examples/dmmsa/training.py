"""The training loop of the reference system: a phase is built once, then trained epoch by epoch.

A *phase* is one unimodal pre-training (``pretrain_T|A|V``: an encoder and its regressor on its
own label, Table 6) or the fusion (the whole model with the DMMSA objective, Eq. 5). Per seed,
:func:`run_seed` trains the run's phases in order; :func:`train_phase` is the loop::

    while epoch < epochs:
        for batch in epoch_batches(...):     # this rank's share, from the resumed position
            train_step(...)                  # forward, objective, NaN guard, backward, step
            (checkpoint every --save-every steps)
        end_epoch(...)                       # GDWG stage end, validation, selection, log row
        (checkpoint, CSV)

The :class:`~dmmsa.checkpoint.Checkpointer` owns saving, loading and the RNG states.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import mtobjectives as mt
from dmmsa import batching, configs, evaluation, feature_cache, objectives, retrieval
from dmmsa import model as model_lib
from dmmsa.checkpoint import (
    Checkpointer,
    EpochSums,
    Progress,
    atomic_save,
    cpu_clone,
    load_model,
    load_trainable_state,
    set_seed,
    trainable_state,
)
from dmmsa.distributed import Dist, epoch_indices
from dmmsa.evaluation import as_float, metrics_of
from dmmsa.reporting import write_csv, write_json
from dmmsa.run_state import Phase, Run, TrainingStopped
from mtobjectives.metrics import msa_metrics

__all__ = ["Phase", "Run", "average_objective_gradients", "build_phase", "end_epoch",
           "gradient_norm", "linear_warmup",
           "optimizer_for", "run_seed", "stop_on_non_finite", "train_phase", "train_step"]


# ------------------------------------------------------------------------ building a phase
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


def _what_is_trained(run: Run, name: str, model: model_lib.DMMSAModel,
                     ) -> tuple[configs.StageConfig, nn.Module, mt.MultiTaskObjective, str]:
    """The phase's stage settings, trained module, objective and label."""
    experiment = run.experiment
    if name == "fusion":
        model.set_text_trainable(not experiment.train.freeze_text_in_fusion)
        labels = run.datasets["train"].labels["M"].float()
        objective = objectives.fusion_objective(run.config, run.binning, labels)
        run.log(f"fusion objective: {objectives.run_name(run.config)}; terms "
                f"{objectives.active_terms(objective, run.config)}")
        return experiment.train.fusion, model, objective, "M"
    modality = name[-1]
    model.set_text_trainable(True)
    label = modality if modality in run.datasets["train"].labels else "M"
    objective = objectives.pretrain_objective(modality, label, experiment.train.objective.beta)
    return (experiment.train.pretrain[modality], model_lib.UnimodalRegressor(model, modality),
            objective, label)


def build_phase(run: Run, name: str, model: model_lib.DMMSAModel, seed: int) -> Phase:
    """Everything phase ``name`` needs: module, objective, DDP wrapper, optimiser, schedule."""
    world, experiment = run.dist, run.experiment
    stage, net, objective, label = _what_is_trained(run, name, model)
    objective.to(world.device).train()
    trained = net
    if world.world > 1:
        trained = DistributedDataParallel(
            net, device_ids=[world.device.index] if world.device.type == "cuda" else None,
            # fusion leaves the pre-training regressors (and without MSC the classifier)
            # unused; BERT's pooler is unused unless text_pooling="pooler"
            find_unused_parameters=name == "fusion" or experiment.model.text_source == "bert",
        )
    # global batch -> per-rank batch (DDP averages the gradients of equal per-rank batches)
    per_rank_batch = max(1, stage.batch_size // world.world)
    if stage.batch_size % world.world:
        warnings.warn(f"batch size {stage.batch_size} is not divisible by {world.world} "
                      f"processes; using {per_rank_batch * world.world}", stacklevel=1)
    train_size = len(run.datasets["train"])
    steps_per_epoch = math.ceil(
        len(epoch_indices(train_size, seed, 0, world, shuffle=True)) / per_rank_batch)
    if run.config.limit_batches is not None:
        steps_per_epoch = min(steps_per_epoch, run.config.limit_batches)
    total_steps = max(1, stage.epochs * steps_per_epoch)
    warmup_steps = min(total_steps - 1, round(stage.warmup_epochs * steps_per_epoch))
    text_encoder = (model.encoders["T"] if "T" in model.encoders
                    and experiment.model.text_source == "bert" else None)
    optimizer = optimizer_for(net, stage.lr, stage.weight_decay, stage.head_lr, text_encoder)
    learned = [p for p in objective.parameters() if p.requires_grad]
    if learned:  # e.g. UncertaintyWeighter's log-variances: the head lr, no weight decay
        optimizer.add_param_group({"params": learned, "weight_decay": 0.0,
                                   "lr": stage.head_lr if stage.head_lr is not None
                                   else stage.lr})
    return Phase(name, net, trained, objective, label, stage, per_rank_batch, steps_per_epoch,
                 optimizer, linear_warmup(optimizer, warmup_steps, total_steps))


# ---------------------------------------------------------------------------------- the loop
def epoch_batches(run: Run, phase: Phase, progress: Progress, seed: int) -> Iterator[dict]:
    """This rank's batches of the current epoch, from the batch the run stands at."""
    size = phase.per_rank_batch
    order = epoch_indices(len(run.datasets["train"]), seed, progress.epoch, run.dist,
                          shuffle=True)[: phase.steps_per_epoch * size]
    # The sampler is a fixed list, so the order never depends on the global RNG; the explicit
    # generator also keeps the loader from drawing from the global RNG (exact resume).
    return iter(batching.make_loader(run.datasets["train"], batch_size=size,
                                 sampler=order[progress.batch * size:],
                                 num_workers=run.args.num_workers,
                                 seed=seed * 100_003 + progress.epoch))


def stop_on_non_finite(values: dict[str, float], world: Dist, where: str, last_saved: str,
                       what: str = "loss in task(s)") -> None:
    """Stop every rank when any rank's value is not finite; name them and the step."""
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if world.world > 1:
        if world.sum([float(bool(bad))])[0] == 0:
            return
        bad = sorted({name for names in world.gather(bad) for name in names})
    if bad:
        shown = ", ".join(f"{name}={values[name]:.4g}" for name in bad if name in values)
        raise TrainingStopped(
            f"non-finite {what} {', '.join(bad)} at {where} ({shown}); stopping. "
            f"Nothing was saved after this step; the last good checkpoint is {last_saved}"
        )


def average_objective_gradients(objective: nn.Module, world: Dist) -> None:
    """Average the gradients of the objective's learned parameters over the processes.

    DDP averages the model's gradients only; an objective with parameters of its own
    (``mt.UncertaintyWeighter``'s log-variances) is outside it, so without this each rank
    would step its own copy and the ranks' weights would drift apart. A collective call (every
    rank, after ``backward()``); nothing with one process or an objective without parameters.
    """
    learned = [p for p in objective.parameters() if p.requires_grad]
    if world.world == 1 or not learned:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in learned]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world.world
    offset = 0
    for parameter, grad in zip(learned, grads):
        parameter.grad = flat[offset:offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()


def gradient_norm(net: nn.Module, clip: float | None,
                  extra: list[nn.Parameter] | None = None) -> float:
    """The total 2-norm of the gradients of ``net`` (and of ``extra`` parameters, e.g. the
    objective's); they are clipped to ``clip`` when given."""
    parameters = [p for p in [*net.parameters(), *(extra or [])] if p.grad is not None]
    norm = nn.utils.get_total_norm([p.grad for p in parameters])
    if clip is not None:
        nn.utils.clip_grads_with_norm_(parameters, clip, norm)
    return float(norm)


def train_step(run: Run, phase: Phase, progress: Progress, batch: dict[str, Any],
               last_saved: str, seed: int) -> float:
    """One optimiser step on ``batch``; returns the total loss (stops on a non-finite one)."""
    batch = model_lib.batch_to(batch, run.dist.device)
    anchors = None
    if retrieval.retrieves(phase):  # ConFEDE: each anchor's six retrieved samples appended
        batch, anchors = retrieval.with_retrieved(run, phase, batch)
    with run.autocast():
        outputs = phase.trained(batch)
    outputs = as_float(outputs)
    if phase.name == "fusion" and run.config.inject_nan == progress.step + 1:
        outputs["prediction"] = outputs["prediction"] * float("nan")
    targets: dict[str, Any] = {key: value.float() for key, value in batch["labels"].items()}
    targets["index"] = batch["index"]  # Self-MM's label maps are keyed by the sample's row
    if anchors is not None:
        targets[mt.NUM_ANCHORS] = anchors
    result = phase.objective(outputs, targets)
    # one device-to-host copy per step for the check and the log
    n_terms = len(result.terms)
    values = torch.stack([term.float() for term in result.terms.values()]
                         + [weight.float().to(result.loss.device)
                            for weight in result.weights.values()]
                         + [result.loss.detach().float()]).tolist()
    losses = dict(zip(result.terms, values[:n_terms]))
    weights = dict(zip(result.weights, values[n_terms:-1]))
    if not math.isfinite(values[-1]) and all(map(math.isfinite, values[:n_terms])):
        losses["(total)"] = values[-1]
    where = (f"step {progress.step + 1} (seed {seed}, {phase.name}, epoch {progress.epoch + 1}, "
             f"batch {progress.batch + 1})")
    stop_on_non_finite(losses, run.dist, where, last_saved)
    phase.optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    average_objective_gradients(phase.objective, run.dist)
    norm = gradient_norm(phase.net, run.experiment.train.grad_clip,
                         list(phase.objective.parameters()))
    stop_on_non_finite({"gradient norm": norm}, run.dist, where, last_saved, what="value of")
    phase.optimizer.step()
    phase.scheduler.step()
    progress.step += 1
    progress.batch += 1
    sums = progress.sums
    for name in sums.sum.keys() & result.terms.keys():
        sums.sum[name] += losses[name]
        sums.count[name] += 1
    sums.total += values[-1]
    sums.batches += 1
    # the weight of the epoch's last step: constant within a GDWG stage, learned per step by
    # uncertainty weighting
    sums.weights.update(weights)
    return values[-1]


def end_epoch(run: Run, phase: Phase, progress: Progress, started: float) -> dict[str, float]:
    """The GDWG stage end, validation, model selection and the epoch's log row.

    Returns the epoch's validation metrics.
    """
    phase.objective.step()  # the end of a GDWG stage (collective under DDP)
    means = phase.objective.last_stage_means  # the weighter's, all-reduced in step()
    own, sums = phase.logged_by_us, progress.sums
    totals = run.dist.sum([sums.sum[t] for t in own] + [sums.count[t] for t in own]
                          + [sums.total, sums.batches])
    for i, name in enumerate(own):
        means[name] = totals[i] / totals[len(own) + i] if totals[len(own) + i] else math.nan
    valid = metrics_of(evaluation.predict(phase.net, run.datasets["valid"],
                                          phase.stage.batch_size, phase.label, run),
                       run.metric_set)
    improved = valid["MAE"] < progress.best["MAE"]
    if improved:
        progress.best = {"MAE": valid["MAE"], "epoch": progress.epoch + 1, "metrics": valid,
                         "state": cpu_clone(trainable_state(phase.net))}
    row: dict[str, Any] = {"epoch": progress.epoch + 1, "step": progress.step,
                           "lr": phase.scheduler.get_last_lr()[0],
                           "train_loss": totals[-2] / max(1.0, totals[-1])}
    row.update({f"loss_{name}": means[name] for name in phase.tasks})
    row.update({f"weight_{name}": sums.weights.get(name, math.nan) for name in phase.tasks})
    row.update({f"val_{key}": value for key, value in valid.items()})
    row["best"] = int(improved)
    row["seconds"] = round(time.perf_counter() - started, 3)
    progress.history.append(row)
    progress.epoch, progress.batch = progress.epoch + 1, 0
    progress.sums = EpochSums.empty(own)
    return valid


def train_phase(run: Run, phase: Phase, model: model_lib.DMMSAModel, seed: int,
                checkpointer: Checkpointer, completed: dict[str, Any],
                resumed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``phase`` to its last epoch (from ``resumed``, a checkpoint of it, if given).

    Returns the phase's summary: best epoch, its validation metrics, the label, the log rows.
    """
    csv_path = checkpointer.path.parent / f"{phase.name}.csv"
    checkpointer.start_phase()
    progress = Progress(sums=EpochSums.empty(phase.logged_by_us))
    if resumed is not None:
        progress = checkpointer.restore(resumed, phase, model)
        run.log(f"seed {seed} {phase.name}: resumed at epoch {progress.epoch + 1}, batch "
                f"{progress.batch}, step {progress.step}")
        if run.dist.main and progress.history:
            write_csv(progress.history, csv_path)
    bar = _progress_bar(run, phase, progress, seed)
    while progress.epoch < phase.stage.epochs:
        started = time.perf_counter()
        phase.trained.train()
        if retrieval.retrieves(phase) and progress.batch == 0:
            retrieval.rebuild_if_due(run, phase, model, progress.epoch + 1)
        for batch in epoch_batches(run, phase, progress, seed):
            loss = train_step(run, phase, progress, batch, checkpointer.last_saved, seed)
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if run.args.save_every and progress.step % run.args.save_every == 0:
                checkpointer.save(phase, progress, model, completed)
        valid = end_epoch(run, phase, progress, started)
        checkpointer.save(phase, progress, model, completed)
        if run.dist.main:
            write_csv(progress.history, csv_path)
            if bar is not None:
                bar.set_postfix(val_MAE=f"{valid['MAE']:.4f}", best=progress.best["epoch"])
    if bar is not None:
        bar.close()
    return _phase_summary(run, phase, progress, seed)


def _progress_bar(run: Run, phase: Phase, progress: Progress, seed: int) -> Any:
    if not run.dist.main:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=phase.stage.epochs * phase.steps_per_epoch, initial=progress.step,
                desc=f"seed {seed} {phase.name}", unit="step", leave=False, disable=None,
                dynamic_ncols=True)


def _phase_summary(run: Run, phase: Phase, progress: Progress, seed: int) -> dict[str, Any]:
    """Load the best epoch's weights into the net; its summary for ``result.json``."""
    best = progress.best
    if best["state"] is not None:
        load_trainable_state(phase.net, best["state"])
    if best["metrics"] is not None:
        run.log(f"seed {seed} {phase.name}: best epoch {best['epoch']}/{phase.stage.epochs}, "
                f"valid MAE {best['MAE']:.4f}")
    return {"best_epoch": best["epoch"], "selection": "valid MAE (lower is better)",
            "valid": best["metrics"], "label": phase.label, "history": progress.history}


# ------------------------------------------------------------------------------- one seed
def run_seed(run: Run, seed: int) -> dict[str, Any]:
    """Every phase for one seed; returns its results (also written to ``seed<s>/result.json``)."""
    seed_dir = run.args.out / f"seed{seed}"
    result_path = seed_dir / "result.json"
    if run.args.resume and result_path.exists():
        finished = _finished_result(run, seed, result_path)
        if finished is not None:
            return finished
    if run.dist.main:
        seed_dir.mkdir(parents=True, exist_ok=True)
    run.dist.barrier()
    checkpointer = Checkpointer(seed_dir, seed, run.fingerprint, run.dist)
    checkpoint = checkpointer.load() if run.args.resume and checkpointer.path.exists() else None
    started = time.perf_counter()
    model, completed = _start_model(run, seed, seed_dir, checkpoint)
    pretrain = [p for p in run.config.phases if p != "fusion"]
    for name in run.config.phases:
        if name in completed:
            continue
        with feature_cache.fusion_inputs(run, model, seed_dir, name):  # --freeze-encoders
            phase = build_phase(run, name, model, seed)
            resumed = (checkpoint if checkpoint is not None and checkpoint["phase"] == name
                       else None)
            completed[name] = train_phase(run, phase, model, seed, checkpointer, completed,
                                          resumed)
        if pretrain and name == pretrain[-1] and run.dist.main:
            atomic_save(model.state_dict(), seed_dir / "pretrained.pt")
    result: dict[str, Any] = {"seed": seed, "phases": _phase_results(completed)}
    if "fusion" in run.config.phases:
        with feature_cache.fusion_inputs(run, model, seed_dir, "fusion"):
            result.update(_test(run, model))
        if run.dist.main:
            atomic_save(model.state_dict(), seed_dir / "model_best.pt")
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    if run.dist.main:  # the settings that made it: --resume re-uses it only when they match
        write_json({**result, "fingerprint": run.fingerprint}, result_path)
        if not run.args.keep_checkpoint:  # finished: result.json is what --resume reads back
            checkpointer.path.unlink(missing_ok=True)
    return result


def _finished_result(run: Run, seed: int, result_path: Path) -> dict[str, Any] | None:
    """A finished seed's result, if the settings that made it are this run's (else ``None``).

    A run directory can hold a seed finished with other settings: a run without ``--resume``
    that rewrote ``config.json`` and was stopped before it reached that seed.
    """
    try:
        saved = json.loads(result_path.read_text())
    except (OSError, ValueError) as error:
        run.log(f"seed {seed}: {result_path} is unreadable ({error}); training it again")
        return None
    made_with = saved.pop("fingerprint", None) if isinstance(saved, dict) else None
    changed = (["(no fingerprint: written by an older train.py)"] if made_with is None
               else configs.fingerprint_differences(made_with, run.fingerprint))
    if changed:
        run.log(f"seed {seed}: {result_path} was made with other settings (saved → now: "
                f"{'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}); training it "
                "again")
        return None
    run.log(f"seed {seed}: finished earlier, reading {result_path} (made with these settings)")
    return saved


def _start_model(run: Run, seed: int, seed_dir: Path, checkpoint: dict[str, Any] | None,
                 ) -> tuple[model_lib.DMMSAModel, dict[str, Any]]:
    """The seed's model (from the checkpoint, or ``pretrained.pt`` for a fusion-only run) and
    the phases it completed."""
    set_seed(seed)
    model = model_lib.DMMSAModel(run.experiment.model,  # the same on every rank
                                 reconstruction=run.config.objective == "misa").to(run.dist.device)
    if run.dist.rank:
        # Every rank must draw its own dropout masks: correlated masks across the global batch
        # would make N processes train a different model than one process with the same batch.
        set_seed(seed + 7919 * run.dist.rank)
    pretrained = seed_dir / "pretrained.pt"
    if checkpoint is not None:
        if checkpoint.get("fixed") is not None and pretrained.exists():  # fixed encoders
            _load_pretrained(model, torch.load(pretrained, map_location=run.dist.device,
                                               weights_only=True))
        load_model(model, checkpoint, seed_dir / "checkpoint.pt")
        return model, checkpoint["completed"]
    if run.config.stage == "fusion":
        if pretrained.exists():
            _load_pretrained(model, torch.load(pretrained, map_location=run.dist.device,
                                               weights_only=True))
            run.log(f"seed {seed}: fusion starts from the pre-trained encoders in {pretrained}")
        else:
            run.log(f"seed {seed}: no {pretrained}; fusion starts without unimodal pre-training")
    return model, {}


def _load_pretrained(model: model_lib.DMMSAModel, state: dict[str, Any]) -> None:
    """The pre-trained weights; MISA's decoders, which the pre-training has not, start fresh."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("head.decoders.")]
    if missing or unexpected:
        raise RuntimeError(f"pretrained.pt does not fit this model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")


def _phase_results(completed: dict[str, Any]) -> dict[str, Any]:
    """Per phase: best epoch, its validation metrics, the label, the curves (for the plots)."""
    phases = {}
    for name, summary in completed.items():
        history = summary["history"]
        phases[name] = {key: summary[key] for key in ("best_epoch", "valid", "label")}
        phases[name]["curve"] = {
            "val_MAE": [row["val_MAE"] for row in history],
            "weights": {key[7:]: [row[key] for row in history]
                        for key in history[0] if key.startswith("weight_")} if history else {},
        }
    return phases


def _test(run: Run, model: model_lib.DMMSAModel) -> dict[str, Any]:
    """The selected fusion model's test metrics (and with the restricted scope, Fig. 6)."""
    test = evaluation.predict(model, run.datasets["test"], run.experiment.train.fusion.batch_size,
                              "M", run)
    result: dict[str, Any] = {"test": metrics_of(test, run.metric_set),
                              "test_samples": len(test["index"])}
    if run.config.constrain_prediction:
        msc = run.config.objective == "dmmsa" and run.experiment.train.objective.msc
        if "logits" not in test or not msc:
            run.log("--constrain-prediction needs the MSC classifier, which this objective "
                    "does not train; skipped")
        else:
            constrained = run.binning.constrain(torch.from_numpy(test["prediction"]),
                                                torch.from_numpy(test["logits"]))
            result["test_constrained"] = msa_metrics(constrained, test["target"],
                                                     run.metric_set)
    return result

