"""Reading MMSA's feature pickles (CH-SIMS, CMU-MOSI, CMU-MOSEI and the synthetic default).

An MMSA feature file is a pickled ``{"train"|"valid"|"test": split}`` where each split is a dict
of per-sample arrays (the MMSA toolkit's format, in which the datasets of the paper's section 4.1
are distributed):

=========================== ============================ =================================
key                         shape, type                  notes
=========================== ============================ =================================
``id``                      ``[N]`` str                  ``"video$_$clip"``
``raw_text``                ``[N]`` str                  the transcript
``text``                    ``[N, L, d_t]`` float        BERT token features (optional)
``text_bert``               ``[N, 3, L]`` int or float   ids, attention mask, segment ids
                                                         (optional; one of the two text keys
                                                         is required)
``audio``                   ``[N, La, da]`` float        MOSI 5, MOSEI 74, SIMS 33 features
                                                         (optional, see below)
``vision``                  ``[N, Lv, dv]`` float        MOSI 20, MOSEI 35, SIMS 709
                                                         (optional, see below)
``audio_lengths``           ``[N]`` int                  unaligned files only
``vision_lengths``          ``[N]`` int                  unaligned files only
``regression_labels``       ``[N]`` float                the multimodal label ``M``
``regression_labels_T/A/V`` ``[N]`` float                CH-SIMS's unimodal labels
=========================== ============================ =================================

Other keys (``classification_labels``, ``annotations``, ...) are ignored, as MMSA ignores them.

Audio and vision are optional modalities: a file without ``audio`` (and ``audio_lengths``) or
without ``vision`` (and ``vision_lengths``), e.g. a text-only file written by ``prepare_mosi.py``,
loads with ``None`` for them (:attr:`MMSASplit.modalities` lists the present ones). Every split
must hold the same modalities; one of ``text``/``text_bert`` is always required.

:func:`load_mmsa` reads the file as MMSA's ``MMDataset`` does (same keys, ``regression_labels``
as ``M`` and ``regression_labels_T/A/V`` as ``T/A/V``) but checks it first and raises an
:class:`MMSADataError` that names the file, the split, the key and what is wrong. Non-finite or
huge feature values (MOSEI's audio holds ``-inf``; MMSA zeroes the ``-inf`` silently) are
replaced with 0 and counted in one :class:`MMSADataWarning` per split and modality.
:class:`dmmsa.dataset.MSADataset` serves the samples as dicts of tensors that PyTorch's default
collate batches.

The file is read with :func:`mtobjectives.io.load_pickle_safely`, a restricted unpickler that
admits only dicts, lists, tuples, strings, numbers and NumPy arrays and dtypes: a feature file
from a mirror cannot run code while it loads (a pickle that refers to anything else, e.g.
``os.system``, is refused with an :class:`MMSADataError` naming that global), and a corrupt file
fails with an :class:`MMSADataError` naming it instead of filling the memory.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmmsa.checks import is_real
from dmmsa.feature_file import DataFacts, MMSASplit, facts_of, file_digest
from dmmsa.split_checks import (
    MMSADataError,
    MMSADataWarning,
    check_rank,
    clean_features,
    fail,
    label_array,
    length_array,
    listing,
    numeric,
    string_list,
    token_ids,
)
from mtobjectives.io import PickleLoadError, load_pickle_safely

__all__ = [
    "LABEL_RANGES",
    "SPLITS",
    "DataFacts",
    "MMSADataError",
    "MMSADataWarning",
    "MMSASplit",
    "facts_of",
    "file_digest",
    "load_mmsa",
    "parse_mmsa",
]

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""The split names of an MMSA feature file."""

LABEL_RANGES: dict[str, tuple[float, float]] = {
    "sims": (-1.0, 1.0),
    "mosi": (-3.0, 3.0),
    "mosei": (-3.0, 3.0),
}
"""The label range of each paper dataset (accepted by ``label_range`` by name)."""

_MODALITY_LABELS = {"T": "regression_labels_T", "A": "regression_labels_A",
                    "V": "regression_labels_V"}
_SPLIT_ALIASES = {"dev": "valid", "val": "valid", "validation": "valid", "eval": "test"}


def _check_keys(where: str, raw: object) -> None:
    """The split is a dict holding the keys every MMSA split needs (and no lone lengths)."""
    if not isinstance(raw, Mapping):
        raise fail(where, f"must be a dict of arrays, got {type(raw).__name__}")
    required = ["id", "raw_text", "regression_labels"]
    missing = [repr(key) for key in required if key not in raw]
    if "text" not in raw and "text_bert" not in raw:
        missing.append("'text' or 'text_bert'")
    for key in ("audio", "vision"):  # optional modalities, but not lengths without features
        if f"{key}_lengths" in raw and key not in raw:
            missing.append(f"{key!r} (the split has {key + '_lengths'!r}; a modality without "
                           "features must have neither key)")
    if missing:
        raise fail(
            where, f"missing key(s) {', '.join(missing)}; the split has {listing(list(raw))}"
        )


