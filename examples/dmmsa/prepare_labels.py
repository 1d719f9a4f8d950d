"""The label file of :mod:`dmmsa.prepare`: its three layouts, and the train/valid/test split.

Layouts (the header decides; columns may come in any order, extra columns are ignored):

- ``id,text,label,mode`` (``cmu-mosi/label.csv``): the video id is the part of ``id`` before its
  last ``_`` (video ids may contain ``_``), the clip id the part after it.
- ``id,video_id,clip_id,text,label,mode`` (``cmu-mosi-400/labels.csv``): ``id`` must equal
  ``video_id + "_" + clip_id``.
- MMSA's raw ``label.csv`` as MMSA and its feature-extraction tool MMSA-FET ship it for CH-SIMS,
  CMU-MOSI and CMU-MOSEI: ``video_id,clip_id,text,label,[label_T,label_A,label_V,]annotation,
  mode``, no ``id``. The file id of a clip (audio ``<id>.flac``, visual ``ids``) is then
  ``video_id + "_" + clip_id``, as MMSA-FET names its per-clip files.

In every layout the clip's id in the pickle is MMSA's ``video_id + "$_$" + clip_id``, and unimodal
labels ``label_T``/``label_A``/``label_V`` (CH-SIMS) are kept where the column holds a number on
every row (a column left empty on every row, as in MMSA's CMU-MOSI file, is dropped).

Splits: ``official`` reads the ``mode`` column (``train``, ``valid`` or ``dev``, ``test``);
``grouped-kfold`` deals whole videos to folds (:func:`grouped_kfold_split`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmmsa.checks import is_int

__all__ = [
    "Clip",
    "LABEL_RANGE",
    "MODE_TO_SPLIT",
    "OUTPUT_SPLITS",
    "PrepareError",
    "UNIMODAL_COLUMNS",
    "grouped_kfold_split",
    "official_split",
    "read_labels",
]

OUTPUT_SPLITS = ("train", "valid", "test")
MODE_TO_SPLIT = {"train": "train", "dev": "valid", "valid": "valid", "test": "test"}
LABEL_RANGE = (-3.0, 3.0)
UNIMODAL_COLUMNS = {"T": "label_T", "A": "label_A", "V": "label_V"}
LAYOUTS = (
    "id,text,label,mode (cmu-mosi), id,video_id,clip_id,text,label,mode (cmu-mosi-400), or "
    "MMSA's video_id,clip_id,text,label,[label_T,label_A,label_V,]annotation,mode"
)


class PrepareError(ValueError):
    """Raised for input that cannot be turned into a pickle; the message says what to fix."""


def few(items: Sequence[str], k: int = 5) -> str:
    """The first ``k`` items, quoted, and how many there are in all.

    Example:
        >>> few(["a", "b", "c"], 2)
        "'a', 'b', ... (3 in all)"
    """
    shown = ", ".join(repr(x) for x in items[:k])
    return shown + (f", ... ({len(items)} in all)" if len(items) > k else "")


@dataclass(frozen=True)
class Clip:
    """One row of the label file.

    Args:
        id: the clip's file id, ``"<video>_<clip>"``.
        video_id: the video (speaker) the clip comes from.
        clip_id: the clip's number inside the video, as text.
        text: the transcript.
        label: sentiment intensity in [-3, 3].
        mode: the official split named in the file (``""`` without a ``mode`` column).
        unimodal: ``"T"``/``"A"``/``"V"`` -> the unimodal label, where the file has one.
    """

    id: str
    video_id: str
    clip_id: str
    text: str
    label: float
    mode: str
    unimodal: Mapping[str, float] = field(default_factory=dict)

    @property
    def mmsa_id(self) -> str:
        """MMSA's id, ``"video$_$clip"``.

        As MMSA-FET forms it (github.com/thuiar/MMSA-FET, ``src/MSA_FET/dataset.py``,
        ``extract_one``: ``cur_id = video_id + '$_$' + clip_id``, and for file names
        ``tmp_id = video_id + '_' + clip_id`` because "$" is not allowed there).
        """
        return f"{self.video_id}$_${self.clip_id}"


def _decode(path: Path, encoding: str | None) -> str:
    """The text of the label file: UTF-8 (a byte-order mark, as Excel writes, is dropped) unless
    ``encoding`` names another; undecodable bytes are an error that says where and what to do."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PrepareError(f"labels: {str(path)!r} cannot be read ({error.strerror or error})"
                           ) from None
    chosen = encoding or "utf-8-sig"
    try:
        return raw.decode(chosen)
    except LookupError:
        raise PrepareError(f"labels_encoding: expected a text encoding Python knows (e.g. "
                           f"utf-8, gbk, latin-1), got {encoding!r}") from None
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise PrepareError(
            f"labels: {str(path)!r} is not {encoding or 'UTF-8'} text (line {line}, byte "
            f"{error.start}: {raw[error.start:error.start + 2]!r}); save it as UTF-8, or name its "
            "encoding with --labels-encoding (e.g. gbk, latin-1)") from None


