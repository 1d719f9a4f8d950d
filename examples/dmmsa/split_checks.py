"""The checks of one key of an MMSA split (shape, dtype, finiteness, ranges), and the errors.

:func:`dmmsa.data.load_mmsa` runs them on every key it reads; each raises (or returns) an
:class:`MMSADataError` whose message starts with ``where`` (the file and split) and names the key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CLEAN_CHUNK", "MMSADataError", "MMSADataWarning", "check_rank", "clean_features",
           "fail", "label_array", "length_array", "listing", "numeric", "string_list",
           "token_ids"]

CLEAN_CHUNK = 1 << 22  # elements per block when cleaning, bounds the temporary masks


class MMSADataError(ValueError):
    """A feature file that cannot be used: the message names the file, split, key and problem."""


class MMSADataWarning(UserWarning):
    """Feature values that were replaced while loading (non-finite or huge), or clip ids that
    two splits share (a leak between training and evaluation data)."""



def fail(where: str, message: str) -> MMSADataError:
    return MMSADataError(f"{where}: {message}")


def listing(keys: Sequence[object]) -> str:
    return ", ".join(repr(k) for k in keys) if keys else "nothing"


def numeric(where: str, key: str, value: object, dtype: type) -> np.ndarray:
    """``value`` as a C-contiguous, writable array of ``dtype`` (no copy when it already is)."""
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype}")
        array = np.ascontiguousarray(array, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise fail(
            where, f"key {key!r} must be a numeric array, got {type(value).__name__} ({error})"
        ) from None
    if not array.flags.writeable:
        array = array.copy()
    return array


def string_list(where: str, key: str, value: object) -> list[str]:
    array = np.asarray(value, dtype=object)
    if array.ndim != 1:
        raise fail(where, f"key {key!r} must be 1-D [N], got shape {array.shape}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist()]


def check_rank(where: str, key: str, array: np.ndarray, symbols: str) -> None:
    rank = len(symbols.split(","))
    if array.ndim != rank:
        raise fail(
            where, f"key {key!r} must have {rank} dimension(s) [{symbols}], got shape {array.shape}"
        )


def label_array(
    where: str, key: str, value: object, label_range: tuple[float, float] | None
) -> np.ndarray:
    if np.asarray(value).dtype.kind == "b":  # 0/1 would pass as sentiment scores
        raise fail(where, f"key {key!r} holds booleans; labels must be real-valued sentiment "
                           "scores (msa_metrics refuses bool labels as well)")
    labels = numeric(where, key, value, np.float32)
    if labels.ndim == 2 and labels.shape[1] == 1:  # some files store [N, 1]
        labels = labels[:, 0].copy()
    check_rank(where, key, labels, "N")
    finite = np.isfinite(labels)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        nan = int(np.isnan(labels).sum())
        raise fail(
            where,
            f"key {key!r} holds {bad.size} non-finite label(s) ({nan} NaN, {bad.size - nan} inf), "
            f"first at index {bad[0]}; labels must be finite",
        )
    if label_range is not None:
        low, high = label_range
        tol = 1e-5 * max(1.0, abs(low), abs(high))  # float32 rounding of grid values
        outside = np.flatnonzero((labels < low - tol) | (labels > high + tol))
        if outside.size:
            raise fail(
                where,
                f"key {key!r} holds {outside.size} label(s) outside label_range [{low:g}, {high:g}]"
                f" (min {labels.min():g}, max {labels.max():g}; first at index {outside[0]}: "
                f"{labels[outside[0]]:g})",
            )
    return labels


def length_array(where: str, key: str, value: object, steps: int) -> np.ndarray:
    lengths = np.asarray(value)
    if lengths.dtype.kind == "f":
        if not (np.isfinite(lengths).all() and (lengths == np.round(lengths)).all()):
            raise fail(where, f"key {key!r} must hold whole numbers of steps")
    lengths = numeric(where, key, lengths, np.int64)
    check_rank(where, key, lengths, "N")
    outside = np.flatnonzero((lengths < 0) | (lengths > steps))
    if outside.size:
        raise fail(
            where,
            f"key {key!r} holds {outside.size} length(s) outside [0, {steps}] (the sequences have "
            f"{steps} steps); first at index {outside[0]}: {lengths[outside[0]]}",
        )
    return lengths


def token_ids(where: str, value: object) -> np.ndarray:
    raw = np.asarray(value)
    if raw.dtype.kind == "f":
        if not (np.isfinite(raw).all() and (raw == np.round(raw)).all()):
            raise fail(where, "key 'text_bert' must hold whole numbers (token ids and masks)")
    ids = numeric(where, "text_bert", raw, np.int64)
    check_rank(where, "text_bert", ids, "N, 3, L")
    if ids.shape[1] != 3:
        raise fail(
            where,
            "key 'text_bert' must have shape [N, 3, L] (input ids, attention mask, segment ids), "
            f"got shape {ids.shape}",
        )
    if (ids < 0).any():
        raise fail(where, "key 'text_bert' holds negative token ids")
    if ((ids[:, 1] != 0) & (ids[:, 1] != 1)).any():
        raise fail(where, "key 'text_bert' attention mask (row 1) must hold only 0 and 1")
    return ids


def clean_features(features: np.ndarray, max_abs: float) -> dict[str, int]:
    """Replace NaN, +-inf and values with ``|x| > max_abs`` by 0 in place; count each kind."""
    counts = {"-inf": 0, "+inf": 0, "NaN": 0, "huge": 0}
    flat = features.reshape(-1)  # a view: ``features`` is C-contiguous
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, flat.size, CLEAN_CHUNK):
            block = flat[start : start + CLEAN_CHUNK]
            bad = ~np.isfinite(block)
            bad |= np.abs(block) > max_abs
            if not bad.any():
                continue
            values = block[bad]
            counts["-inf"] += int(np.isneginf(values).sum())
            counts["+inf"] += int(np.isposinf(values).sum())
            counts["NaN"] += int(np.isnan(values).sum())
            counts["huge"] += int(np.isfinite(values).sum())
            block[bad] = 0.0
    return counts