def _check_sizes(where: str, n: int, sizes: Mapping[str, int]) -> None:
    """Every key holds ``n`` entries (the labels' count), and ``n > 0``."""
    for key, size in sizes.items():
        if size != n:
            raise fail(
                where,
                f"key {key!r} has {size} samples but key 'regression_labels' has {n}; "
                "every key must hold one entry per sample",
            )
    if n == 0:
        raise fail(where, "has no samples")


def _clean_all(where: str, features: Mapping[str, np.ndarray], max_abs: float) -> list[str]:
    """Zero the non-finite and huge feature values in place; one message per cleaned key."""
    messages = []
    for key, array in features.items():
        counts = clean_features(array, max_abs)
        total = sum(counts.values())
        if total:
            detail = ", ".join(f"{counts[k]} {k}" for k in ("-inf", "+inf", "NaN"))
            messages.append(
                f"{where}: replaced {total} value(s) of {key!r} with 0 ({detail}, "
                f"{counts['huge']} with |x| > {max_abs:g})"
            )
    return messages


def _parse_split(
    source: str,
    name: str,
    raw: object,
    label_range: tuple[float, float] | None,
    max_abs: float,
) -> tuple[MMSASplit, list[str]]:
    where = f"{source}, split {name!r}"
    _check_keys(where, raw)
    labels = {"M": label_array(where, "regression_labels", raw["regression_labels"], label_range)}
    for modality, key in _MODALITY_LABELS.items():
        if key in raw:
            labels[modality] = label_array(where, key, raw[key], label_range)
    features: dict[str, np.ndarray] = {}
    for key, symbols in (("text", "N, L, d_t"), ("audio", "N, La, da"), ("vision", "N, Lv, dv")):
        if key in raw:
            features[key] = numeric(where, key, raw[key], np.float32)
            check_rank(where, key, features[key], symbols)
    text_bert = token_ids(where, raw["text_bert"]) if "text_bert" in raw else None
    ids = string_list(where, "id", raw["id"])
    raw_text = string_list(where, "raw_text", raw["raw_text"])
    lengths = {
        key: length_array(where, key, raw[key], features[key.split("_")[0]].shape[1])
        for key in ("audio_lengths", "vision_lengths")
        if key in raw
    }

    sizes: dict[str, int] = {"id": len(ids), "raw_text": len(raw_text)}
    sizes.update({key: len(array) for key, array in features.items()})
    sizes.update({_MODALITY_LABELS[m]: len(v) for m, v in labels.items() if m != "M"})
    sizes.update({key: len(array) for key, array in lengths.items()})
    if text_bert is not None:
        sizes["text_bert"] = len(text_bert)
    _check_sizes(where, len(labels["M"]), sizes)
    messages = _clean_all(where, features, max_abs)
    split = MMSASplit(
        ids=ids,
        raw_text=raw_text,
        text=features.get("text"),
        text_bert=text_bert,
        audio=features.get("audio"),
        vision=features.get("vision"),
        audio_lengths=lengths.get("audio_lengths"),
        vision_lengths=lengths.get("vision_lengths"),
        labels=labels,
        name=name,
    )
    return split, messages


def _resolve_range(
    label_range: float | tuple[float, float] | str | None,
) -> tuple[float, float] | None:
    if label_range is None:
        return None
    if isinstance(label_range, str):
        if label_range not in LABEL_RANGES:
            options = " | ".join(repr(k) for k in LABEL_RANGES)
            raise ValueError(f"label_range must be a number, a pair or one of {options}, "
                             f"got {label_range!r}")
        return LABEL_RANGES[label_range]
    if is_real(label_range):  # NumPy scalars included
        if not (math.isfinite(label_range) and label_range > 0):
            raise ValueError(f"label_range must be a finite number > 0, got {label_range!r}")
        return (-float(label_range), float(label_range))
    try:
        low, high = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"label_range must be a number R (for [-R, R]), a pair (low, high) or a dataset "
            f"name, got {label_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"label_range must be finite with low < high, got {label_range!r}")
    return (low, high)