def _read_rows(path: Path, encoding: str | None = None,
               ) -> tuple[str, list[str], list[dict[str, str]]]:
    """The layout name, the unimodal label columns and the rows of a label file."""
    if not path.is_file():
        raise PrepareError(f"labels: expected an existing CSV file, got {str(path)!r}")
    try:
        reader = csv.DictReader(io.StringIO(_decode(path, encoding), newline=""))
        header = set(reader.fieldnames or ())
        rows = list(reader)
    except csv.Error as error:
        raise PrepareError(f"labels: {str(path)!r} is not a readable CSV file (line "
                           f"{reader.line_num}: {error})") from None
    has_ids = {"video_id", "clip_id"} <= header
    if not {"text", "label"} <= header or not ("id" in header or has_ids):
        raise PrepareError(f"labels: {str(path)!r} must have the columns {LAYOUTS}; "
                           f"got {sorted(header)}")
    if not rows:
        raise PrepareError(f"labels: {str(path)!r} has no rows")
    _check_row_widths(path, len(reader.fieldnames or ()), rows)
    layout = ("cmu-mosi-400" if has_ids else "cmu-mosi") if "id" in header else "mmsa"
    unimodal = [c for c in UNIMODAL_COLUMNS.values()
                if c in header and any((r[c] or "").strip() for r in rows)]
    return layout, unimodal, rows


def _check_row_widths(path: Path, width: int, rows: Sequence[Mapping[str | None, object]]) -> None:
    """Refuse rows with fewer or more fields than the header (a truncated or shifted row)."""
    short = [k + 2 for k, row in enumerate(rows) if any(v is None for v in row.values())]
    long = [k + 2 for k, row in enumerate(rows) if None in row]
    if short or long:
        what = "fewer" if short else "more"
        lines = short or long
        raise PrepareError(
            f"labels: {str(path)!r} has {len(lines)} row(s) with {what} fields than its "
            f"{width}-column header (a truncated or shifted row), first on line "
            f"{lines[0]}")


def _row_ids(layout: str, row: Mapping[str, str]) -> tuple[str, str, str, bool]:
    """``(id, video_id, clip_id, well_formed)`` of one row."""
    if layout == "mmsa":
        video_id, clip_id = (row["video_id"] or "").strip(), (row["clip_id"] or "").strip()
        return f"{video_id}_{clip_id}", video_id, clip_id, bool(video_id and clip_id)
    clip_key = (row["id"] or "").strip()
    if layout == "cmu-mosi-400":
        video_id, clip_id = row["video_id"].strip(), row["clip_id"].strip()
        return clip_key, video_id, clip_id, clip_key == f"{video_id}_{clip_id}"
    video_id, sep, clip_id = clip_key.rpartition("_")
    return clip_key, video_id, clip_id, bool(sep and video_id and clip_id)


