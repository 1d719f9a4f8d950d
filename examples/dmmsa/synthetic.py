"""A synthetic multimodal sentiment dataset in MMSA's feature-pickle format.

The embedded default data of the example: anyone can train DMMSA on a laptop without the paper's
feature files. The file has the keys of an MMSA pickle (the feature files of the MMSA toolkit,
in which the paper's datasets of section 4.1 are distributed), so :func:`data.load_mmsa` reads
it exactly as it reads MOSI, MOSEI or CH-SIMS, including CH-SIMS's unimodal labels
``regression_labels_T/A/V``.

How the data is made (one sample):

1. **Latent sentiments.** A shared component :math:`z` and private parts :math:`e_m` give
   correlated unimodal sentiments in :math:`(-1, 1)`:

   .. math::

       u_m = \\rho z + \\sqrt{1 - \\rho^2}\\, e_m, \\qquad
       t_m = \\tanh(\\kappa u_m), \\qquad m \\in \\{T, A, V\\}

2. **Labels.** The multimodal label mixes the three with text dominant, plus noise, then it is
   clipped and rounded to a grid as MOSI's averaged annotator scores are:

   .. math::

       y = \\operatorname{grid}\\Big(\\operatorname{clip}\\big(R\\,(w_T t_T + w_A t_A + w_V t_V)
           + \\sigma_y \\varepsilon,\\; -R, R\\big)\\Big)

   where :math:`\\kappa = 1.2`, :math:`\\rho` is ``rho`` (default 0.5),
   :math:`R` is ``label_range``, :math:`(w_T, w_A, w_V)` is ``weights``
   (default 0.6/0.25/0.15) and grid rounds to multiples of ``label_step`` (default 1/3, the grid of
   MOSI's mean of three integer scores; use ``label_range=1, label_step=0.2`` for a CH-SIMS-like
   file). Unimodal labels ``regression_labels_T/A/V`` are :math:`R\\,t_m` plus small noise on the
   same grid.

3. **Text.** Words are drawn from a small vocabulary of positive, negative and neutral words whose
   probabilities tilt with :math:`t_T`; a negator ``not`` sometimes precedes a polar word and flips
   its polarity (so a bag of words is not enough). ``text_bert`` holds the token ids
   (``[CLS] words [SEP] [PAD]...``), the attention mask and segment ids; ``text`` holds "contextual"
   token features: a fixed embedding per token plus a nonlinear random projection of the sentence's
   effective valence, plus noise. Both views carry the same information.

4. **Audio and vision.** The sentiment is expressed in a random time window of each clip and
   encoded nonlinearly, :math:`x_t = \\tanh(U_1 a_t + U_2 a_t^2 + B c + b) + \\sigma \\varepsilon_t`
   with :math:`a_t = t_m\\, \\omega_t` (the window) and a per-video speaker style :math:`c`
   (sentiment-free nuisance); steps past the clip's length are zero, as in MMSA's unaligned files.

Clips are grouped into videos (ids ``"syn0007$_$3"``) and no video is in two splits. Everything is
drawn from ``numpy.random.default_rng`` streams spawned from ``seed``, so the same arguments give
byte-identical arrays (and an identical file).

Run ``python examples/dmmsa/synthetic.py --out data/synthetic.pkl`` to write the default file.
"""

from __future__ import annotations

import argparse
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dmmsa.checks import is_int, is_real

__all__ = [
    "CLS_ID",
    "NOT_ID",
    "PAD_ID",
    "SEP_ID",
    "UNK_ID",
    "build_synthetic",
    "main",
    "make_synthetic",
    "vocabulary",
]

PAD_ID, UNK_ID, CLS_ID, SEP_ID, NOT_ID = 0, 1, 2, 3, 4
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "not")
_CLIPS_PER_VIDEO = 10  # clips share a video (and its speaker style); splits never share one
_STYLE_DIM = 2  # size of the per-video speaker style c
_STYLE_SCALE = 1.0  # scale of B, how much the style moves audio and vision
_TILT = 2.0  # how strongly a sentence's sentiment tilts its word choice
_KAPPA = 1.2  # kappa in t_m = tanh(kappa u_m)
_NEGATION_RATE = 0.12  # chance that a word slot becomes "not" + opposite-polarity word