def _check_options(
    label_range: float | tuple[float, float] | str | None,
    max_abs: float,
    splits: str | Sequence[str],
) -> tuple[tuple[float, float] | None, tuple[str, ...]]:
    """The checked ``label_range`` bounds and split names (a single name is one split)."""
    bounds = _resolve_range(label_range)
    if not is_real(max_abs) or not max_abs > 0:
        raise ValueError(f"max_abs must be a number > 0 (math.inf keeps all finite values), "
                         f"got {max_abs!r}")
    names = (splits,) if isinstance(splits, str) else splits
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"splits must be a split name or a sequence of split names (str), "
                        f"got {splits!r}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"splits must name at least one split, each once, got {splits!r}")
    return bounds, tuple(names)


def _check_leaks(source: str, splits: Mapping[str, MMSASplit]) -> list[str]:
    """A message for each pair of splits that share clip ids (the same clips in both: a leak)."""
    messages = []
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = set(splits[first].ids) & set(splits[second].ids)
            if shared:
                messages.append(
                    f"{source}: splits {first!r} and {second!r} share {len(shared)} clip id(s) "
                    f"(e.g. {min(shared)!r}): a leak, the same clips are in both, so scores on "
                    f"{second!r} overstate how the model does on unseen clips"
                )
    return messages


def _parse(
    data: object,
    source: str,
    label_range: float | tuple[float, float] | str | None,
    max_abs: float,
    splits: str | Sequence[str],
) -> tuple[dict[str, MMSASplit], list[str]]:
    bounds, splits = _check_options(label_range, max_abs, splits)
    if not isinstance(data, Mapping):
        raise MMSADataError(
            f"{source}: must hold a dict of splits {listing(list(splits))}, "
            f"got {type(data).__name__}"
        )
    found = list(data.keys())
    for name in splits:
        if name not in data:
            hint = "".join(
                f"; rename {alias!r} to {target!r}"
                for alias, target in _SPLIT_ALIASES.items()
                if alias in data and target == name
            )
            raise MMSADataError(
                f"{source}: missing split {name!r}; the file has {listing(found)} "
                f"(MMSA files name the splits {listing(list(SPLITS))}){hint}"
            )
    result: dict[str, MMSASplit] = {}
    messages: list[str] = []
    for name in splits:
        result[name], notes = _parse_split(source, name, data[name], bounds, float(max_abs))
        messages += notes
    _check_consistent(source, result)
    return result, messages + _check_leaks(source, result)


def _check_consistent(source: str, splits: Mapping[str, MMSASplit]) -> None:
    """Every split must have the same keys, modalities and feature sizes (one model serves all)."""
    first_name, first = next(iter(splits.items()))
    for name, split in splits.items():
        for key in ("text", "text_bert", "audio", "vision"):
            if (getattr(split, key) is None) != (getattr(first, key) is None):
                have, lack = (name, first_name) if getattr(split, key) is not None else (
                    first_name, name)
                if key in ("audio", "vision"):
                    raise MMSADataError(
                        f"{source}: split {lack!r} is missing key(s) {key!r}, which split "
                        f"{have!r} has; every split must hold the same modalities (split "
                        f"{have!r}: {listing(splits[have].modalities)}, split {lack!r}: "
                        f"{listing(splits[lack].modalities)})"
                    )
                raise MMSADataError(
                    f"{source}: split {have!r} has key {key!r} but split {lack!r} has not"
                )
        for key in ("text", "audio", "vision"):
            a, b = getattr(first, key), getattr(split, key)
            if a is not None and b is not None and a.shape[2] != b.shape[2]:
                raise MMSADataError(
                    f"{source}: key {key!r} has {a.shape[2]} features in split {first_name!r} "
                    f"but {b.shape[2]} in split {name!r}"
                )


def parse_mmsa(
    data: Mapping[str, Any],
    *,
    label_range: float | tuple[float, float] | str | None = None,
    max_abs: float = 1e4,
    splits: str | Sequence[str] = SPLITS,
    source: str = "<data>",
) -> dict[str, MMSASplit]:
    """Check and clean an in-memory MMSA dict (what :func:`load_mmsa` does after unpickling).

    The float arrays are converted to float32 without copying when they already are, and cleaned
    in place: ``data``'s own arrays may change.

    Args:
        data: ``{"train"|"valid"|"test": {key: array}}``.
        label_range: see :func:`load_mmsa`.
        max_abs: see :func:`load_mmsa`.
        splits: see :func:`load_mmsa`.
        source: how messages name the data.

    Returns:
        ``{split name: MMSASplit}``.

    Raises:
        MMSADataError: the data is unusable (the message says why).
    """
    result, messages = _parse(data, source, label_range, max_abs, splits)
    for message in messages:
        warnings.warn(message, MMSADataWarning, stacklevel=2)
    return result


