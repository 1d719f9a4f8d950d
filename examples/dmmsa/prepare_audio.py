"""Frame-level audio features of :mod:`dmmsa.prepare`, computed with librosa, and their cache.

Each waveform is resampled to 16 kHz mono; 25 ms windows every 10 ms give 44 values per frame --

- 0-19: MFCC 1-20 (40 mel bands, 512-point FFT, ``librosa.feature.mfcc``; coefficient 0 included);
- 20-39: their deltas (``librosa.feature.delta``, width 9);
- 40: log energy, ``20 log10(max(RMS, 1e-5))`` in dB;
- 41: zero-crossing rate;
- 42: log2(F0 / 60 Hz), F0 by YIN (60-400 Hz, 64 ms frames), 0 on inactive frames;
- 43: activity, 1 where the energy is within 35 dB of the clip's loudest frame, else 0;

then averaged over blocks of 4 frames (40 ms, 25 frames per second). :func:`cap_frames` averages
longer clips into a given number of nearly equal segments. The per-clip features are cached in
an ``.npz``, keyed by clip id and checked against the audio file's path, size and modification
time and the feature settings, so that the folds of one dataset compute them once.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dmmsa.prepare_labels import PrepareError, few

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioFeatures",
    "CONTAINER_EXTENSIONS",
    "audio_features",
    "block_mean",
    "cap_frames",
    "compute_audio_features",
    "find_audio_files",
    "load_waveform",
]

CONTAINER_EXTENSIONS = (".mp4", ".mkv", ".avi", ".m4a")
"""Containers whose audio track is read (through PyAV), as in MMSA's raw ``Raw/`` folders."""
AUDIO_EXTENSIONS = (".flac", ".wav", *CONTAINER_EXTENSIONS)
"""The extensions tried for a clip's audio, in this order."""


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

    ``.flac``/``.wav`` are read with soundfile; the audio track of a container (``.mp4``,
    ``.mkv``, ``.avi``, ``.m4a``, as in MMSA's ``Raw/`` folders) is decoded with PyAV (``av``,
    which ships its own FFmpeg), then resampled the same way.

    Raises:
        PrepareError: unreadable or empty file, or a container without an audio stream.
    """
    import librosa

    path = Path(path)
    if path.suffix.lower() in CONTAINER_EXTENSIONS:
        data, rate = _decode_container(path)
    else:
        data, rate = _read_sound_file(path)
    if data.shape[0] == 0:
        raise PrepareError(f"audio: {str(path)!r} holds no samples")
    y = data.mean(axis=1)
    if rate != sample_rate:
        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    if not np.all(np.isfinite(y)):
        raise PrepareError(f"audio: {str(path)!r} holds NaN or infinite samples")
    return np.ascontiguousarray(y, dtype=np.float32)


def _read_sound_file(path: Path) -> tuple[np.ndarray, int]:
    """``[samples, channels]`` float32 and the rate of a ``.flac``/``.wav`` file."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises its own LibsndfileError / RuntimeError
        raise PrepareError(f"audio: cannot read {str(path)!r}: {err}") from None
    return data, int(rate)


def _decode_container(path: Path) -> tuple[np.ndarray, int]:
    """``[samples, channels]`` float32 and the rate of a container's first audio stream."""
    try:
        import av
    except ImportError:
        raise PrepareError(f"audio: reading {str(path)!r} needs PyAV (pip install av)") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise PrepareError(f"audio: {str(path)!r} has no audio stream (clip "
                                   f"{path.parent.name}/{path.stem}); give its audio as a "
                                   ".wav or .flac file instead")
            stream = container.streams.audio[0]
            planar = av.AudioResampler(format="fltp", layout=stream.layout.name,
                                       rate=stream.rate)
            chunks = [frame.to_ndarray() for decoded in container.decode(stream)
                      for frame in planar.resample(decoded)]
            chunks += [frame.to_ndarray() for frame in planar.resample(None)]
            rate = stream.rate
    except PrepareError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise PrepareError(f"audio: cannot decode {str(path)!r}: {err}") from None
    if not chunks:
        return np.zeros((0, 1), np.float32), int(rate)
    return np.concatenate(chunks, axis=1).T.astype(np.float32), int(rate)


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


