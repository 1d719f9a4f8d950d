"""Measure what ConFEDE's sample selector hands out, under both readings of its indexing.

For every anchor of a labelled split, the share of its "similar-similar" pool (the candidates
ConFEDE draws its two positives from) whose rounded label equals the anchor's, against chance
(the share of all other samples with that label), and how many anchors have sample 0 in that
pool. Features: any per-clip vectors, e.g. the 400-clip CMU-MOSI subset's visual features, or
the fixed encoders' outputs that ``train.py --freeze-encoders`` cached (T; V; A, as ConFEDE ranks
by them) with the training split of the pickle they were computed from::

    python docs/scripts/confede_sampler_share.py --labels $DATA/cmu-mosi-400/labels.csv \\
        --features $DATA/cmu-mosi-400/visual_resnet18.npz
    python docs/scripts/confede_sampler_share.py --data runs/real/mosi400_fold0.pkl \\
        --encoder-features runs/study20/fold0/seed1/encoder_features/encoder_features_*.pt
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from mtobjectives.recipes import ConFEDESampler


def read(labels_csv: Path, features_npz: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        label_of = {row["id"]: float(row["label"]) for row in csv.DictReader(f)}
    with np.load(features_npz, allow_pickle=False) as z:
        ids, features = [str(i) for i in z["ids"]], np.asarray(z["features"], np.float32)
    keep = [k for k, i in enumerate(ids) if i in label_of]
    labels = torch.tensor([label_of[ids[k]] for k in keep])
    return torch.from_numpy(features[keep]).reshape(len(keep), -1), labels


def read_cache(data: Path, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's cached T; V; A encoder outputs and its labels."""
    from mtobjectives.io import load_pickle_safely

    train = load_pickle_safely(data)["train"]
    encoded = torch.load(cache, weights_only=True)["splits"]["train"]
    features = torch.cat([encoded[m] for m in ("T", "V", "A") if m in encoded], dim=1)
    return features, torch.tensor(np.asarray(train["regression_labels"], np.float32))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, help="label CSV (with --features)")
    parser.add_argument("--features", type=Path, help=".npz of ids and per-clip features")
    parser.add_argument("--data", type=Path, help="feature pickle (with --encoder-features)")
    parser.add_argument("--encoder-features", type=Path, help="a cache of train.py")
    args = parser.parse_args(argv)
    if args.encoder_features is not None and args.data is not None:
        features, labels = read_cache(args.data, args.encoder_features)
    elif args.labels is not None and args.features is not None:
        features, labels = read(args.labels, args.features)
    else:
        parser.error("give --labels and --features, or --data and --encoder-features")
    rounded = torch.round(labels.double())
    chance = float(np.mean([float((rounded[torch.arange(len(rounded)) != i] == rounded[i])
                                  .double().mean()) for i in range(len(rounded))]))
    print(f"{len(labels)} clips; chance that another clip shares the anchor's rounded label: "
          f"{100 * chance:.1f} %")
    for as_written in (True, False):
        sampler = ConFEDESampler(as_written=as_written)
        sampler.rebuild(features, labels)
        share = sampler.same_label_share(labels)
        dd = sampler.same_label_share(labels, "dissimilar-dissimilar")
        zero = float((sampler.pools[:, 0] == 0).any(dim=1).double().mean())
        print(f"as_written={as_written}: similar-similar share with the anchor's label "
              f"{100 * share:.1f} %, dissimilar-dissimilar {100 * dd:.1f} %; sample 0 in the "
              f"similar-similar pool of {100 * zero:.1f} % of the anchors")


if __name__ == "__main__":
    main()
