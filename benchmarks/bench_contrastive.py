"""Speed and memory of the Multi NT-Xent loss against pytorch-metric-learning (not a test).

Forward + backward, in one run, on the same inputs:

(a) DMMSA's text-anchored pairs (B=1024, K=5, D=384): ``mtobjectives.functional.multi_nt_xent``
    against pml's ``NTXentLoss`` given an ``indices_tuple`` over the same pairs, both as pml's
    docs show it (all 6B embeddings in one batch) and in pml's cheapest use (anchors as
    ``embeddings``, candidates as ``ref_emb``).
(b) supervised contrastive from labels (N=512, D=128, 10 classes, ``form="out"``):
    ``multi_nt_xent_from_labels`` against pml's ``SupConLoss`` and against the floor of
    normalise + similarity matmul (forward and backward) alone.

Times are medians (and minima) over interleaved repeats after a warm-up, with a fixed number of
threads (default 1: on a small shared machine a second thread mostly measures the neighbours).
pml's NTXentLoss gives each (anchor, positive) pair its own term with only the negatives in the
denominator, so with two positives its value differs from Eq. 3: (a) compares time on the same
pairs, not values (the tests check equality where the math coincides).
Note: glibc returns freed memory of large blocks to the system and takes page faults to get it
back; an implementation that allocates several [N, N] buffers pays for that on every call (for
PyTorch on CPU, ``MALLOC_TRIM_THRESHOLD_``/``MALLOC_MMAP_THRESHOLD_`` or jemalloc avoid it).
Memory is the peak of live tensor storage allocated during forward + backward, tracked with a
``TorchDispatchMode`` (every storage an op creates is counted until it is freed); it shows the
per-anchor form growing as O(B K) and the label form as O(N^2).

Run: ``python benchmarks/bench_contrastive.py [--threads 1] [--repeats 30] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref
from collections.abc import Callable

import torch
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import mtobjectives as mt
from mtobjectives import functional as F

NAMES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
TEMPERATURE = 0.5


# ---------------------------------------------------------------------------------------------
# Measurement tools
# ---------------------------------------------------------------------------------------------


def measure(
    cases: dict[str, Callable[[], None]], repeats: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """(median, minimum) wall time in ms of each case, interleaved to share machine noise."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once among storages created inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.current -= nbytes
        self._live.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key, nbytes = storage._cdata, storage.nbytes()
                if key not in self._live and nbytes > 0:
                    self._live.add(key)
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_bytes(fn: Callable[[], None]) -> int:
    with PeakMemory() as meter:
        fn()
    return meter.peak


# ---------------------------------------------------------------------------------------------
# (a) text-anchored pairs
# ---------------------------------------------------------------------------------------------


def pair_cases(batch: int, dim: int) -> dict[str, Callable[[], None]]:
    features = {name: torch.randn(batch, dim, requires_grad=True) for name in NAMES}
    leaves = list(features.values())

    def clear() -> None:
        for leaf in leaves:
            leaf.grad = None

    def ours() -> None:
        pairs = mt.text_anchored_pairs(**features)
        F.multi_nt_xent(
            pairs.anchor, pairs.candidates, pairs.positive_mask, temperature=TEMPERATURE
        ).backward()
        clear()

    # The same pairs as index tuples: anchor i against candidate i of each other feature.
    order = ("V_s", "A_s", "T_d", "V_d", "A_d")  # positives first, as text_anchored_pairs
    rows = torch.arange(batch)
    pml = NTXentLoss(temperature=TEMPERATURE)

    # pml as documented: every embedding in one batch (anchors are rows 0..B-1).
    offsets = {name: (k + 1) * batch for k, name in enumerate(order)}
    full = (
        rows.repeat(2),
        torch.cat([rows + offsets["V_s"], rows + offsets["A_s"]]),
        rows.repeat(3),
        torch.cat([rows + offsets[name] for name in ("T_d", "V_d", "A_d")]),
    )

    def pml_full() -> None:
        embeddings = torch.cat([features["T_s"], *(features[name] for name in order)])
        pml(embeddings, indices_tuple=full).backward()
        clear()

    # pml's cheapest use: anchors as embeddings, candidates as ref_emb ([B, 5B] similarities).
    ref = {name: k * batch for k, name in enumerate(order)}
    cheap = (
        rows.repeat(2),
        torch.cat([rows + ref["V_s"], rows + ref["A_s"]]),
        rows.repeat(3),
        torch.cat([rows + ref[name] for name in ("T_d", "V_d", "A_d")]),
    )

    def pml_ref() -> None:
        ref_emb = torch.cat([features[name] for name in order])
        pml(features["T_s"], indices_tuple=cheap, ref_emb=ref_emb).backward()
        clear()

    return {"ours": ours, "pml NTXent (6B batch)": pml_full, "pml NTXent (ref_emb)": pml_ref}


