"""Draw how GDWG's weights move over a real training run (``docs/_static/gdwg_weights.png``).

Trains the ``examples/wrap_plain`` model (three small encoders, ``DecompositionHead``, the DMMSA
objective with GDWG at its defaults) on its toy data and plots, per epoch, the weights
:math:`\\lambda_{Uni}, \\lambda_{CL}` and the relative losses :math:`L_k(t)/L_k(1)` that drive
them. A few minutes on a laptop CPU::

    python docs/scripts/plot_gdwg.py --epochs 30 --out docs/_static/gdwg_weights.png

``--csv`` also writes the numbers that were plotted.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _train_plain():
    """``examples/wrap_plain/train_plain.py``, imported from its file."""
    spec = importlib.util.spec_from_file_location(
        "train_plain", ROOT / "examples" / "wrap_plain" / "train_plain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static" / "gdwg_weights.png")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = _train_plain().train(args.epochs, seed=args.seed)
    epochs = [r["epoch"] for r in history]
    tasks = ("Uni", "CL")
    weights = {k: [r["weights"][k] for r in history] for k in tasks}
    relative = {k: [r[k] / history[0][k] for r in history] for k in tasks}

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 4.8), sharex=True, dpi=110)
    colors = {"Uni": "tab:blue", "CL": "tab:orange"}
    for k in tasks:
        top.plot(epochs, weights[k], marker="o", markersize=3, color=colors[k],
                 label=rf"$\lambda_{{\mathrm{{{k}}}}}$")
        bottom.plot(epochs, relative[k], marker="o", markersize=3, color=colors[k],
                    label=rf"$L_{{\mathrm{{{k}}}}}(t) / L_{{\mathrm{{{k}}}}}(1)$")
    top.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    top.set_ylabel("weight used in epoch")
    top.set_title(r"GDWG ($\tau = 2$, weights sum to 1) on the wrap_plain toy run", fontsize=10)
    top.legend(loc="best", fontsize=9)
    bottom.set_ylabel("relative loss")
    bottom.set_xlabel("epoch (= GDWG stage)")
    bottom.legend(loc="best", fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")

    if args.csv is not None:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "lambda_Uni", "lambda_CL", "L_Uni", "L_CL", "L_MSR",
                             "L_MSC", "test_MAE"])
            for r in history:
                writer.writerow([r["epoch"], r["weights"]["Uni"], r["weights"]["CL"], r["Uni"],
                                 r["CL"], r["MSR"], r["MSC"], r["test"]["MAE"]])


if __name__ == "__main__":
    main()
