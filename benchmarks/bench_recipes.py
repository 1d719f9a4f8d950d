"""The recipes against their originals on the same tensors, and ConFEDE's selector at MOSEI size.

Each line is a ratio measured in this run (median of ``--repeats``, forward and backward):

- MISA: ``mt.recipes.misa`` against MMSA's ``CMD``/``DiffLoss``/``MSE`` composed as MMSA's
  ``do_train`` does (batch 16, 128-wide representations);
- ConFEDE's contrastive term: ``mt.recipes.confede_contrastive`` against ConFEDE's loop of
  pytorch-metric-learning ``NTXentLoss`` calls, one per anchor (batch 16, 384-wide features);
- Self-MM: the recipe (loss + label update) against MMSA's ``SELF_MM`` methods on a batch of 16
  of a 1,284-sample split;
- ConFEDE's selector rebuild: ``ConFEDESampler.rebuild`` (blocked ranking) against the full
  similarity matrix and per-row sort that ConFEDE's code does (re-derived), time and peak
  memory at ``--samples`` (default MOSEI's 16,326 training clips, 2,304-wide T;V;A features).

Ratios above 1 mean the library is faster (or lighter). Usage::

    python benchmarks/bench_recipes.py                 # full sizes (about a minute on 2 cores)
    python benchmarks/bench_recipes.py --small         # tiny sizes, checks the script
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import mtobjectives as mt

FEATURES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def bench_misa(batch: int, dim: int, repeats: int) -> float:
    from MMSA.trains.singleTask.MISA import CMD, MSE, DiffLoss

    g = torch.Generator().manual_seed(0)
    feats = {f: torch.randn(batch, dim, generator=g) for f in FEATURES}
    recon = {m: torch.randn(batch, dim, generator=g) for m in "TAV"}
    target = {m: torch.randn(batch, dim, generator=g) for m in "TAV"}
    pred, y = torch.randn(batch, generator=g), torch.randn(batch, generator=g)
    objective = mt.recipes.misa()
    diff, cmd, mse = DiffLoss(), CMD(), MSE()

    def ours() -> None:
        f = dict(zip(FEATURES, leaves(*feats.values())))
        objective({"prediction": pred, "features": f, "reconstruction": recon,
                   "reconstruction_target": target}, {"M": y}).loss.backward()

    def mmsa() -> None:
        f = dict(zip(FEATURES, leaves(*feats.values())))
        loss = torch.nn.MSELoss()(pred.view(-1, 1), y.view(-1, 1))
        d = (diff(f["T_d"], f["T_s"]) + diff(f["V_d"], f["V_s"]) + diff(f["A_d"], f["A_s"])
             + diff(f["A_d"], f["T_d"]) + diff(f["A_d"], f["V_d"]) + diff(f["T_d"], f["V_d"]))
        s = (cmd(f["T_s"], f["V_s"], 5) + cmd(f["T_s"], f["A_s"], 5)
             + cmd(f["A_s"], f["V_s"], 5)) / 3.0
        r = sum(mse(recon[m], target[m]) for m in "TVA") / 3.0
        (loss + 0.1 * d + 0.3 * s + r).backward()

    return timed(mmsa, repeats) / timed(ours, repeats)


def bench_confede(batch: int, dim: int, repeats: int) -> float:
    from pytorch_metric_learning.losses import NTXentLoss

    g = torch.Generator().manual_seed(1)
    feats = {f: torch.randn(7 * batch, dim, generator=g) for f in FEATURES}
    order = ("T_s", "V_s", "A_s", "T_d", "V_d", "A_d")
    tuple_ = tuple(torch.tensor(v) for v in (
        [0, 0, 7, 7, 14, 14, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6],
        [1, 2, 8, 9, 15, 16, 7, 14, 8, 15, 9, 16, 10, 17, 11, 18, 12, 19, 13, 20],
        [0, 0, 0, 0, 7, 7, 7, 7, 14, 14, 14, 14, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4,
         5, 5, 5, 6, 6, 6],
        [3, 4, 5, 6, 10, 11, 12, 13, 17, 18, 19, 20, 21, 28, 35, 22, 29, 36, 23, 30, 37, 24, 31,
         38, 25, 32, 39, 26, 33, 40, 27, 34, 41]))
    ntxent = NTXentLoss(temperature=0.5)

    def ours() -> None:
        f = dict(zip(FEATURES, leaves(*feats.values())))
        mt.recipes.confede_contrastive(f, batch).backward()

    def theirs() -> None:  # ConFEDE's loop: one NTXentLoss call per anchor's 42 rows
        f = dict(zip(FEATURES, leaves(*feats.values())))
        total = 0.0
        for i in range(batch):
            block = torch.cat([torch.cat((f[n][i:i + 1], f[n][batch + 6 * i:batch + 6 * i + 6]))
                               for n in order])
            total = total + ntxent(block, torch.zeros(42, dtype=torch.long),
                                   indices_tuple=tuple_)
        (total / batch).backward()

    return timed(theirs, repeats) / timed(ours, repeats)


def bench_self_mm(samples: int, batch: int, repeats: int) -> float:
    from easydict import EasyDict
    from MMSA.trains.multiTask.SELF_MM import SELF_MM

    dims = {"M": 128, "T": 32, "A": 16, "V": 32}
    g = torch.Generator().manual_seed(2)
    labels = torch.randn(samples, generator=g).clamp(-3, 3)
    args = EasyDict(train_mode="regression", dataset_name="mosi", train_samples=samples,
                    post_fusion_dim=128, post_text_dim=32, post_audio_dim=16, post_video_dim=32,
                    device="cpu", H=3.0, excludeZero=True)
    theirs_trainer = SELF_MM(args)
    theirs_trainer.init_labels(torch.arange(samples), labels)
    objective = mt.recipes.self_mm(labels, dims)
    objective.step()  # epoch 2: the label update runs
    index = torch.randperm(samples, generator=g)[:batch]
    feats = {s: torch.randn(batch, d, generator=g) for s, d in dims.items()}
    preds = {s: torch.randn(batch, generator=g) for s in "MTAV"}
    names = {"M": "fusion", "T": "text", "A": "audio", "V": "vision"}

    def ours() -> None:
        p = dict(zip("MTAV", leaves(*preds.values())))
        outputs = {"prediction": p["M"], "fusion_feature": feats["M"],
                   "unimodal": {f"{m}_d": p[m] for m in "TAV"},
                   "features": {f"{m}_d": feats[m] for m in "TAV"}}
        objective(outputs, {"M": labels[index], "index": index}).loss.backward()

    def theirs() -> None:
        p = dict(zip("MTAV", leaves(*preds.values())))
        loss = 0.0
        for s in "MTAV":
            loss += theirs_trainer.weighted_loss(p[s], theirs_trainer.label_map[names[s]][index],
                                                 indexes=index, mode=names[s])
        loss.backward()
        theirs_trainer.update_labels(feats["M"], feats["T"], feats["A"], feats["V"], 2, index,
                                     None)
        theirs_trainer.update_features(feats["M"], feats["T"], feats["A"], feats["V"], index)
        theirs_trainer.update_centers()

    return timed(theirs, repeats) / timed(ours, repeats)


def full_matrix_rebuild(features: torch.Tensor) -> torch.Tensor:
    """ConFEDE's ranking: the N x N cosine matrix, then a sort of every row (re-derived)."""
    unit = torch.nn.functional.normalize(features, dim=1, eps=1e-6)
    return torch.sort(unit @ unit.T, dim=1, descending=True).indices


