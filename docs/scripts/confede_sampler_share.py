"""Measure what ConFEDE's sample selector hands out, under both readings of its indexing.

For every anchor of a labelled split, the share of its "similar-similar" pool (the candidates
ConFEDE draws its two positives from) whose rounded label equals the anchor's, against chance
(the share of all other samples with that label), and how many anchors have sample 0 in that
pool. Features: any per-clip vectors, e.g. the 400-clip CMU-MOSI subset's visual features::

    python docs/scripts/confede_sampler_share.py --labels $DATA/cmu-mosi-400/labels.csv \\
        --features $DATA/cmu-mosi-400/visual_resnet18.npz
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    args = parser.parse_args(argv)
    features, labels = read(args.labels, args.features)
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
