"""Predictions over a split (gathered across ranks), their metrics, and the stop of a run whose
numbers are no longer finite."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dmmsa import batching
from dmmsa import model as model_lib
from dmmsa.distributed import epoch_indices
from dmmsa.run_state import Run, TrainingStopped
from mtobjectives.metrics import msa_metrics

__all__ = ["TrainingStopped", "as_float", "metrics_of", "predict"]


def as_float(outputs: Any) -> Any:
    """Cast (nested) floating outputs to float32, so losses are computed outside bf16."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {key: as_float(value) for key, value in outputs.items()}
    return outputs


@torch.no_grad()
def predict(net: nn.Module, dataset: Any, batch_size: int, label: str, run: Run) -> dict:
    """Predictions over a whole split, gathered across ranks, each sample exactly once.

    Returns:
        ``{"index", "prediction", "target"}`` (and ``"logits"`` when the net gives them), NumPy
        arrays ordered by sample index.

    Raises:
        TrainingStopped: a prediction is not finite.
    """
    indices = epoch_indices(len(dataset), 0, 0, run.dist, shuffle=False)
    loader = batching.make_loader(dataset, batch_size=batch_size, sampler=indices,
                              num_workers=run.args.num_workers, seed=0)
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


def metrics_of(result: dict[str, np.ndarray], metric_set: str) -> dict[str, float]:
    """``msa_metrics`` of :func:`predict`'s predictions (``metric_set``: mosi, mosei, sims)."""
    return msa_metrics(result["prediction"], result["target"], metric_set)