def _rebuild_child(way: str, samples: int, dim: int) -> None:
    """Run one rebuild in this (fresh) process; print its seconds and peak resident memory."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(samples, dim, generator=g)
    labels = (torch.arange(samples) % 7 - 3).float()
    baseline = _peak_rss()
    start = time.perf_counter()
    if way == "recipe":
        mt.recipes.ConFEDESampler().rebuild(features, labels)
    else:
        full_matrix_rebuild(features)
    print(f"{time.perf_counter() - start} {_peak_rss() - baseline}")


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_rebuild(samples: int, dim: int) -> dict[str, tuple[float, float]]:
    """Seconds and peak memory above the inputs of each rebuild, each in a fresh process."""
    out = {}
    for way in ("recipe", "full"):
        done = subprocess.run([sys.executable, __file__, "--rebuild-child", way,
                               "--samples", str(samples), "--dim", str(dim)],
                              capture_output=True, text=True, check=True)
        seconds, peak = done.stdout.split()[-2:]
        out[way] = (float(seconds), float(peak))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16326, help="training clips (MOSEI)")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--dim", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rebuild-child", choices=("recipe", "full"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rebuild_child:
        _rebuild_child(args.rebuild_child, args.samples, args.dim)
        return
    samples = 500 if args.small else args.samples
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"MISA objective, MMSA's classes / recipe:            "
          f"{bench_misa(16, 128, args.repeats):6.2f}x")
    print(f"ConFEDE contrastive, per-anchor pml loop / recipe:  "
          f"{bench_confede(16, 32 if args.small else 384, args.repeats):6.2f}x")
    print(f"Self-MM loss + label update, MMSA / recipe:          "
          f"{bench_self_mm(1284, 16, args.repeats):6.2f}x")
    rebuild = bench_rebuild(samples, 64 if args.small else 2304)
    (ours_s, ours_peak), (full_s, full_peak) = rebuild["recipe"], rebuild["full"]
    print(f"ConFEDE selector rebuild at {samples} clips, peak memory above the inputs: recipe "
          f"{ours_s:.1f} s, {ours_peak / 2**20:.0f} MiB; full matrix + sort (ConFEDE's way) "
          f"{full_s:.1f} s, {full_peak / 2**20:.0f} MiB")
    print(f"ratios (original / recipe): time {full_s / ours_s:.2f}x, memory "
          f"{full_peak / max(ours_peak, 1):.1f}x")


if __name__ == "__main__":
    main()
