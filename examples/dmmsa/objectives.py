"""The objectives of the two stages: unimodal pre-training, and the fusion's recipe (DMMSA's by
default; ConFEDE's, Self-MM's, MISA's or the plain one with ``--objective``)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as tnf
from torch import Tensor

import mtobjectives as mt
from dmmsa import configs

__all__ = ["OBJECTIVE_NAMES", "active_terms", "baseline_objective", "fusion_objective",
           "pretrain_objective", "run_name"]


def pretrain_objective(modality: str, label: str, beta: float) -> mt.MultiTaskObjective:
    """One task named ``modality``: smooth L1 of the unimodal prediction to ``targets[label]``."""

    def regression(outputs: dict[str, Any], targets: dict[str, Tensor]) -> Tensor:
        prediction = outputs["prediction"]
        return tnf.smooth_l1_loss(prediction, targets[label].to(prediction.dtype), beta=beta)

    return mt.MultiTaskObjective({modality: regression})


def baseline_objective(beta: float) -> mt.MultiTaskObjective:
    """ConFEDE/MMSA's regression losses: fused + unimodal smooth L1, fixed weights 1 and 1.

    The DMMSA objective with MSC, CL and GDWG switched off (one Uni weight, scale 1), so that
    the comparison changes nothing but the objective's extra terms and weighting.
    """
    return mt.MultiTaskObjective.dmmsa(binning=None, beta=beta, msc=False, cl=False,
                                       weighting="equal", scale="num_tasks")


def fusion_objective(config: configs.RunConfig, binning: mt.CoarseGrainedBinning,
                     train_labels: Tensor | None = None) -> mt.MultiTaskObjective:
    """The fusion stage's objective: a recipe of ``mt.recipes`` (``config.objective``), DMMSA's
    (Eq. 5) with the configured switches by default.

    ``train_labels`` (the training split's ``M``, row = sample index) are Self-MM's initial
    label maps. On data without audio or vision, ConFEDE's contrastive term (which contrasts
    all six features) is left out, as DMMSA's CL is (:func:`active_terms` says so).
    """
    spec = config.experiment.train.objective
    if config.objective in ("baseline", "plain"):
        return baseline_objective(spec.beta)
    if config.objective == "misa":
        return mt.recipes.misa()
    if config.objective == "confede":
        sampler = mt.recipes.ConFEDESampler(
            as_written=spec.confede_sampler == "as_written",
            rebuild_every=spec.confede_rebuild_every)
        return mt.recipes.confede(sampler=sampler,
                                  contrastive_weight=0.1 if _all_modalities(config) else 0.0)
    if config.objective == "self_mm":
        if train_labels is None:
            raise ValueError("Self-MM's objective needs the training split's labels")
        width = config.experiment.model.feature_dim
        fused = 2 * len(config.experiment.model.modalities) * width
        return mt.recipes.self_mm(train_labels, {"M": fused, "T": width, "A": width,
                                                 "V": width})
    schedules = ({"CL": mt.WarmupSchedule(spec.cl_warmup, mode="linear")}
                 if spec.cl and spec.cl_warmup > 0 else None)
    return mt.MultiTaskObjective.dmmsa(
        binning=binning, temperature=spec.temperature, form=spec.form, beta=spec.beta,
        msc=spec.msc, uni=spec.uni, cl=spec.cl, weighting=spec.weighting,
        weighting_temperature=spec.weighting_temperature, scale=spec.scale,
        detach_anchor=spec.detach_anchor, label_positives=spec.label_positives,
        schedules=schedules,
    )


def _all_modalities(config: configs.RunConfig) -> bool:
    return set(config.experiment.model.modalities) == {"T", "A", "V"}


def active_terms(objective: mt.MultiTaskObjective, config: configs.RunConfig) -> list[str]:
    """The terms the objective computes on this data, for the run's header: a weight-0 term,
    Self-MM's label update, and a term whose modalities the data lacks (Self-MM's ``A``/``V``,
    MISA's similarity of two shared representations) left out."""
    modalities = config.experiment.model.modalities
    absent = {"labels"}
    if config.objective == "self_mm":
        absent |= {m for m in ("T", "A", "V") if m not in modalities}
    if config.objective == "misa" and len(modalities) < 2:
        absent.add("Sim")
    fixed = {name: weight for name, weight in objective.fixed.items() if name not in absent}
    return [name for name in objective.tasks
            if name in objective.dynamic or fixed.get(name, 0.0) > 0.0]


OBJECTIVE_NAMES = {"confede": "ConFEDE's objective", "self_mm": "Self-MM's objective",
                   "misa": "MISA's objective"}


def run_name(config: configs.RunConfig) -> str:
    """What was trained, in words: ``"DMMSA w/o CL (CL temperature 0.25)"``, ``"baseline ..."``.

    Every option that differs from the paper's objective is named (ablations first, then the
    changed settings in parentheses), so that two runs with other objectives never share a name.
    """
    if config.objective in ("baseline", "plain"):
        return f"{config.objective} (SmoothL1 fused + unimodal, fixed weights)"
    spec = config.experiment.train.objective
    if config.objective == "confede":
        return (f"{OBJECTIVE_NAMES['confede']} ({spec.confede_sampler.replace('_', ' ')} "
                f"sampler, rebuilt every {spec.confede_rebuild_every} epochs)")
    if config.objective in OBJECTIVE_NAMES:
        return OBJECTIVE_NAMES[config.objective]
    ablations = [name for off, name in ((not spec.msc, "w/o MSC"), (not spec.cl, "w/o CL"),
                                        (spec.weighting == "equal", "w/o GDWG")) if off]
    default = configs.ObjectiveConfig()
    changed = [f"{label} {value}" for label, value, default_value in (
        ("CL temperature", spec.temperature, default.temperature),
        ("CL form", spec.form, default.form), ("weight scale", spec.scale, default.scale),
    ) if value != default_value]
    if spec.weighting not in ("gdwg", "equal"):
        changed.append(f"{spec.weighting} weighting")
    if spec.cl:  # the contrastive options change nothing without CL
        changed += [text for on, text in (
            (spec.detach_anchor, "CL anchor detached"),
            (spec.cl_warmup > 0, f"CL warm-up {spec.cl_warmup}"),
            (spec.label_positives, "CL label positives")) if on]
    return ("DMMSA" + (" " + ", ".join(ablations) if ablations else "")
            + (f" ({', '.join(changed)})" if changed else ""))
