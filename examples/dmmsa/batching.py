"""The samples of a loaded MMSA split as tensors, and the loader that batches them.

:class:`MSADataset` serves one :class:`~dmmsa.data.MMSASplit` (from :func:`dmmsa.data.load_mmsa`)
as dicts of tensors that PyTorch's default collate batches; :func:`make_loader` is the one
``DataLoader`` factory of the reference system (training, evaluation and the tests use it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dmmsa.checks import is_int
from dmmsa.data import MMSASplit

__all__ = ["MSADataset", "make_loader"]


class MSADataset(Dataset):
    """The samples of one split as dicts of tensors (no copy of the split's arrays).

    Each item is::

        {"text_bert": [3, L] int64  or  "text": [L, d_t] float32,
         "text_lengths": () int64      (only "text" items of a split that has "text_bert"),
         "audio": [La, da] float32, "audio_lengths": () int64,      (only with audio)
         "vision": [Lv, dv] float32, "vision_lengths": () int64,    (only with vision)
         "labels": {"M": () float32, and "T", "A", "V" when the split has them},
         "index": () int64}

    so :class:`torch.utils.data.DataLoader`'s default collate stacks a batch (``[B, ...]``).
    Aligned files have no lengths: every step counts, so the lengths are the sequence length.
    A modality the split lacks (:attr:`MMSASplit.modalities`) has no keys in the items.
    ``"text_lengths"`` (valid token positions, from ``text_bert``'s attention mask: one past the
    last position with mask 1, at most ``L``) lets a text-feature encoder ignore padding.
    The item tensors share memory with the split's arrays: do not modify them in place.

    Args:
        split: a split from :func:`load_mmsa`.
        text_source: ``"bert"`` (token ids for a BERT encoder), ``"features"`` (precomputed
            token features) or ``"auto"`` (``"bert"`` when the split has ``text_bert``).

    Attributes:
        modalities: the split's modalities (``("T",)`` for a text-only file).

    Example:
        >>> import numpy as np
        >>> split = MMSASplit(ids=["v$_$0"], raw_text=["ok"], text=None,
        ...                   text_bert=np.ones((1, 3, 4), np.int64),
        ...                   audio=np.zeros((1, 6, 5), np.float32),
        ...                   vision=np.zeros((1, 2, 3), np.float32), audio_lengths=None,
        ...                   vision_lengths=None, labels={"M": np.array([0.5], np.float32)})
        >>> item = MSADataset(split)[0]
        >>> sorted(item)
        ['audio', 'audio_lengths', 'index', 'labels', 'text_bert', 'vision', 'vision_lengths']
        >>> item["text_bert"].shape, int(item["audio_lengths"])
        (torch.Size([3, 4]), 6)
        >>> text_only = MMSASplit(ids=["v$_$0"], raw_text=["ok"],
        ...                       text=np.zeros((1, 4, 8), np.float32),
        ...                       text_bert=np.array([[[7, 8, 0, 0], [1, 1, 0, 0], [0] * 4]]),
        ...                       audio=None, vision=None, audio_lengths=None,
        ...                       vision_lengths=None, labels={"M": np.array([0.5], np.float32)})
        >>> item = MSADataset(text_only, text_source="features")[0]
        >>> sorted(item), int(item["text_lengths"]), text_only.modalities
        (['index', 'labels', 'text', 'text_lengths'], 2, ('T',))
    """

    def __init__(self, split: MMSASplit, text_source: str = "auto") -> None:
        if text_source not in ("auto", "bert", "features"):
            raise ValueError(
                f"text_source must be one of 'auto' | 'bert' | 'features', got {text_source!r}"
            )
        if text_source == "auto":
            text_source = "bert" if split.text_bert is not None else "features"
        array = split.text_bert if text_source == "bert" else split.text
        if array is None:
            key = "text_bert" if text_source == "bert" else "text"
            raise ValueError(
                f"text_source={text_source!r} needs key {key!r}, which split {split.name!r} "
                "does not have"
            )
        self.split = split
        self.text_source = text_source
        self.text_key = "text_bert" if text_source == "bert" else "text"
        self.modalities = split.modalities
        self.text = torch.from_numpy(array)
        self.text_lengths = None
        if text_source == "features" and split.text_bert is not None:
            self.text_lengths = self._mask_lengths(split.text_bert[:, 1], array.shape[1])
        n = len(split)
        self.audio = self.vision = self.audio_lengths = self.vision_lengths = None
        if split.audio is not None:
            self.audio = torch.from_numpy(split.audio)
            self.audio_lengths = self._lengths(split.audio_lengths, n, split.audio.shape[1])
        if split.vision is not None:
            self.vision = torch.from_numpy(split.vision)
            self.vision_lengths = self._lengths(split.vision_lengths, n, split.vision.shape[1])
        self.labels = {name: torch.from_numpy(values) for name, values in split.labels.items()}

    @staticmethod
    def _lengths(lengths: np.ndarray | None, n: int, steps: int) -> torch.Tensor:
        if lengths is None:
            return torch.full((n,), steps, dtype=torch.int64)
        return torch.from_numpy(lengths)

    @staticmethod
    def _mask_lengths(mask: np.ndarray, steps: int) -> torch.Tensor:
        """One past the last position with mask 1 (= the mask's sum for right-padded tokens)."""
        last = mask.shape[1] - np.argmax(mask[:, ::-1] != 0, axis=1)
        lengths = np.where(mask.any(axis=1), last, 0)
        return torch.from_numpy(np.minimum(lengths, steps).astype(np.int64))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index %= len(self)
        item: dict[str, Any] = {self.text_key: self.text[index]}
        if self.text_lengths is not None:
            item["text_lengths"] = self.text_lengths[index]
        if self.audio is not None:
            item["audio"] = self.audio[index]
            item["audio_lengths"] = self.audio_lengths[index]
        if self.vision is not None:
            item["vision"] = self.vision[index]
            item["vision_lengths"] = self.vision_lengths[index]
        item["labels"] = {name: values[index] for name, values in self.labels.items()}
        item["index"] = torch.tensor(index, dtype=torch.int64)
        return item


def make_loader(
    data: Dataset | MMSASplit,
    *,
    batch_size: int,
    shuffle: bool = False,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
    seed: int | None = None,
    text_source: str = "auto",
    pin_memory: bool = False,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` over a split with the default collate.

    Args:
        data: an :class:`MSADataset`, or an :class:`MMSASplit` wrapped with ``text_source``.
        batch_size: samples per batch (> 0).
        shuffle: reshuffle every epoch (not with ``sampler``).
        sampler: e.g. a :class:`~torch.utils.data.distributed.DistributedSampler` (call its
            ``set_epoch`` each epoch).
        drop_last: drop the last incomplete batch.
        num_workers: loader worker processes.
        seed: seed of the shuffling generator, for reproducible order (``None``: torch's global
            generator).
        text_source: used when ``data`` is an :class:`MMSASplit`.
        pin_memory: pin batches for faster host-to-GPU copies.

    Returns:
        The loader; each batch is a dict as in :class:`MSADataset` with a leading ``[B]``.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int > 0, got {batch_size!r}")
    if sampler is not None and shuffle:
        raise ValueError("shuffle=True cannot be combined with a sampler (the sampler orders "
                         "the samples); pass shuffle=False")
    dataset = data if isinstance(data, Dataset) else MSADataset(data, text_source)
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
