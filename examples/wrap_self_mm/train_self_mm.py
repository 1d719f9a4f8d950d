"""Train MMSA's Self-MM with the DMMSA objective, through ``DecompositionHead``.

Self-MM (Yu et al., 2021) is taken unchanged from the PyPI package ``mmsa`` (2.2.1): its BERT text
encoder and LSTM audio/vision encoders, with Self-MM's own optimiser settings. Its ``forward``
returns a dict whose ``"Feature_t"``, ``"Feature_a"``, ``"Feature_v"`` are the unimodal features
(after Self-MM's first post-encoder layer); a :class:`~mtobjectives.heads.DecompositionHead` on
them gives what the DMMSA objective reads, and the objective replaces Self-MM's loss.

Run::

    python examples/wrap_self_mm/train_self_mm.py --data MOSI/unaligned_50.pkl \
        --text-model /path/to/bert-base-uncased

``--data`` is an MMSA feature pickle (``text_bert``, ``audio``, ``vision`` and their lengths),
read with :func:`mtobjectives.io.load_pickle_safely` (it runs no code from the file);
``--text-model`` is a local Hugging Face BERT folder (Self-MM's ``BertTextEncoder`` loads it with
``from_pretrained``). Needs ``pip install --no-deps mmsa==2.2.1`` plus ``easydict pandas
nvidia-ml-py scikit-learn transformers``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import mtobjectives as mt
from mtobjectives.heads import DecompositionHead
from mtobjectives.io import PickleLoadError, load_pickle_safely
from mtobjectives.metrics import msa_metrics


def self_mm_config(dataset: str, text_model: str | Path, feature_dims: tuple[int, int, int]):
    """Self-MM's own configuration for ``dataset``, pointed at a local text model."""
    from MMSA.config import get_config_regression  # imported here: mmsa is heavy to import
    from transformers import AutoConfig

    config = get_config_regression("self_mm", dataset)
    config.pretrained = str(text_model)
    config.feature_dims = list(feature_dims)
    config.text_out = AutoConfig.from_pretrained(str(text_model)).hidden_size  # 768 for BERT-base
    return config


# --- wrapping: begin ---
class SelfMMWithDMMSA(nn.Module):
    """Self-MM's encoders; a DMMSA head on Self-MM's unimodal features."""

    def __init__(self, config: Any, num_classes: int = 3) -> None:
        super().__init__()
        from MMSA.models.multiTask.SELF_MM import SELF_MM

        self.self_mm = SELF_MM(config)
        widths = {"T": config.post_text_dim, "A": config.post_audio_dim,
                  "V": config.post_video_dim}
        self.head = DecompositionHead(widths, num_classes=num_classes)

    def forward(self, text: Tensor, audio: tuple[Tensor, Tensor], vision: tuple[Tensor, Tensor]):
        out = self.self_mm(text, audio, vision)  # {"M", "T", "A", "V", "Feature_t", ...}
        return self.head({"T": out["Feature_t"], "A": out["Feature_a"], "V": out["Feature_v"]})
# --- wrapping: end ---


def self_mm_optimizer(model: SelfMMWithDMMSA, config: Any) -> torch.optim.Optimizer:
    """Self-MM's optimiser (Adam, one learning rate per part); the head joins "other"."""
    parts = {"bert": model.self_mm.text_model, "audio": model.self_mm.audio_model,
             "video": model.self_mm.video_model}
    seen = {id(p) for part in parts.values() for p in part.parameters()}
    groups = [
        {"params": list(part.parameters()), "lr": config[f"learning_rate_{name}"],
         "weight_decay": config[f"weight_decay_{name}"]}
        for name, part in parts.items()
    ]
    other = [p for p in model.parameters() if id(p) not in seen]
    groups.append({"params": other, "lr": config.learning_rate_other,
                   "weight_decay": config.weight_decay_other})
    return torch.optim.Adam(groups)