def find_audio_files(folder: str | Path, ids: Sequence[str],
                     video_clip: Sequence[tuple[str, str]] | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """The audio file of every clip id, in either layout, detected per clip and reported.

    - flat: ``<folder>/<video_id>_<clip_id>.<ext>`` (the clip id);
    - nested, as MMSA's raw datasets (and MMSA-FET) keep them:
      ``<folder>/<video_id>/<clip_id>.<ext>`` (needs ``video_clip``).

    ``<ext>`` is tried in the order of :data:`AUDIO_EXTENSIONS`: ``.flac``, ``.wav``, then the
    containers ``.mp4``, ``.mkv``, ``.avi``, ``.m4a`` (their audio track).

    Args:
        folder: the audio folder (e.g. MMSA's ``Raw/``).
        ids: the clip ids, ``<video_id>_<clip_id>``.
        video_clip: ``(video_id, clip_id)`` of each id, for the nested layout.
        log: where the layout found is said.

    Raises:
        PrepareError: folder missing; files missing for some ids (a few are named); a clip
            that has a file in both layouts (one such clip is named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"audio_dir: expected an existing folder, got {str(folder)!r}")
    pairs = list(video_clip) if video_clip is not None else [(None, None)] * len(ids)
    found: dict[str, Path] = {}
    missing: list[str] = []
    layouts = {"flat": 0, "nested": 0}
    for clip_id, (video, clip) in zip(ids, pairs):
        flat = _first_file(folder, clip_id)
        nested = _first_file(folder / video, clip) if video and clip else None
        if flat is not None and nested is not None:
            raise PrepareError(f"audio_dir: {str(folder)!r} holds clip {clip_id!r} in both "
                               f"layouts ({flat.name} and {video}/{nested.name}); keep one")
        if flat is None and nested is None:
            missing.append(clip_id)
            continue
        found[clip_id] = flat or nested  # type: ignore[assignment]
        layouts["flat" if flat is not None else "nested"] += 1
    if missing:
        raise PrepareError(
            f"audio_dir: no audio file (<video_id>_<clip_id>.<ext> or "
            f"<video_id>/<clip_id>.<ext>, <ext> one of {', '.join(AUDIO_EXTENSIONS)}) in "
            f"{str(folder)!r} for {len(missing)} of {len(ids)} clips: {few(missing)}"
        )
    if log is not None:
        said = [f"{n} {name} (" + ("<video_id>_<clip_id>.<ext>" if name == "flat"
                                   else "<video_id>/<clip_id>.<ext>") + ")"
                for name, n in layouts.items() if n]
        log(f"  audio: {str(folder)!r} layout: {' and '.join(said)}")
    return found


def _first_file(folder: Path, stem: str) -> Path | None:
    """``folder/<stem><ext>`` for the first extension of :data:`AUDIO_EXTENSIONS` that exists."""
    for ext in AUDIO_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _file_signature(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _read_cache(path: Path, settings: str, log: Callable[[str], None] | None = None,
                ) -> dict[str, tuple[str, np.ndarray]]:
    """The cache's entries; ``{}`` (and a line in the log) for one that is unreadable,
    truncated or made with other settings: it is recomputed, never trusted."""
    if not path.is_file():
        return {}
    say = log or (lambda _message: None)
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["settings"]) != settings:
                say(f"  audio: cache {str(path)!r} was made with other settings; recomputing")
                return {}
            ids, sigs, lengths = z["ids"].tolist(), z["signatures"].tolist(), z["lengths"]
            frames = z["frames"]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if len(ids) != len(sigs) or len(ids) != len(lengths) or offsets[-1] != len(frames):
            raise ValueError("its index does not match its frames")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        say(f"  audio: cache {str(path)!r} is unreadable ({type(error).__name__}: {error}); "
            "recomputing")
        return {}
    return {i: (s, frames[offsets[k] : offsets[k + 1]]) for k, (i, s) in enumerate(zip(ids, sigs))}


def _write_cache(path: Path, settings: str, entries: Mapping[str, tuple[str, np.ndarray]]) -> None:
    ids = sorted(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    try:
        np.savez(
            tmp,
            settings=np.array(settings),
            ids=np.array(ids, dtype=str),
            signatures=np.array([entries[i][0] for i in ids], dtype=str),
            lengths=np.array([len(entries[i][1]) for i in ids], dtype=np.int64),
            frames=np.concatenate([entries[i][1] for i in ids], axis=0).astype(np.float32),
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    entries = _read_cache(Path(cache), settings, log) if cache is not None else {}
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