def vocabulary(vocab_size: int = 64) -> tuple[list[str], np.ndarray]:
    """The synthetic vocabulary: token strings and their valence in :math:`[-1, 1]`.

    Ids 0-4 are ``[PAD] [UNK] [CLS] [SEP] not``; the remaining words are split into thirds:
    positive (``pos0``, ...), negative (``neg0``, ...) and neutral (``w0``, ...) words, with
    valence magnitudes spread over :math:`[0.3, 1]` for the polar ones.

    Args:
        vocab_size: number of token ids (at least 11). A BERT built for this data needs
            ``vocab_size`` at least this large.

    Returns:
        ``(tokens, valence)``: ``tokens[i]`` is the string of id ``i``; ``valence`` is a float64
        array ``[vocab_size]`` (0 for specials, the negator and neutral words).

    Example:
        >>> tokens, valence = vocabulary(11)
        >>> tokens
        ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'not', 'pos0', 'pos1', 'neg0', 'neg1', 'w0', 'w1']
        >>> valence.round(2).tolist()
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 1.0, -0.3, -1.0, 0.0, 0.0]
    """
    if not is_int(vocab_size) or vocab_size < 11:
        raise ValueError(f"vocab_size must be an int >= 11, got {vocab_size!r}")
    n_words = vocab_size - len(_SPECIALS)
    n_polar = n_words // 3
    n_neutral = n_words - 2 * n_polar
    magnitudes = np.linspace(0.3, 1.0, n_polar)
    tokens = list(_SPECIALS)
    tokens += [f"pos{k}" for k in range(n_polar)]
    tokens += [f"neg{k}" for k in range(n_polar)]
    tokens += [f"w{k}" for k in range(n_neutral)]
    valence = np.concatenate(
        [np.zeros(len(_SPECIALS)), magnitudes, -magnitudes, np.zeros(n_neutral)]
    )
    return tokens, valence


def _check_int(name: str, value: object, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_float(
    name: str, value: object, *, low: float, high: float = math.inf, include_low: bool = False
) -> float:
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    above = value >= low if include_low else value > low
    if not (math.isfinite(value) and above and value <= high):
        interval = f"{'[' if include_low else '('}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def _to_grid(values: np.ndarray, label_range: float, step: float) -> np.ndarray:
    """Clip to [-R, R], round to multiples of ``step`` (NumPy rounding), no negative zeros."""
    snapped = np.round(np.clip(values, -label_range, label_range) / step) * step
    snapped = np.clip(snapped, -label_range, label_range) + 0.0  # + 0.0 turns -0.0 into 0.0
    return snapped.astype(np.float32)


class _World:
    """The fixed random "world" shared by all splits: embeddings and projections."""

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        vocab_size: int,
        d_text: int,
        d_audio: int,
        d_vision: int,
    ) -> None:
        self.tokens, self.valence = vocabulary(vocab_size)
        self.embedding = rng.normal(0.0, 1.0, (vocab_size, d_text))
        self.embedding[PAD_ID] = 0.0
        self.text_proj = rng.normal(0.0, 1.5, (2, d_text))
        self.text_bias = rng.normal(0.0, 0.5, d_text)
        self.streams = {}
        for name, dim in (("audio", d_audio), ("vision", d_vision)):
            self.streams[name] = (
                rng.normal(0.0, 2.0, (1, dim)),  # U_1: linear in the expressed sentiment
                rng.normal(0.0, 1.5, (1, dim)),  # U_2: quadratic (intensity, sign-free)
                rng.normal(0.0, _STYLE_SCALE, (_STYLE_DIM, dim)),  # B: speaker style
                rng.normal(0.0, 0.3, dim),  # b
            )


