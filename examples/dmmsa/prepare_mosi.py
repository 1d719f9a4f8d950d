"""The former name of :mod:`dmmsa.prepare`, kept working: the same flags and the same outputs.

``python examples/dmmsa/prepare_mosi.py ...`` runs ``python -m dmmsa.prepare ...`` with one
difference kept from before: ``--max-text-len`` defaults to 50 (MOSI's length in MMSA) instead of
``auto``. :func:`prepare_mosi` takes the keyword arguments it always took. New code: use
:func:`dmmsa.prepare.prepare` and :class:`dmmsa.prepare.PrepareOptions`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dmmsa import prepare as _prepare
from dmmsa.prepare_audio import (
    AudioFeatures,
    audio_features,
    block_mean,
    cap_frames,
    compute_audio_features,
    find_audio_files,
    load_waveform,
)
from dmmsa.prepare_labels import Clip, grouped_kfold_split, official_split, read_labels
from dmmsa.prepare_steps import (
    PrepareError,
    PrepareOptions,
    SplitOptions,
    pad_sequences,
    read_visual,
)

__all__ = [
    "AudioFeatures",
    "Clip",
    "PrepareError",
    "audio_features",
    "block_mean",
    "cap_frames",
    "compute_audio_features",
    "find_audio_files",
    "grouped_kfold_split",
    "load_waveform",
    "main",
    "official_split",
    "pad_sequences",
    "prepare_mosi",
    "read_labels",
    "read_visual",
]

MOSI_TEXT_LEN = 50


def prepare_mosi(
    labels: str | Path,
    out: str | Path,
    *,
    split: str = "official",
    folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    valid_videos: int = 2,
    max_text_len: int | str = MOSI_TEXT_LEN,
    log: Callable[[str], None] | None = print,
    **options: object,
) -> dict:
    """:func:`dmmsa.prepare.prepare` with the keyword arguments of the former function.

    Args:
        labels, out, log: as :func:`dmmsa.prepare.prepare`.
        split, folds, fold, seed, valid_videos: the fields of :class:`SplitOptions`.
        max_text_len: L of ``text_bert``/``text`` (default 50).
        **options: the other fields of :class:`PrepareOptions` (``audio_dir``, ``visual``, ...).
    """
    split_options = SplitOptions(split, folds, fold, seed, valid_videos)
    settings = PrepareOptions(split=split_options, max_text_len=max_text_len, **options)
    return _prepare.prepare(labels, out, settings, log)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (2 with a message on bad input)."""
    return _prepare.main(argv, text_len_default=MOSI_TEXT_LEN, prog="prepare_mosi")


if __name__ == "__main__":
    sys.exit(main())