# ---------------------------------------------------------------------------------------------
# (b) labels
# ---------------------------------------------------------------------------------------------


def label_cases(n: int, dim: int, classes: int) -> dict[str, Callable[[], None]]:
    embeddings = torch.randn(n, dim, requires_grad=True)
    labels = torch.randint(0, classes, (n,))
    upstream = torch.randn(n, n)
    supcon = SupConLoss(temperature=TEMPERATURE)

    def ours() -> None:
        F.multi_nt_xent_from_labels(
            embeddings, labels, temperature=TEMPERATURE, form="out"
        ).backward()
        embeddings.grad = None

    def pml() -> None:
        supcon(embeddings, labels).backward()
        embeddings.grad = None

    def floor() -> None:
        unit = torch.nn.functional.normalize(embeddings, dim=1)
        (unit @ unit.T).backward(upstream)
        embeddings.grad = None

    return {"ours": ours, "pml SupCon": pml, "floor (normalise + matmul)": floor}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def print_times(title: str, times: dict[str, tuple[float, float]]) -> None:
    ours_median, ours_min = times["ours"]
    print(f"\n{title}")
    print(f"  {'implementation':<28} {'median ms':>10} {'min ms':>9} {'/ ours (median)':>16}")
    for name, (median, minimum) in times.items():
        print(f"  {name:<28} {median:>10.3f} {minimum:>9.3f} {median / ours_median:>16.2f}")


def memory_tables() -> None:
    dim = 384
    print(
        "\nPeak tensor memory of forward + backward (inputs excluded), D=384 (pairs), 128 (labels)"
    )
    header = f"{'B':>6} {'K':>4} {'MiB':>9} {'bytes/(B*K)':>12} {'x size of candidates':>21}"
    print(f"  {'per-anchor form':<18} {header}")
    for batch, k in ((256, 5), (1024, 5), (4096, 5), (1024, 20)):
        anchor = torch.randn(batch, dim, requires_grad=True)
        candidates = torch.randn(batch, k, dim, requires_grad=True)
        mask = torch.zeros(batch, k, dtype=torch.bool)
        mask[:, :2] = True

        def run(a=anchor, c=candidates, m=mask) -> None:
            F.multi_nt_xent(a, c, m).backward()

        print_pair_memory(batch, k, dim, peak_bytes(run))

    print(f"  {'pml NTXent (6B)':<18} {header}")
    for batch in (256, 512, 1024):
        print_pair_memory(
            batch, 5, dim, peak_bytes(pair_cases(batch, dim)["pml NTXent (6B batch)"])
        )

    print(f"  {'label form':<18} {'N':>6} {'':>4} {'MiB':>9} {'bytes/N^2':>12}")
    for n in (256, 512, 1024, 2048):
        embeddings = torch.randn(n, 128, requires_grad=True)
        labels = torch.randint(0, 10, (n,))

        def run_labels(e=embeddings, y=labels) -> None:
            F.multi_nt_xent_from_labels(e, y, form="out").backward()

        peak = peak_bytes(run_labels)
        print(f"  {'':<18} {n:>6} {'':>4} {peak / 2**20:>9.2f} {peak / n**2:>12.2f}")


def print_pair_memory(batch: int, k: int, dim: int, peak: int) -> None:
    copies = peak / (batch * k * dim * 4)
    print(
        f"  {'':<18} {batch:>6} {k:>4} {peak / 2**20:>9.2f} {peak / (batch * k):>12.0f}"
        f" {copies:>21.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory tables")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"repeats={args.repeats}, warm-up={args.warmup}, temperature={TEMPERATURE}"
    )

    times_a = measure(pair_cases(1024, 384), args.repeats, args.warmup)
    print_times("(a) text-anchored pairs B=1024, K=5 (2 positives), D=384, form='in'", times_a)
    times_b = measure(label_cases(512, 128, 10), args.repeats * 5, args.warmup)
    print_times("(b) labels N=512, D=128, 10 classes, form='out'", times_b)

    print("\nTargets (ratio of medians; ratio of minima in brackets)")
    ours_a, ours_b = times_a["ours"], times_b["ours"]
    pml_a = min((v for k, v in times_a.items() if k.startswith("pml")), key=lambda t: t[0])
    pml_b, floor = times_b["pml SupCon"], times_b["floor (normalise + matmul)"]
    rows = [
        ("(a) fastest pml / ours", pml_a, ours_a, ">= 2"),
        ("(b) pml SupCon / ours", pml_b, ours_b, ">= 2"),
        ("(b) ours / matmul floor", ours_b, floor, "<= 1.3"),
    ]
    for label, top, bottom, target in rows:
        print(
            f"  {label:<26} = {top[0] / bottom[0]:6.2f}  [{top[1] / bottom[1]:5.2f}]"
            f"  (target {target})"
        )
    if not args.no_memory:
        memory_tables()


if __name__ == "__main__":
    main()