class _Problems:
    """The problems found in the rows, gathered so that one message names them all."""

    def __init__(self) -> None:
        self.bad_ids: list[str] = []
        self.bad_numbers: list[str] = []
        self.nan_labels: list[str] = []
        self.out_of_range: list[str] = []

    def number(self, clip_key: str, column: str, value: str | None) -> float | None:
        """The label in ``value``, or ``None`` after noting why it is not a usable label."""
        name = clip_key if column == "label" else f"{clip_key}:{column}"
        try:
            label = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.bad_numbers.append(f"{name}={value!r}")
            return None
        if math.isnan(label):
            self.nan_labels.append(name)
        elif not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
            self.out_of_range.append(f"{name}={label:g}")
        return label

    def message(self, layout: str, clips: Sequence[Clip]) -> list[str]:
        out = []
        if self.bad_ids:
            expected = {"cmu-mosi-400": "id == video_id + '_' + clip_id",
                        "cmu-mosi": "ids of the form <video>_<clip>",
                        "mmsa": "non-empty video_id and clip_id"}[layout]
            out.append(f"{len(self.bad_ids)} malformed ids (expected {expected}): "
                       f"{few(self.bad_ids)}")
        if self.bad_numbers:
            out.append(f"{len(self.bad_numbers)} labels that are not numbers: "
                       f"{few(self.bad_numbers)}")
        if self.nan_labels:
            out.append(f"{len(self.nan_labels)} NaN labels: {few(self.nan_labels)}")
        if self.out_of_range:
            out.append(f"{len(self.out_of_range)} labels outside [{LABEL_RANGE[0]:g}, "
                       f"{LABEL_RANGE[1]:g}]: {few(self.out_of_range)}")
        counts: dict[str, int] = {}
        for c in clips:
            counts[c.id] = counts.get(c.id, 0) + 1
        duplicates = [i for i, n in counts.items() if n > 1]
        if duplicates:
            out.append(f"{len(duplicates)} duplicate ids: {few(duplicates)}")
        return out


def read_labels(path: str | Path, encoding: str | None = None) -> list[Clip]:
    """Read and validate a label file in any of the layouts of the module docstring.

    Args:
        path: the CSV file.
        encoding: its text encoding (default: UTF-8, with or without a byte-order mark).

    Returns:
        The clips in file order.

    Raises:
        PrepareError: missing, undecodable or malformed file (a row with fewer or more fields
            than the header), missing columns, duplicate or malformed ids, labels (or unimodal
            labels) that are not numbers, NaN, or outside [-3, 3].
    """
    path = Path(path)
    layout, unimodal_columns, rows = _read_rows(path, encoding)
    problems = _Problems()
    clips: list[Clip] = []
    for row in rows:
        clip_key, video_id, clip_id, well_formed = _row_ids(layout, row)
        if not well_formed:
            problems.bad_ids.append(clip_key)
        label = problems.number(clip_key, "label", row["label"])
        unimodal = {m: problems.number(clip_key, c, row[c])
                    for m, c in UNIMODAL_COLUMNS.items() if c in unimodal_columns}
        if label is None or None in unimodal.values():
            continue
        mode = (row.get("mode") or "").strip()
        clips.append(Clip(clip_key, video_id, clip_id, row["text"] or "", label, mode, unimodal))
    found = problems.message(layout, clips)
    if found:
        raise PrepareError(f"labels: {str(path)!r} has " + "; ".join(found))
    return clips


def official_split(modes: Sequence[str]) -> dict[str, np.ndarray]:
    """Indices of each output split from the file's ``mode`` column.

    Args:
        modes: one official split name per clip: ``train``, ``dev`` or ``valid``, or ``test``.

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
            f"{few(unknown)}"
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


def _check_fold_arguments(n_groups: int, folds: int, fold: int, valid_groups: int) -> None:
    if not is_int(folds) or folds < 2:
        raise PrepareError(f"folds: expected an integer >= 2, got {folds!r}")
    if folds > n_groups:
        raise PrepareError(f"folds: expected at most the {n_groups} videos, got {folds}")
    if not is_int(fold) or not 0 <= fold < folds:
        raise PrepareError(f"fold: expected an integer in [0, {folds - 1}], got {fold!r}")
    if not is_int(valid_groups) or valid_groups < 1:
        raise PrepareError(f"valid_videos: expected an integer >= 1, got {valid_groups!r}")


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
    _check_fold_arguments(len(unique), folds, fold, valid_groups)
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
