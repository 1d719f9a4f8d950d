"""``--freeze-encoders``: the fusion stage on fixed encoders, their outputs computed once.

ConFEDE keeps its text encoder fixed in the fusion stage; with ``--freeze-encoders`` every
encoder is fixed after the unimodal pre-training (no gradient, evaluation mode: no dropout), and
the fusion trains the decomposition head alone. Its inputs, the encoders' pooled outputs, are
then the same every epoch, so they are computed once per split and cached in
``seed<s>/encoder_features_<digest>.pt`` (or ``--feature-cache DIR``, shared by runs from the
same pre-trained encoders; pooled ``[N, d_m]`` vectors per modality, never token sequences). The
cache is keyed by a digest of the pre-trained encoder weights, the data file's content digest and
the modalities (its name holds a digest of that key); a cache whose key or shapes do not match
this run is refused with a message, never used. ``--no-feature-cache`` trains the same frozen
model without the cache (the encoders run at every step), for an A/B of the two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dmmsa import batching
from dmmsa import model as model_lib
from dmmsa.checkpoint import atomic_save, state_sha256
from dmmsa.run_state import Run

__all__ = ["CACHE_NAME", "CachedDataset", "cache_key", "cache_path", "encode_split",
           "fusion_inputs"]

CACHE_NAME = "encoder_features.pt"


class CachedDataset(Dataset):
    """A split's samples as the encoders' cached outputs (``"encoded"``), labels and index."""

    def __init__(self, source: batching.MSADataset, encoded: dict[str, torch.Tensor]) -> None:
        self.labels = source.labels
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.labels["M"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index) % len(self)
        return {"encoded": {m: values[index] for m, values in self.encoded.items()},
                "labels": {name: values[index] for name, values in self.labels.items()},
                "index": torch.tensor(index, dtype=torch.int64)}


def cache_path(run: Run, model: model_lib.DMMSAModel, seed_dir: Path) -> Path:
    """``encoder_features_<digest>.pt`` in ``--feature-cache`` (default: the seed's folder).

    The name holds a digest of :func:`cache_key`, so runs that share a folder (``compare``'s
    variants of one fold and seed, from the same pre-trained encoders) share one cache, and a
    cache of other weights or data is never even found.
    """
    return _path_of(run, cache_key(run, model), seed_dir)


def _path_of(run: Run, key: dict[str, str], seed_dir: Path) -> Path:
    encoded = json.dumps(key, sort_keys=True).encode()
    folder = run.args.feature_cache if run.args.feature_cache is not None else seed_dir
    name = f"{CACHE_NAME.removesuffix('.pt')}_{hashlib.sha256(encoded).hexdigest()[:16]}.pt"
    return folder / name


def cache_key(run: Run, model: model_lib.DMMSAModel) -> dict[str, str]:
    """What the cached features depend on: the encoders' weights, the data and its modalities."""
    return {"encoders_sha256": state_sha256(model.encoders.state_dict()),
            "data_sha256": run.config.data_sha256,
            "data": run.config.data, "modalities": "".join(model.modalities)}


@contextlib.contextmanager
def fusion_inputs(run: Run, model: model_lib.DMMSAModel, seed_dir: Path,
                  phase: str) -> Iterator[None]:
    """Inside: the fusion phase of a ``--freeze-encoders`` run reads fixed encoders, and (unless
    ``--no-feature-cache``) ``run.datasets`` are the cached outputs. Nothing otherwise."""
    if phase != "fusion" or not run.config.freeze_encoders:
        yield
        return
    model.freeze_encoders()
    if run.args.no_feature_cache:
        yield
        return
    key = cache_key(run, model)  # once: hashing the encoders' weights is not free
    encoded = _load_or_compute(run, model, key, _path_of(run, key, seed_dir))
    original = run.datasets
    run.datasets = {name: CachedDataset(split, encoded[name]) for name, split in original.items()}
    try:
        yield
    finally:
        run.datasets = original


def _load_or_compute(run: Run, model: model_lib.DMMSAModel, key: dict[str, str],
                     path: Path) -> dict[str, dict[str, torch.Tensor]]:
    if run.dist.main and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"key": key, "splits": _encode_splits(run, model)}, path)
        size = path.stat().st_size / 2**20
        run.log(f"encoder features cached in {path} ({size:.1f} MiB)")
    run.dist.barrier()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("key") != key:
        differing = [k for k in key if saved.get("key", {}).get(k) != key[k]]
        raise SystemExit(f"train.py: error: {path} holds the encoder features of other "
                         f"{', '.join(differing) or 'settings'}; it is never used for this run. "
                         "Delete it to compute the features again")
    splits = saved["splits"]
    for name, dataset in run.datasets.items():
        for m, values in splits.get(name, {}).items():
            if values.shape != (len(dataset), model.feature_dims[m]):
                raise SystemExit(f"train.py: error: {path}: the cached {name} features of {m} "
                                 f"have shape {tuple(values.shape)}, this run needs "
                                 f"{(len(dataset), model.feature_dims[m])}; delete it to "
                                 "compute them again")
    return {name: {m: values.to(run.dist.device) for m, values in features.items()}
            for name, features in splits.items()}


def _encode_splits(run: Run, model: model_lib.DMMSAModel) -> dict[str, dict[str, torch.Tensor]]:
    """The fixed encoders' outputs of every split, in evaluation mode."""
    return {name: encode_split(run, model, dataset) for name, dataset in run.datasets.items()}


@torch.no_grad()
def encode_split(run: Run, model: model_lib.DMMSAModel, dataset: Any) -> dict[str, torch.Tensor]:
    """Each encoder's pooled output ``{m: [N, d_m]}`` (float32, CPU) of a whole split, in
    evaluation mode and without gradient; the loader has its own generator, so the global
    random state is untouched (a run's later draws do not depend on this pass)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for batch in batching.make_loader(dataset, batch_size=64, seed=0):
        batch = model_lib.batch_to(batch, run.dist.device)
        with run.autocast():
            encoded = model.encode(batch)
        for m, values in encoded.items():
            parts[m].append(values.float().cpu())
    model.train(was_training)
    return {m: torch.cat(values) for m, values in parts.items()}
