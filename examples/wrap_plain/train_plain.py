"""Wrap a plain PyTorch model with the DMMSA objective.

The user's model is three small encoders, one per modality, that pool a sequence into a vector.
Attaching the DMMSA objective takes two things: a :class:`~mtobjectives.heads.DecompositionHead`
on the pooled features and :meth:`mtobjectives.MultiTaskObjective.dmmsa` as the loss, with
``objective.step()`` at the end of each epoch (one GDWG stage).

Run ``python examples/wrap_plain/train_plain.py --epochs 10``; it trains on toy data made below.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

import mtobjectives as mt
from mtobjectives.heads import DecompositionHead
from mtobjectives.metrics import msa_metrics

DIMS = {"T": 32, "A": 5, "V": 20}  # per-step feature widths, MOSI-like for audio and vision


class ThreeEncoders(nn.Module):
    """The user's own model: a per-modality ``Linear -> GELU``, mean-pooled over time."""

    def __init__(self, dims: dict[str, int] = DIMS, hidden: int = 64) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, hidden), nn.GELU()) for m, d in dims.items()}
        )

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: enc(inputs[m]).mean(dim=1) for m, enc in self.encoders.items()}


def make_toy_data(n: int, *, seed: int, length: int = 8) -> tuple[dict[str, Tensor], Tensor]:
    """Sequences whose mean carries a unimodal sentiment; the label mixes them, text first."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, generator=g)
    inputs, sentiment = {}, {}
    for m, d in DIMS.items():
        sentiment[m] = 0.8 * shared + 0.6 * torch.randn(n, generator=g)
        direction = torch.randn(d, generator=torch.Generator().manual_seed(len(m) * 97 + d))
        inputs[m] = torch.randn(n, length, d, generator=g) + sentiment[m][:, None, None] * direction
    mix = 0.6 * sentiment["T"] + 0.25 * sentiment["A"] + 0.15 * sentiment["V"]
    return inputs, 3.0 * torch.tanh(mix)


def train(epochs: int = 10, *, seed: int = 0, batch_size: int = 32, log=print) -> list[dict]:
    """Train the wrapped model; return one record per epoch (losses, GDWG weights, test MAE)."""
    torch.manual_seed(seed)
    inputs, labels = make_toy_data(512, seed=seed)
    test_inputs, test_labels = make_toy_data(256, seed=seed + 1)

    # The wrapping: the user's backbone, the DMMSA head and objective (small widths for toy data).
    model = nn.Sequential(
        ThreeEncoders(),
        DecompositionHead({m: 64 for m in DIMS}, feature_dim=64, fusion_hidden=(64, 32),
                          unimodal_hidden=(32,)),
    )
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    history = []
    for epoch in range(epochs):
        model.train()
        totals: dict[str, float] = {}
        batches = torch.randperm(len(labels)).split(batch_size)
        for idx in batches:
            result = objective(model({m: x[idx] for m, x in inputs.items()}), {"M": labels[idx]})
            optimizer.zero_grad()
            result.loss.backward()
            optimizer.step()
            for name, value in {"loss": result.loss.detach(), **result.terms}.items():
                totals[name] = totals.get(name, 0.0) + float(value) / len(batches)
        weights = {k: float(v) for k, v in result.weights.items()}  # λ used in this epoch
        objective.step()  # end of a GDWG stage: λ for the next epoch
        model.eval()
        with torch.no_grad():
            prediction = model(test_inputs)["prediction"]
        record = {"epoch": epoch + 1, **totals, "weights": weights,
                  "test": msa_metrics(prediction, test_labels, dataset="mosi")}
        history.append(record)
        log(f"epoch {epoch + 1:3d}  loss {totals['loss']:.4f}  "
            + "  ".join(f"λ_{k} {weights[k]:.3f}" for k in ("Uni", "CL"))
            + f"  test MAE {record['test']['MAE']:.4f}")
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
