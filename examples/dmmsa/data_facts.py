"""What a loaded feature file holds (:class:`DataFacts`) and which file it is (:func:`file_digest`).

Split from :mod:`dmmsa.data` (which re-exports both): the configuration is resolved from these
facts, and a run's fingerprint names its data by resolved path and content digest.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dmmsa.data import MMSASplit

__all__ = ["DataFacts", "facts_of", "file_digest"]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex), read in 1 MiB chunks; computed once per version.

    A run's fingerprint names its data by this digest and the resolved path, so the same file
    named by a relative and an absolute path is the same data, and a file changed in place is
    not. Cached on (resolved path, size, modification time).
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _digest(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass(frozen=True)
class DataFacts:
    """What a feature file holds, for the one function that resolves the configuration.

    Attributes:
        feature_dims: ``{"T": d_t, "A": da, "V": dv}`` (``None`` for what the file lacks;
            ``"T"`` is ``None`` when the file has token ids only), as
            :attr:`MMSASplit.feature_dims`.
        modalities: the modalities present, in the order ``"T", "A", "V"``.
        unimodal_labels: the unimodal labels the file has (``("T", "A", "V")`` for CH-SIMS,
            ``()`` for MOSI and MOSEI).
        label_bound: the largest ``|y|`` of the multimodal labels over every split (``None``:
            not measured); CH-SIMS's lie in ``[-1, 1]``, MOSI's and MOSEI's in ``[-3, 3]``.
        clips: the number of clips over every split (0: not counted).
    """

    feature_dims: dict[str, int | None]
    modalities: tuple[str, ...]
    unimodal_labels: tuple[str, ...]
    label_bound: float | None = None
    clips: int = 0


def facts_of(splits: Mapping[str, MMSASplit]) -> DataFacts:
    """The :class:`DataFacts` of a loaded file (its splits agree: :func:`load_mmsa` checks it).

    Example:
        >>> import numpy as np
        >>> from dmmsa.data import MMSASplit
        >>> split = MMSASplit(ids=["v$_$0"], raw_text=["ok"], text=np.zeros((1, 4, 8), np.float32),
        ...                   text_bert=None, audio=None, vision=None, audio_lengths=None,
        ...                   vision_lengths=None, labels={"M": np.zeros(1, np.float32)})
        >>> facts_of({"train": split})
        DataFacts(feature_dims={'T': 8, 'A': None, 'V': None}, modalities=('T',), \
unimodal_labels=(), label_bound=0.0, clips=1)
    """
    train = splits["train"] if "train" in splits else next(iter(splits.values()))
    unimodal = tuple(m for m in ("T", "A", "V") if m in train.labels)
    bound = max((float(np.abs(split.labels["M"]).max()) for split in splits.values()
                 if len(split.labels["M"])), default=0.0)
    clips = sum(len(split.labels["M"]) for split in splits.values())
    return DataFacts(train.feature_dims, train.modalities, unimodal, bound, clips)

