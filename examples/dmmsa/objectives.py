"""The objectives of the two stages: unimodal pre-training, DMMSA fusion and the baseline."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as tnf
from torch import Tensor

import mtobjectives as mt
from dmmsa import configs

__all__ = ["baseline_objective", "fusion_objective", "pretrain_objective", "run_name"]


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


def fusion_objective(config: configs.RunConfig,
                     binning: mt.CoarseGrainedBinning) -> mt.MultiTaskObjective:
    """The fusion stage's objective: DMMSA's (Eq. 5) with the configured switches, or the
    baseline's."""
    spec = config.experiment.train.objective
    if config.objective == "baseline":
        return baseline_objective(spec.beta)
    schedules = ({"CL": mt.WarmupSchedule(spec.cl_warmup, mode="linear")}
                 if spec.cl and spec.cl_warmup > 0 else None)
    return mt.MultiTaskObjective.dmmsa(
        binning=binning, temperature=spec.temperature, form=spec.form, beta=spec.beta,
        msc=spec.msc, uni=spec.uni, cl=spec.cl, weighting=spec.weighting,
        weighting_temperature=spec.weighting_temperature, scale=spec.scale,
        detach_anchor=spec.detach_anchor, label_positives=spec.label_positives,
        schedules=schedules,
    )


def run_name(config: configs.RunConfig) -> str:
    """What was trained, in words: ``"DMMSA w/o CL (CL temperature 0.25)"``, ``"baseline ..."``.

    Every option that differs from the paper's objective is named (ablations first, then the
    changed settings in parentheses), so that two runs with other objectives never share a name.
    """
    if config.objective == "baseline":
        return "baseline (SmoothL1 fused + unimodal, fixed weights)"
    spec = config.experiment.train.objective
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
