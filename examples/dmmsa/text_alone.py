"""The pre-trained text model alone: the end of the unimodal text stage, before any fusion.

``python -m dmmsa.compare`` runs this once per fold × seed, after ``train.py --stage pretrain``,
with that run's arguments. It loads ``OUT/seed<s>/pretrained.pt`` (whose text encoder and
text regressor are those of the text pre-training's best validation epoch), predicts the
*multimodal* label ``M`` of the validation and test splits with the text encoder and its
pre-training regressor alone (``model.UnimodalRegressor(model, "T")``), and writes
``OUT/text_alone.json``: the row every fusion objective must beat, and the validation MAE that
says what the fusion stage adds. Nothing is trained. Usage::

    python examples/dmmsa/text_alone.py --config mosi400 --data F.pkl --seeds 1 \\
        --stage pretrain --out OUT/fold0/seed1/pretrain
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from dmmsa import cli, evaluation, train
from dmmsa import model as model_lib
from dmmsa.reporting import write_json

__all__ = ["evaluate", "main"]


def evaluate(argv: list[str], label: str = "M") -> dict[str, Any]:
    """The text model of the seed's ``pretrained.pt`` on the valid and test splits.

    Args:
        argv: the ``train.py --stage pretrain`` arguments of the run that wrote the weights.
        label: the label predicted (``"M"``, the multimodal label every fusion objective is
            measured against; ``"T"`` reproduces the pre-training's own validation numbers on
            data with unimodal labels).

    Returns:
        ``{"seed", "label", "weights", "valid", "test", "valid_samples", "test_samples",
        "wall_seconds"}`` of the first seed, or ``{"skipped": why}`` when the run has no
        text pre-training.

    Raises:
        FileNotFoundError: ``pretrained.pt`` is missing.
    """
    started = time.perf_counter()
    args = cli.parse_args(argv)
    torch.set_num_threads(args.threads or 1)
    run = train.setup(args)
    if "pretrain_T" not in run.config.phases:
        return {"skipped": f"no text pre-training (phases {list(run.config.phases)})"}
    seed = run.experiment.train.seeds[0]
    path = args.out / f"seed{seed}" / "pretrained.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no pre-trained weights; run train.py --stage pretrain "
                                "with the same arguments first")
    model = model_lib.DMMSAModel(run.experiment.model).to(run.dist.device)
    model.load_state_dict(torch.load(path, map_location=run.dist.device, weights_only=True))
    net = model_lib.UnimodalRegressor(model, "T")
    batch_size = run.experiment.train.pretrain["T"].batch_size
    result: dict[str, Any] = {"seed": seed, "label": label, "weights": path.name}
    for split in ("valid", "test"):
        predicted = evaluation.predict(net, run.datasets[split], batch_size, label, run)
        result[split] = evaluation.metrics_of(predicted, run.metric_set)
        result[f"{split}_samples"] = len(predicted["index"])
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    run.dist.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """Evaluate and write ``OUT/text_alone.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    result = evaluate(argv)
    out = cli.parse_args(argv).out
    write_json(result, out / "text_alone.json")
    print({key: result[key] for key in ("valid", "skipped") if key in result}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
