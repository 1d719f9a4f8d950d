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

or the encoders of fine-tuned runs, each read from a ``model_best.pt`` of ``train.py`` (the
selected epoch's weights; the run's ``config.json`` names its data and preset), one line per run
and their mean and spread::

    python docs/scripts/confede_sampler_share.py \\
        --model-best runs/study20/fold*/seed*/confede/seed*/model_best.pt
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


def read_model_best(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's T; V; A outputs of the encoders in a run's ``model_best.pt``."""
    import ast
    import json
    import tempfile

    from dmmsa import cli, feature_cache, train
    from dmmsa import model as model_lib

    config_json = path.parent.parent / "config.json"
    if not path.is_file() or not config_json.is_file():
        raise SystemExit(f"--model-best {path}: expected a train.py run's seed<s>/model_best.pt, "
                         f"with the run's config.json beside its seed folder")
    try:
        config = json.loads(config_json.read_text())
        saved = config["args"]
        data = ast.literal_eval(config["fingerprint"]["data"])  # the resolved path it trained on
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as error:
        raise SystemExit(f"--model-best {path}: {config_json} is not a train.py run's "
                         f"config.json ({type(error).__name__}: {error})") from None
    with tempfile.TemporaryDirectory() as out:
        run = train.setup(cli.parse_args(["--config", saved["config"], "--data", data,
                                          "--stage", "fusion", "--out", out]))
    model = model_lib.DMMSAModel(run.experiment.model,
                                 reconstruction=saved["objective"] == "misa")
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise SystemExit(f"--model-best {path}: not the model of that run "
                         f"({type(error).__name__})") from None
    train_split = run.datasets["train"]
    encoded = feature_cache.encode_split(run, model, train_split)
    features = torch.cat([encoded[m] for m in ("T", "V", "A") if m in encoded], dim=1)
    return features, train_split.labels["M"].float().cpu()


def shares(features: torch.Tensor, labels: torch.Tensor) -> dict[bool, tuple[float, ...]]:
    """Per reading (``as_written``): similar-similar and dissimilar-dissimilar shares with the
    anchor's rounded label, and the share of anchors with sample 0 in the similar pool."""
    result = {}
    for as_written in (True, False):
        sampler = ConFEDESampler(as_written=as_written)
        sampler.rebuild(features, labels)
        result[as_written] = (
            sampler.same_label_share(labels),
            sampler.same_label_share(labels, "dissimilar-dissimilar"),
            float((sampler.pools[:, 0] == 0).any(dim=1).double().mean()))
    return result


def chance_of(labels: torch.Tensor) -> float:
    """The mean share of the other clips that have the anchor's rounded label."""
    rounded = torch.round(labels.double())
    return float(np.mean([float((rounded[torch.arange(len(rounded)) != i] == rounded[i])
                                .double().mean()) for i in range(len(rounded))]))


def report_runs(paths: list[Path]) -> None:
    """One line per ``model_best.pt``, then the mean and sample std over them."""
    rows = []
    for path in paths:
        features, labels = read_model_best(path)
        found, chance = shares(features, labels), chance_of(labels)
        rows.append([100 * found[True][0], 100 * found[False][0], 100 * chance])
        print(f"{path}: similar-similar share with the anchor's label, as written "
              f"{rows[-1][0]:.1f} %, intended {rows[-1][1]:.1f} %, chance {rows[-1][2]:.1f} %",
              flush=True)
    table = np.array(rows)
    spread = table.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(3)
    print(f"{len(rows)} runs, mean ± std: as written {table[:, 0].mean():.1f} ± {spread[0]:.1f} "
          f"%, intended {table[:, 1].mean():.1f} ± {spread[1]:.1f} %, chance "
          f"{table[:, 2].mean():.1f} ± {spread[2]:.1f} %")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, help="label CSV (with --features)")
    parser.add_argument("--features", type=Path, help=".npz of ids and per-clip features")
    parser.add_argument("--data", type=Path, help="feature pickle (with --encoder-features)")
    parser.add_argument("--encoder-features", type=Path, help="a cache of train.py")
    parser.add_argument("--model-best", type=Path, nargs="+",
                        help="model_best.pt files of train.py runs")
    args = parser.parse_args(argv)
    if args.model_best:
        report_runs(args.model_best)
        return
    if args.encoder_features is not None and args.data is not None:
        features, labels = read_cache(args.data, args.encoder_features)
    elif args.labels is not None and args.features is not None:
        features, labels = read(args.labels, args.features)
    else:
        parser.error("give --labels and --features, or --data and --encoder-features")
    print(f"{len(labels)} clips; chance that another clip shares the anchor's rounded label: "
          f"{100 * chance_of(labels):.1f} %")
    for as_written, (share, dd, zero) in shares(features, labels).items():
        print(f"as_written={as_written}: similar-similar share with the anchor's label "
              f"{100 * share:.1f} %, dissimilar-dissimilar {100 * dd:.1f} %; sample 0 in the "
              f"similar-similar pool of {100 * zero:.1f} % of the anchors")

if __name__ == "__main__":
    main()
