"""The fusion stage with frozen encoders: cached encoder outputs against running them every step.

A MOSI-400-sized feature file is generated (400 clips from 16 videos, 300 / 28 / 72 in the
splits; text as token ids, 50 per clip, read by a MiniLM-L6-sized BERT, 6 layers x 384, built
from a ``BertConfig`` with random weights so that nothing is downloaded; audio 375 x 44 frames,
vision one 512-d vector per clip: the shapes ``prepare_mosi.py`` writes for the real subset).
``train.py --config mosi400 --stage fusion --freeze-encoders`` then trains one seed's fusion
stage three times in this process: computing the cache (in a shared ``--feature-cache`` folder),
reading it (as ``compare``'s other variants of a fold and seed do), and with
``--no-feature-cache``; the times are the seeds' ``wall_seconds``. The ratio is printed last.

Usage::

    python benchmarks/bench_feature_cache.py              # about 5 minutes on 2 CPU cores
    python benchmarks/bench_feature_cache.py --small      # seconds: checks the script
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from dmmsa import train


def write_data(path: Path, n: int, text_len: int, audio_len: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sizes = {"train": int(n * 0.75), "valid": int(n * 0.07)}
    sizes["test"] = n - sizes["train"] - sizes["valid"]
    splits = {}
    for name, size in sizes.items():
        ids = rng.integers(1000, 30000, size=(size, text_len))
        ids[:, 0], mask = 101, np.ones((size, text_len))
        splits[name] = {
            "id": np.array([f"v{i % 16}$_${i}" for i in range(size)], dtype=object),
            "raw_text": np.array(["text"] * size, dtype=object),
            "text_bert": np.stack([ids, mask, np.zeros_like(mask)], axis=1).astype(np.float32),
            "audio": rng.normal(size=(size, audio_len, 44)).astype(np.float32),
            "audio_lengths": np.full(size, audio_len),
            "vision": rng.normal(size=(size, 1, 512)).astype(np.float32),
            "vision_lengths": np.ones(size, dtype=np.int64),
            "regression_labels": rng.uniform(-3, 3, size=size).astype(np.float32),
        }
    path.write_bytes(pickle.dumps(splits))


def write_text_model(folder: Path, small: bool) -> None:
    from transformers import BertConfig, BertModel

    layers, width = (1, 32) if small else (6, 384)
    config = BertConfig(vocab_size=30522, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=4 if small else 12,
                        intermediate_size=4 * width, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)


def fusion_seconds(data: Path, model: Path, out: Path, extra: list[str], epochs: int) -> float:
    argv = ["--config", "mosi400", "--data", str(data), "--text-model", str(model), "--stage",
            "fusion", "--freeze-encoders", "--epochs", str(epochs), "--seeds", "1",
            "--threads", str(torch.get_num_threads()), "--out", str(out), *extra]
    assert train.main(argv) == 0
    return json.loads((out / "results.json").read_text())["per_seed"][0]["wall_seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--epochs", type=int, default=6, help="fusion epochs (mosi400: 6)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, model = root / "mosi400_size.pkl", root / "minilm_size"
        write_data(data, 80 if args.small else 400, 12 if args.small else 50,
                   40 if args.small else 375)
        write_text_model(model, args.small)
        epochs = 2 if args.small else args.epochs
        shared = ["--feature-cache", str(root / "features")]
        first = fusion_seconds(data, model, root / "first", shared, epochs)
        cached = fusion_seconds(data, model, root / "second", [*shared, "--objective", "plain"],
                                epochs)
        uncached = fusion_seconds(data, model, root / "uncached", ["--no-feature-cache"],
                                  epochs)
    print(f"fusion stage, {epochs} epochs, frozen encoders, one process "
          f"({torch.get_num_threads()} threads): uncached {uncached:.1f} s; cached "
          f"{first:.1f} s for the run that computes the cache, {cached:.1f} s for a run that "
          "reads it (compare's other variants of the fold and seed)")
    print(f"ratio uncached / cached: {uncached / cached:.1f}x (computing the cache too: "
          f"{uncached / first:.1f}x)")


if __name__ == "__main__":
    main()