def load_split(split: dict[str, Any]) -> dict[str, Any]:
    """One split of an MMSA pickle as tensors (non-finite features are set to 0, as MMSA does)."""
    def features(key: str) -> Tensor:
        array = np.asarray(split[key], dtype=np.float32)
        bad = int((~np.isfinite(array)).sum())
        if bad:
            print(f"{key}: replaced {bad} non-finite value(s) by 0")
        return torch.from_numpy(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0))

    def lengths(key: str, full: int) -> Tensor:
        if split.get(key) is None:  # aligned files carry no lengths: the whole sequence counts
            return torch.full((len(split["regression_labels"]),), full, dtype=torch.long)
        return torch.as_tensor(np.asarray(split[key]), dtype=torch.long).clamp(min=1)

    audio, vision = features("audio"), features("vision")
    labels = {"M": torch.as_tensor(np.asarray(split["regression_labels"], dtype=np.float32))}
    for m in ("T", "A", "V"):  # CH-SIMS has unimodal labels
        if f"regression_labels_{m}" in split:
            labels[m] = torch.as_tensor(np.asarray(split[f"regression_labels_{m}"], np.float32))
    return {
        "text": torch.as_tensor(np.asarray(split["text_bert"]), dtype=torch.long),
        "audio": audio, "audio_lengths": lengths("audio_lengths", audio.shape[1]),
        "vision": vision, "vision_lengths": lengths("vision_lengths", vision.shape[1]),
        "labels": labels,
    }


def batch_inputs(data: dict[str, Any], idx: Tensor, device: torch.device):
    """Self-MM's forward arguments for the samples ``idx`` (lengths stay on the CPU)."""
    return (
        data["text"][idx].to(device),
        (data["audio"][idx].to(device), data["audio_lengths"][idx]),
        (data["vision"][idx].to(device), data["vision_lengths"][idx]),
    )


def train_epoch(model, objective, optimizer, data, *, batch_size: int, device) -> float:
    """One epoch; returns the mean loss. The objective's ``step()`` is left to the caller."""
    model.train()
    objective.train()
    batches = torch.randperm(len(data["labels"]["M"])).split(batch_size)
    total = 0.0
    for idx in batches:
        targets = {k: v[idx].to(device) for k, v in data["labels"].items()}
        result = objective(model(*batch_inputs(data, idx, device)), targets)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        total += float(result.loss.detach()) / len(batches)
    return total


@torch.no_grad()
def predict(model, data, *, batch_size: int, device) -> Tensor:
    model.eval()
    idx = torch.arange(len(data["labels"]["M"]))
    return torch.cat([model(*batch_inputs(data, i, device))["prediction"].cpu()
                      for i in idx.split(batch_size)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="MMSA feature pickle")
    parser.add_argument("--text-model", required=True, type=Path, help="local BERT folder")
    parser.add_argument("--dataset", default="mosi", choices=("mosi", "mosei", "sims"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="default: Self-MM's")
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    try:  # a restricted unpickler: a feature file from a mirror cannot run code
        raw = load_pickle_safely(args.data)
    except (OSError, PickleLoadError) as error:
        raise SystemExit(f"--data: {error}") from None
    splits = {name: load_split(split) for name, split in raw.items()}
    train = splits["train"]
    dims = (768, train["audio"].shape[-1], train["vision"].shape[-1])
    config = self_mm_config(args.dataset, args.text_model, dims)
    batch_size = args.batch_size or config.batch_size
    device = torch.device(args.device)

    model = SelfMMWithDMMSA(config).to(device)
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset(args.dataset))
    optimizer = self_mm_optimizer(model, config)

    best = {"MAE": float("inf")}
    best_state = None
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, objective, optimizer, train, batch_size=batch_size, device=device)
        objective.step()  # one GDWG stage per epoch
        valid = msa_metrics(predict(model, splits["valid"], batch_size=batch_size, device=device),
                            splits["valid"]["labels"]["M"], dataset=args.dataset)
        weights = dict(zip(objective.dynamic, objective.weighter.weights.tolist()))
        print(f"epoch {epoch}: train loss {loss:.4f}  valid MAE {valid['MAE']:.4f}  "
              + "  ".join(f"λ_{k} {w:.3f}" for k, w in weights.items()))  # for the next epoch
        if valid["MAE"] < best["MAE"]:
            best = {"epoch": epoch, **valid}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    results: dict[str, Any] = {"best_valid": best}
    if "test" in splits:
        results["test"] = msa_metrics(
            predict(model, splits["test"], batch_size=batch_size, device=device),
            splits["test"]["labels"]["M"], dataset=args.dataset)
    print(json.dumps(results, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
