"""The outputs of :func:`dmmsa.prepare.prepare`: checked before any work (never an input, never
a folder), written atomically (never half-written, no temporary file left behind).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from dmmsa.prepare_labels import PrepareError

__all__ = ["cache_path", "check_outputs", "write_pickle", "write_text_atomically"]


def write_pickle(data: dict, out: Path) -> None:
    """Step 5: write ``data`` to ``out`` atomically (pickle protocol 5: arrays are written from
    their memory, not copied first); a failed write leaves no temporary file behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            pickle.dump(data, f, protocol=5)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: never half-written."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_path(audio_dir: str | Path | None, audio_cache: str | Path | None,
               out: Path) -> Path | None:
    """The audio feature cache: ``audio_features_cache.npz`` beside ``out`` for ``"auto"``."""
    if audio_dir is None or audio_cache is None:
        return None
    return out.parent / "audio_features_cache.npz" if audio_cache == "auto" \
        else Path(audio_cache)


def check_outputs(labels: str | Path, out: Path, options: Any) -> None:
    """Refuse, before any work, outputs that would replace an input or cannot be written.

    The outputs are ``out`` and its summary ``<out>.json`` (and the audio cache, which is both);
    an input is the label file, the visual file, and any file of the audio or encoder folder
    (``options``: the :class:`~dmmsa.prepare_steps.PrepareOptions`).
    """
    if out.is_dir():
        raise PrepareError(f"out: {str(out)!r} is a directory; expected the path of the pickle "
                           "to write")
    if out.parent.exists() and not out.parent.is_dir():
        raise PrepareError(f"out: {str(out)!r} lies in {str(out.parent)!r}, which is a file")
    cache = cache_path(options.audio_dir, options.audio_cache, out)
    if cache is not None and cache.is_dir():
        raise PrepareError(f"audio_cache: {str(cache)!r} is a directory; expected the path of "
                           "an .npz file (or 'auto', or 'none')")
    named = {"labels": labels, "visual": options.visual,
             "audio_cache": cache_path(options.audio_dir, options.audio_cache, out)}
    folders = {"audio_dir": options.audio_dir, "text_encoder": options.text_encoder}
    for target in (out, out.with_name(out.name + ".json")):
        for name, path in named.items():
            if path is not None and _same_file(target, Path(path)):
                raise PrepareError(f"out: {str(target)!r} is the --{name.replace('_', '-')} "
                                   "file; writing it would replace that input. Choose another "
                                   "--out")
        for name, folder in folders.items():
            if folder is not None and target.exists() and _inside(target, Path(folder)):
                raise PrepareError(f"out: {str(target)!r} is a file of the "
                                   f"--{name.replace('_', '-')} folder; choose another --out")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())