def _sample_text(
    rng: np.random.Generator, world: _World, sentiment: np.ndarray, text_len: int, noise: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Token ids [N, 3, L] (int64), token features [N, L, d] (float32) and raw text."""
    n = sentiment.shape[0]
    valence = world.valence
    words = np.flatnonzero(np.arange(valence.size) > NOT_ID)
    polar = np.abs(valence[words]) > 0
    max_words = text_len - 2
    ids = np.full((n, text_len), PAD_ID, dtype=np.int64)
    mask = np.zeros((n, text_len), dtype=np.int64)
    effective = np.zeros(n)
    raw_text: list[str] = []
    for i in range(n):
        n_words = int(rng.integers(max(1, (max_words + 1) // 2), max_words + 1))
        # each word's log-probability tilts with the sentence's sentiment; polar words are
        # rarer in neutral sentences
        logits = _TILT * valence[words] * sentiment[i] + np.where(polar, abs(sentiment[i]) - 0.6, 0)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        # "not" + a polar word of the opposite polarity says the same as a plain polar word
        negated = np.where(polar, np.exp(-logits - (-logits).max()), 0.0)
        negated /= negated.sum()
        sentence: list[int] = []
        scores: list[float] = []
        while len(sentence) < n_words:
            if len(sentence) <= n_words - 2 and rng.random() < _NEGATION_RATE:
                word = int(rng.choice(words, p=negated))
                sentence += [NOT_ID, word]
                scores.append(-valence[word])
            else:
                word = int(rng.choice(words, p=probs))
                sentence.append(word)
                scores.append(valence[word])
        ids[i, 0] = CLS_ID
        ids[i, 1 : n_words + 1] = sentence
        ids[i, n_words + 1] = SEP_ID
        mask[i, : n_words + 2] = 1
        effective[i] = float(np.mean(scores))
        raw_text.append(" ".join(world.tokens[t] for t in sentence))
    text_bert = np.stack([ids, mask, np.zeros_like(ids)], axis=1)
    # "contextual" features: the token's embedding plus a nonlinear code of the sentence's
    # effective valence (what a BERT that understands negation would see), plus noise
    code = np.stack([effective, effective**2], axis=1)
    context = np.tanh(code @ world.text_proj + world.text_bias)  # [N, d]
    features = world.embedding[ids] + context[:, None, :] * mask[:, :, None]
    features += noise * rng.standard_normal(features.shape) * mask[:, :, None]
    return text_bert, features.astype(np.float32), raw_text


def _sample_stream(
    rng: np.random.Generator,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sentiment: np.ndarray,
    style: np.ndarray,
    lengths: np.ndarray,
    seq_len: int,
    noise: float,
) -> np.ndarray:
    """Audio or vision features [N, L, d] (float32), zero past each clip's length."""
    linear, quadratic, style_proj, bias = weights
    n = sentiment.shape[0]
    steps = np.arange(seq_len)[None, :]
    centre = rng.random(n)[:, None] * (lengths[:, None] - 1)
    width = 1.0 + rng.random(n)[:, None] * np.maximum(lengths[:, None] / 2.0 - 1.0, 0.0)
    window = np.exp(-0.5 * ((steps - centre) / width) ** 2)  # [N, L]
    expressed = (sentiment[:, None] * window)[:, :, None]  # a_t, [N, L, 1]
    hidden = expressed * linear + expressed**2 * quadratic + (style @ style_proj)[:, None, :]
    features = np.tanh(hidden + bias) + noise * rng.standard_normal(hidden.shape)
    features *= (steps < lengths[:, None])[:, :, None]
    return features.astype(np.float32)


def _sample_labels(
    rng: np.random.Generator,
    n: int,
    label_range: float,
    label_step: float,
    weights: tuple[float, float, float],
    rho: float,
    label_noise: float,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Latent sentiments ``t_m`` ``[3, N]``, the multimodal label and the unimodal labels."""
    # latent unimodal sentiments t_m in (-1, 1), correlated through the shared z
    shared = rng.standard_normal(n)
    private = rng.standard_normal((3, n))
    unimodal = np.tanh(_KAPPA * (rho * shared + math.sqrt(1.0 - rho**2) * private))  # [3, N]
    mix = np.asarray(weights) @ unimodal
    label = _to_grid(
        label_range * mix + label_noise * label_range * rng.standard_normal(n),
        label_range,
        label_step,
    )
    uni_labels = [
        _to_grid(label_range * t + 0.05 * label_range * rng.standard_normal(n), label_range,
                 label_step)
        for t in unimodal
    ]
    return unimodal, label, uni_labels


def _sample_split(
    rng: np.random.Generator,
    world: _World,
    *,
    n: int,
    first_video: int,
    text_len: int,
    audio_len: int,
    vision_len: int,
    aligned: bool,
    label_range: float,
    label_step: float,
    weights: tuple[float, float, float],
    rho: float,
    label_noise: float,
    feature_noise: float,
) -> dict[str, Any]:
    video = np.arange(n) // _CLIPS_PER_VIDEO
    clip = np.arange(n) % _CLIPS_PER_VIDEO
    ids = np.array(
        [f"syn{first_video + v:04d}$_${c}" for v, c in zip(video, clip)], dtype=object
    )
    unimodal, label, uni_labels = _sample_labels(rng, n, label_range, label_step, weights, rho,
                                                 label_noise)
    style = rng.standard_normal((int(video.max()) + 1, _STYLE_DIM))[video]

    text_bert, text, raw_text = _sample_text(rng, world, unimodal[0], text_len, feature_noise)
    split: dict[str, Any] = {"raw_text": np.array(raw_text, dtype=object), "id": ids}
    split["text"] = text
    split["text_bert"] = text_bert
    if aligned:
        # word-aligned streams: one step per token, valid where the text is
        aligned_len = text_bert[:, 1].sum(axis=1)
        audio_lengths = vision_lengths = aligned_len
        audio_len = vision_len = text_len
    else:
        audio_lengths = rng.integers((audio_len + 1) // 2, audio_len + 1, n)
        vision_lengths = rng.integers((vision_len + 1) // 2, vision_len + 1, n)
    split["audio"] = _sample_stream(
        rng, world.streams["audio"], unimodal[1], style, audio_lengths, audio_len, feature_noise
    )
    split["vision"] = _sample_stream(
        rng, world.streams["vision"], unimodal[2], style, vision_lengths, vision_len,
        feature_noise,
    )
    if not aligned:
        split["audio_lengths"] = audio_lengths.astype(np.int64)
        split["vision_lengths"] = vision_lengths.astype(np.int64)
    split["regression_labels"] = label
    for name, values in zip("TAV", uni_labels):
        split[f"regression_labels_{name}"] = values
    return split


def build_synthetic(
    *,
    seed: int = 0,
    n_train: int = 600,
    n_valid: int = 150,
    n_test: int = 150,
    text_len: int = 8,
    audio_len: int = 12,
    vision_len: int = 10,
    d_text: int = 32,
    d_audio: int = 5,
    d_vision: int = 20,
    label_range: float = 3.0,
    label_step: float = 1.0 / 3.0,
    vocab_size: int = 64,
    weights: tuple[float, float, float] = (0.6, 0.25, 0.15),
    rho: float = 0.5,
    label_noise: float = 0.15,
    feature_noise: float = 0.6,
    aligned: bool = False,
) -> dict[str, dict[str, Any]]:
    """Build the synthetic dataset in memory (the dict that :func:`make_synthetic` pickles).

    Args:
        seed: seed of every random draw; the same arguments give byte-identical arrays.
        n_train: samples in ``train``.
        n_valid: samples in ``valid``.
        n_test: samples in ``test``.
        text_len: token positions :math:`L` of ``text``/``text_bert``, ``[CLS]`` and ``[SEP]``
            included (at least 3).
        audio_len: time steps of ``audio`` (ignored when ``aligned``).
        vision_len: time steps of ``vision`` (ignored when ``aligned``).
        d_text: feature size of ``text``.
        d_audio: feature size of ``audio`` (MOSI: 5).
        d_vision: feature size of ``vision`` (MOSI: 20).
        label_range: :math:`R`; labels lie in :math:`[-R, R]` (MOSI 3, CH-SIMS 1).
        label_step: the label grid (1/3 as MOSI's averaged scores, 0.2 for CH-SIMS).
        vocab_size: token ids used by ``text_bert`` (see :func:`vocabulary`).
        weights: :math:`(w_T, w_A, w_V)`, each modality's share of the multimodal label.
        rho: :math:`\\rho`, weight of the shared component (the modalities' correlation is
            about :math:`\\rho^2`).
        label_noise: :math:`\\sigma_y / R`, noise of the multimodal label.
        feature_noise: standard deviation of the noise added to every feature.
        aligned: write a word-aligned file (audio and vision have ``text_len`` steps, no
            ``*_lengths`` keys) instead of an unaligned one.

    Returns:
        ``{"train"|"valid"|"test": {key: array}}`` with MMSA's keys.

    Example:
        >>> data = build_synthetic(n_train=20, n_valid=10, n_test=10)
        >>> sorted(data["train"])  # doctest: +NORMALIZE_WHITESPACE
        ['audio', 'audio_lengths', 'id', 'raw_text', 'regression_labels', 'regression_labels_A',
         'regression_labels_T', 'regression_labels_V', 'text', 'text_bert', 'vision',
         'vision_lengths']
        >>> data["train"]["text_bert"].shape, data["train"]["audio"].shape
        ((20, 3, 8), (20, 12, 5))
    """
    seed = _check_int("seed", seed, 0)
    sizes = {name: _check_int(name, value, 1) for name, value in
             (("train", n_train), ("valid", n_valid), ("test", n_test))}
    dims = {name: _check_int(name, value, 1) for name, value in
            (("d_text", d_text), ("d_audio", d_audio), ("d_vision", d_vision))}
    settings = _checked_settings(text_len=text_len, audio_len=audio_len, vision_len=vision_len,
                                 label_range=label_range, label_step=label_step, rho=rho,
                                 label_noise=label_noise, feature_noise=feature_noise,
                                 weights=weights)
    world_seq, *split_seqs = np.random.SeedSequence(seed).spawn(4)
    world = _World(np.random.default_rng(world_seq), vocab_size=vocab_size, **dims)
    data: dict[str, dict[str, Any]] = {}
    first_video = 0
    for (name, n), seq in zip(sizes.items(), split_seqs):
        data[name] = _sample_split(np.random.default_rng(seq), world, n=n,
                                   first_video=first_video, aligned=aligned, **settings)
        first_video += -(-n // _CLIPS_PER_VIDEO)
    return data


def _checked_settings(*, text_len: object, audio_len: object, vision_len: object,
                      label_range: object, label_step: object, rho: object,
                      label_noise: object, feature_noise: object,
                      weights: tuple[float, float, float]) -> dict[str, Any]:
    """The per-split arguments of :func:`_sample_split`, checked."""
    settings: dict[str, Any] = {
        "text_len": _check_int("text_len", text_len, 3),
        "audio_len": _check_int("audio_len", audio_len, 1),
        "vision_len": _check_int("vision_len", vision_len, 1),
        "label_range": _check_float("label_range", label_range, low=0.0),
    }
    settings["label_step"] = _check_float("label_step", label_step, low=0.0,
                                          high=settings["label_range"])
    settings["rho"] = _check_float("rho", rho, low=0.0, high=1.0, include_low=True)
    settings["label_noise"] = _check_float("label_noise", label_noise, low=0.0,
                                           include_low=True)
    settings["feature_noise"] = _check_float("feature_noise", feature_noise, low=0.0,
                                             include_low=True)
    if len(weights) != 3 or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be three finite numbers >= 0, got {weights!r}")
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"weights must sum to 1, got {weights!r} (sum {sum(weights)})")
    settings["weights"] = (float(weights[0]), float(weights[1]), float(weights[2]))
    return settings


def make_synthetic(path: str | Path, *, seed: int = 0, **kwargs: Any) -> Path:
    """Write the synthetic dataset as an MMSA feature pickle.

    Keys per split: ``raw_text``, ``id`` (``"video$_$clip"``), ``text`` ``[N, L, d_text]``
    float32, ``text_bert`` ``[N, 3, L]`` int64 (ids, attention mask, segment ids), ``audio``
    ``[N, La, d_audio]`` and ``vision`` ``[N, Lv, d_vision]`` float32, ``audio_lengths`` and
    ``vision_lengths`` ``[N]`` int64 (unaligned files only), ``regression_labels`` and
    ``regression_labels_T/A/V`` ``[N]`` float32.

    Args:
        path: file to write (its folder is created).
        seed: seed of every random draw.
        **kwargs: the other arguments of :func:`build_synthetic` (sizes, dimensions, label range
            and grid, vocabulary size, modality weights, noise, ``aligned``).

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib
        >>> folder = tempfile.mkdtemp()
        >>> out = make_synthetic(pathlib.Path(folder) / "syn.pkl", n_train=20, n_valid=10,
        ...                      n_test=10)
        >>> out.name, out.stat().st_size > 0
        ('syn.pkl', True)
    """
    data = build_synthetic(seed=seed, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=4)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python examples/dmmsa/synthetic.py --out PATH [--seed 0] [...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="pickle file to write")
    parser.add_argument("--seed", type=int, default=0)
    for name, default in (
        ("n_train", 600), ("n_valid", 150), ("n_test", 150), ("text_len", 8), ("audio_len", 12),
        ("vision_len", 10), ("d_text", 32), ("d_audio", 5), ("d_vision", 20),
        ("vocab_size", 64),
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    parser.add_argument("--label-range", type=float, default=3.0)
    parser.add_argument("--label-step", type=float, default=1.0 / 3.0)
    parser.add_argument("--weights", type=float, nargs=3, default=(0.6, 0.25, 0.15),
                        metavar=("W_T", "W_A", "W_V"))
    parser.add_argument("--aligned", action="store_true", help="word-aligned streams")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    args["weights"] = tuple(args["weights"])
    path = make_synthetic(out, **args)
    print(
        f"wrote {path} (train/valid/test = {args['n_train']}/{args['n_valid']}/{args['n_test']}, "
        f"seed {args['seed']})"
    )


if __name__ == "__main__":
    main()
