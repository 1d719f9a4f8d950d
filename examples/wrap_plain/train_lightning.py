"""The plain example as a PyTorch Lightning ``LightningModule``.

The objective is an attribute of the module, so Lightning moves it to the device and saves GDWG's
state in every checkpoint; ``on_train_epoch_end`` ends a GDWG stage and logs the new weights.
Needs ``pip install lightning`` (not a dependency of mtobjectives or of its tests).

Run ``python examples/wrap_plain/train_lightning.py --epochs 10``; the logged values are written
to ``lightning_logs/.../metrics.csv`` under ``--root``.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from train_plain import DIMS, ThreeEncoders, make_toy_data

import mtobjectives as mt
from mtobjectives.heads import DecompositionHead


class DMMSAModule(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.model = nn.Sequential(
            ThreeEncoders(),
            DecompositionHead({m: 64 for m in DIMS}, feature_dim=64, fusion_hidden=(64, 32),
                              unimodal_hidden=(32,)),
        )
        self.objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))

    def training_step(self, batch, batch_idx):
        inputs, label = batch
        result = self.objective(self.model(inputs), {"M": label})
        self.log("train_loss", result.loss, on_step=False, on_epoch=True)
        self.log_dict({f"L_{k}": v for k, v in result.terms.items()}, on_step=False, on_epoch=True)
        return result.loss

    def on_train_epoch_end(self) -> None:
        self.objective.step()  # one GDWG stage per epoch; the weights for the next epoch:
        for name, weight in zip(self.objective.dynamic, self.objective.weighter.weights):
            self.log(f"lambda_{name}", weight)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", default="runs/lightning")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    inputs, labels = make_toy_data(512, seed=0)
    samples = [({m: x[i] for m, x in inputs.items()}, labels[i]) for i in range(len(labels))]
    loader = torch.utils.data.DataLoader(samples, batch_size=32, shuffle=True)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=CSVLogger(args.root),
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(DMMSAModule(), loader)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(logged)
    return logged


if __name__ == "__main__":
    main()
