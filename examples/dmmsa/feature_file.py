"""An MMSA feature file as loaded: its splits (:class:`MMSASplit`), what it holds
(:class:`DataFacts`, :func:`facts_of`) and which file it is (:func:`file_digest`).

:mod:`dmmsa.data` reads and checks the file into these (and re-exports them); the configuration
is resolved from the facts, and a run's fingerprint names its data by resolved path and content
digest.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DataFacts", "MMSASplit", "facts_of", "file_digest"]


@dataclass
class MMSASplit:
    """One split of an MMSA feature file, checked and cleaned.

    Attributes:
        ids: ``N`` sample ids, ``"video$_$clip"``.
        raw_text: ``N`` transcripts.
        text: token features ``[N, L, d_t]`` float32, or ``None`` when the file has none.
        text_bert: ``[N, 3, L]`` int64 (input ids, attention mask, segment ids), or ``None``.
        audio: ``[N, La, da]`` float32, or ``None`` when the file has no audio.
        vision: ``[N, Lv, dv]`` float32, or ``None`` when the file has no vision.
        audio_lengths: valid steps of each audio sequence ``[N]`` int64 (unaligned files), or
            ``None`` (aligned files: every step counts; or no audio).
        vision_lengths: as ``audio_lengths`` for vision.
        labels: ``{"M": [N]}`` float32, plus ``"T"``, ``"A"``, ``"V"`` when the file has
            unimodal labels (CH-SIMS).
        name: the split's name, used in messages.
    """

    ids: list[str]
    raw_text: list[str]
    text: np.ndarray | None
    text_bert: np.ndarray | None
    audio: np.ndarray | None
    vision: np.ndarray | None
    audio_lengths: np.ndarray | None
    vision_lengths: np.ndarray | None
    labels: dict[str, np.ndarray]
    name: str = "split"

    def __len__(self) -> int:
        return len(self.labels["M"])

    @property
    def aligned(self) -> bool:
        """``True`` when the file gives no ``*_lengths`` (word-aligned features, or text only)."""
        return self.audio_lengths is None and self.vision_lengths is None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities present, in the order ``"T", "A", "V"`` (text is always present)."""
        present = {"T": True, "A": self.audio is not None, "V": self.vision is not None}
        return tuple(m for m, here in present.items() if here)

    @property
    def feature_dims(self) -> dict[str, int | None]:
        """Feature sizes ``{"T": d_t, "A": da, "V": dv}``, ``None`` for what the file lacks.

        ``"T"`` is ``None`` when the file has only ``text_bert`` (token ids, no features); ``"A"``
        or ``"V"`` is ``None`` when the modality is absent (see :attr:`modalities`).
        """

        def width(array: np.ndarray | None) -> int | None:
            return None if array is None else int(array.shape[2])

        return {"T": width(self.text), "A": width(self.audio), "V": width(self.vision)}


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
        text_keys: the text keys the file holds, of ``("text", "text_bert")``: token features,
            token ids (default: both, i.e. not measured).
        text_length: ``L``, the tokens per clip of ``text_bert`` (``None``: none, or not
            measured).
    """

    feature_dims: dict[str, int | None]
    modalities: tuple[str, ...]
    unimodal_labels: tuple[str, ...]
    label_bound: float | None = None
    clips: int = 0
    text_keys: tuple[str, ...] = ("text", "text_bert")
    text_length: int | None = None


def facts_of(splits: Mapping[str, MMSASplit]) -> DataFacts:
    """The :class:`DataFacts` of a loaded file (its splits agree: :func:`load_mmsa` checks it).

    Example:
        >>> import numpy as np
        >>> split = MMSASplit(ids=["v$_$0"], raw_text=["ok"], text=np.zeros((1, 4, 8), np.float32),
        ...                   text_bert=None, audio=None, vision=None, audio_lengths=None,
        ...                   vision_lengths=None, labels={"M": np.zeros(1, np.float32)})
        >>> facts_of({"train": split})
        DataFacts(feature_dims={'T': 8, 'A': None, 'V': None}, modalities=('T',), \
unimodal_labels=(), label_bound=0.0, clips=1, text_keys=('text',), text_length=None)
    """
    train = splits["train"] if "train" in splits else next(iter(splits.values()))
    unimodal = tuple(m for m in ("T", "A", "V") if m in train.labels)
    bound = max((float(np.abs(split.labels["M"]).max()) for split in splits.values()
                 if len(split.labels["M"])), default=0.0)
    clips = sum(len(split.labels["M"]) for split in splits.values())
    text_keys = tuple(key for key, array in (("text", train.text), ("text_bert", train.text_bert))
                      if array is not None)
    length = int(train.text_bert.shape[2]) if train.text_bert is not None else None
    return DataFacts(train.feature_dims, train.modalities, unimodal, bound, clips, text_keys,
                     length)