def load_mmsa(
    path: str | Path,
    *,
    label_range: float | tuple[float, float] | str | None = None,
    max_abs: float = 1e4,
    splits: str | Sequence[str] = SPLITS,
) -> dict[str, MMSASplit]:
    """Load an MMSA feature pickle, check it and clean its features.

    Checks, each an :class:`MMSADataError` naming the file, split and key: the path is a
    readable pickle (not truncated; nothing but plain data and NumPy arrays, see
    :func:`mtobjectives.io.load_pickle_safely`: a pickle that would run code is refused); it
    holds a dict with the splits ``splits``; each split has ``id``, ``raw_text``,
    ``regression_labels`` and ``text`` or ``text_bert`` (``audio`` and ``vision`` are
    optional, ``*_lengths`` only with their features); ranks
    (``text``/``audio``/``vision`` 3-D, ``text_bert`` ``[N, 3, L]``, labels and lengths 1-D);
    every key has ``N`` entries; labels are real numbers (not booleans), finite and, when
    ``label_range`` is given, inside it; lengths lie in ``[0, steps]``; token ids are whole
    non-negative numbers with a 0/1 attention mask; all splits share keys, modalities and
    feature sizes.

    Cleaning: NaN, :math:`\\pm\\infty` and values with :math:`|x| >` ``max_abs`` in ``text``,
    ``audio`` and ``vision`` are replaced with 0 (MMSA itself zeroes ``-inf`` in audio); one
    :class:`MMSADataWarning` per split and modality counts them by kind. Splits that share clip
    ids (the same ``id`` in train and test: a leak) load with an :class:`MMSADataWarning` that
    gives the count.

    Args:
        path: the ``.pkl`` file (``str`` or path-like).
        label_range: allowed labels, for all of ``regression_labels`` and
            ``regression_labels_T/A/V``: a number ``R`` for :math:`[-R, R]`, a pair
            ``(low, high)``, or ``"sims"`` (:math:`[-1, 1]`), ``"mosi"``/``"mosei"``
            (:math:`[-3, 3]`). ``None`` (default) checks only that labels are finite.
        max_abs: feature values with a larger magnitude count as corrupt (default
            :math:`10^4`; ``math.inf`` keeps every finite value).
        splits: the splits to read (default ``("train", "valid", "test")``), or one split's
            name.

    Returns:
        ``{split name: MMSASplit}``.

    Raises:
        MMSADataError: the file is unusable (the message says why).
        TypeError: ``path`` is not a ``str`` or path-like, or ``splits`` names no strings.
        ValueError: ``label_range``, ``max_abs`` or ``splits`` is invalid.

    Example:
        >>> import pickle, tempfile, numpy as np
        >>> split = {"id": ["v$_$0", "v$_$1"], "raw_text": ["good", "bad"],
        ...          "text": np.zeros((2, 4, 8), np.float32),
        ...          "audio": np.array([[[-np.inf]], [[1.0]]], np.float32),
        ...          "vision": np.zeros((2, 3, 7), np.float32),
        ...          "audio_lengths": [1, 1], "vision_lengths": [3, 2],
        ...          "regression_labels": np.array([1.2, -2.0])}
        >>> path = tempfile.mkdtemp() + "/tiny.pkl"
        >>> with open(path, "wb") as f:
        ...     pickle.dump({"train": split, "valid": split, "test": split}, f)
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     data = load_mmsa(path, label_range="mosi")
        >>> len(data["train"]), data["train"].feature_dims, data["train"].audio[:, 0, 0]
        (2, {'T': 8, 'A': 1, 'V': 7}, array([0., 1.], dtype=float32))
        >>> print(str(caught[0].message).split(": ", 1)[1])
        replaced 1 value(s) of 'audio' with 0 (1 -inf, 0 +inf, 0 NaN, 0 with |x| > 10000)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming an MMSA feature pickle, got "
                        f"{type(path).__name__}")
    path = Path(path)
    _check_options(label_range, max_abs, splits)  # bad arguments before reading a large file
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise MMSADataError(f"{path}: not a file ({what}); expected an MMSA feature pickle")
    try:
        data = load_pickle_safely(path)
    except PickleLoadError as error:  # the message starts with the path
        raise MMSADataError(str(error)) from None
    except OSError as error:
        raise MMSADataError(f"{path}: cannot be read ({type(error).__name__}: "
                            f"{error.strerror or error})") from None
    try:
        result, messages = _parse(data, str(path), label_range, max_abs, splits)
    except MMSADataError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a corrupt file causes names the file
        raise MMSADataError(
            f"{path}: not an MMSA feature file ({type(error).__name__}: {error})"
        ) from None
    for message in messages:
        warnings.warn(message, MMSADataWarning, stacklevel=2)
    return result
