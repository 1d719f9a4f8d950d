"""ConFEDE's retrieved samples in the fusion loop (``--objective confede``).

ConFEDE's objective reads, beside each anchor of a batch, six training samples that its selector
(``mt.recipes.ConFEDESampler``, held by the objective as ``objective.sampler``) retrieved for it.
Before the epochs it rebuilds at (``needs_rebuild``: 1, 3, 5, ... on MOSI), :func:`rebuild_if_due`
ranks the training split by the model's current encoder outputs (ConFEDE's ``update_matrix``:
the pooled T; V; A features, in that order, without gradient) and logs the share of the
"similar-similar" samples (its positives' pool) whose rounded label is the anchor's;
:func:`with_retrieved` appends the six samples of every anchor to the batch (ConFEDE's layout:
the anchors first, then anchor b's samples at rows B + 6b, ..., B + 6b + 5) and says how many
rows are anchors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate

from dmmsa import feature_cache
from dmmsa import model as model_lib
from dmmsa.run_state import Phase, Run

__all__ = ["rebuild_if_due", "retrieves", "with_retrieved"]


def retrieves(phase: Phase) -> bool:
    """Whether the phase's objective retrieves samples (ConFEDE's)."""
    return phase.name == "fusion" and hasattr(phase.objective, "sampler")


def rebuild_if_due(run: Run, phase: Phase, model: model_lib.DMMSAModel, epoch: int) -> None:
    """Rebuild the sampler's pools from the training split before ``epoch`` (1-based), if due."""
    sampler = phase.objective.sampler
    if not sampler.needs_rebuild(epoch):
        return
    train = run.datasets["train"]
    encoded = feature_cache.encode_split(run, model, train)
    features = torch.cat([encoded[m] for m in ("T", "V", "A") if m in encoded], dim=-1)
    labels = train.labels["M"].float().cpu()
    sampler.rebuild(features, labels)
    share = sampler.same_label_share(labels)  # what its two positives are drawn from
    run.log(f"{phase.name} epoch {epoch}: ConFEDE's sampler rebuilt from {len(train)} training "
            f"clips ({'as written' if sampler.as_written else 'intended'} reading); "
            f"{100 * share:.1f} % of the similar-similar samples share the anchor's rounded "
            "label")


def with_retrieved(run: Run, phase: Phase, batch: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The batch with its anchors' six retrieved training samples appended, and ``B``."""
    anchors = int(batch["index"].shape[0])
    ids = phase.objective.sampler.sample(batch["index"].cpu())
    train = run.datasets["train"]
    retrieved = default_collate([train[i] for i in ids.flatten().tolist()])
    return _concatenated(batch, retrieved), anchors


def _concatenated(first: Any, second: Any) -> Any:
    if isinstance(first, dict):
        return {key: _concatenated(value, second[key]) for key, value in first.items()}
    return torch.cat([first, second.to(first.device)], dim=0)
