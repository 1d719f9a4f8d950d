"""How much of a training step the DMMSA objective costs, and training throughput.

MOSI-sized inputs (the unaligned MMSA file): batch 16, text 50 tokens, audio 375 x 5, vision
500 x 20, d_model 768, with the text read either by a BERT-base-sized model built from
``BertConfig()`` (random weights, nothing downloaded) or as precomputed 768-d token features.

Three timings, interleaved in one run on the same batch (median of ``--repeats``):

- model: the model's forward and backward (a plain sum of its outputs as the loss);
- objective: ``MultiTaskObjective.dmmsa`` (GDWG) forward and backward alone, on detached copies
  of the model's outputs (MSR + MSC + unimodal + Multi NT-Xent + the weighter);
- train step: forward, objective, backward and an AdamW step (throughput in samples/s).

The objective's share is objective / model (target: under 2 % on CPU). ``--recipe`` times
another recipe of :mod:`mtobjectives.recipes` in place of DMMSA's (``misa`` with random
reconstructions of the inputs' width, ``self_mm`` on a 1,284-sample label map, ``confede`` on
the outputs repeated into 7B rows, as if six samples were retrieved per anchor); the train step
is timed for the recipes whose inputs the model produces (``dmmsa``, ``plain``).

Usage::

    python benchmarks/bench_objective.py                    # CPU, BERT-base text
    python benchmarks/bench_objective.py --text features    # CPU, text as token features
    python benchmarks/bench_objective.py --device cuda --bf16 --steps 30
    python benchmarks/bench_objective.py --small            # tiny sizes, to check the script
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

import mtobjectives as mt
from dmmsa import configs
from dmmsa import model as dmmsa_model

FEATURES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or all (cpu and cuda)")
    parser.add_argument("--text", choices=("bert", "features"), default="bert")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measure")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps for throughput (default: --repeats)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA; CPU if asked)")
    parser.add_argument("--small", action="store_true",
                        help="tiny model and sequences: checks the script in seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--recipe", default="dmmsa",
                        choices=("dmmsa", "plain", "misa", "self_mm", "confede"))
    return parser.parse_args(argv)


def sizes(small: bool) -> dict[str, int]:
    if small:
        return {"text_len": 12, "audio_len": 30, "vision_len": 40, "d_model": 32}
    return {"text_len": 50, "audio_len": 375, "vision_len": 500, "d_model": 768}


def build_model(args: argparse.Namespace) -> dmmsa_model.DMMSAModel:
    """The MOSI preset at full width; BERT-base from its config (no download) or text features."""
    s = sizes(args.small)
    config = configs.get_config("mosi").model
    config.d_model = s["d_model"]
    config.text_source = args.text
    if args.small:
        config.feature_dim, config.fusion_hidden, config.unimodal_hidden = 16, (32, 16), (8,)
        config.pretrain_hidden = (16,)
    backbone = None
    if args.text == "bert":
        from transformers import BertConfig, BertModel

        bert = BertConfig()  # BERT-base: 12 layers, 768 hidden, 12 heads, vocab 30522
        if args.small:
            bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, vocab_size=1000)
        backbone = BertModel(bert)
    return dmmsa_model.DMMSAModel(config, text_backbone=backbone)


def make_batch(args: argparse.Namespace, net: dmmsa_model.DMMSAModel, seed: int = 0) -> dict:
    """A random MOSI-shaped batch in the layout of ``batching.MSADataset``'s collate."""
    g = torch.Generator().manual_seed(seed)
    s, b = sizes(args.small), args.batch_size

    def lengths(n: int) -> torch.Tensor:
        return torch.randint(n // 2, n + 1, (b,), generator=g)

    text_lengths = lengths(s["text_len"])
    mask = (torch.arange(s["text_len"]) < text_lengths.unsqueeze(1)).long()
    vocab = 1000 if args.small else 30522
    ids = torch.randint(1000 if not args.small else 5, vocab, (b, s["text_len"]), generator=g)
    return {
        "text_bert": torch.stack([ids * mask, mask, torch.zeros_like(mask)], dim=1),
        "text": torch.randn(b, s["text_len"], net.config.text_dim, generator=g),
        "audio": torch.randn(b, s["audio_len"], net.config.audio_dim, generator=g),
        "audio_lengths": lengths(s["audio_len"]),
        "vision": torch.randn(b, s["vision_len"], net.config.vision_dim, generator=g),
        "vision_lengths": lengths(s["vision_len"]),
        "labels": {"M": torch.rand(b, generator=g) * 6 - 3},
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def detached_outputs(out: dict) -> dict:
    """Leaf copies of the model outputs, so that the objective's backward stops at them."""

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().float().requires_grad_(True)

    return {
        "prediction": leaf(out["prediction"]),
        "logits": leaf(out["logits"]),
        "features": {k: leaf(v) for k, v in out["features"].items()},
        "unimodal": {k: leaf(v) for k, v in out["unimodal"].items()},
    }


def output_sum(out: dict) -> torch.Tensor:
    """A loss that touches every output and costs nothing: isolates the model's own work."""
    total = out["prediction"].float().sum() + out["logits"].float().sum()
    for name in FEATURES:
        if name in out["features"]:
            total = total + out["features"][name].float().sum() + out["unimodal"][name].sum()
    return total


def build_recipe(name: str, width: int) -> torch.nn.Module:
    """The recipe's objective, with the settings of a MOSI run (``width``: a feature's)."""
    if name == "dmmsa":
        return mt.recipes.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))
    if name == "self_mm":
        labels = torch.linspace(-3, 3, 1284)
        dims = {"M": 6 * width, "T": width, "A": width, "V": width}
        objective = mt.recipes.self_mm(labels, dims)
        objective.step()  # epoch 2: the label update runs too
        return objective
    return {"plain": mt.recipes.plain, "misa": mt.recipes.misa,
            "confede": mt.recipes.confede}[name]()


def recipe_targets(name: str, labels: torch.Tensor) -> dict:
    if name == "self_mm":
        return {"M": labels, "index": torch.arange(len(labels), device=labels.device)}
    return {"M": labels}


def recipe_inputs(name: str, outputs: dict) -> dict:
    """What the recipe reads beyond the model's outputs (random, of the right shapes)."""
    if name == "misa":
        batch, device = outputs["prediction"].shape[0], outputs["prediction"].device
        outputs["reconstruction"] = {m: torch.randn(batch, 768, device=device,
                                                    requires_grad=True) for m in "TAV"}
        outputs["reconstruction_target"] = {m: torch.randn(batch, 768, device=device)
                                            for m in "TAV"}
    if name == "confede":  # six retrieved samples per anchor: 7B rows
        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.detach().repeat(7, *[1] * (t.dim() - 1)).requires_grad_(True)

        outputs = {"prediction": rows(outputs["prediction"]), "logits": rows(outputs["logits"]),
                   "features": {k: rows(v) for k, v in outputs["features"].items()},
                   "unimodal": {k: rows(v) for k, v in outputs["unimodal"].items()}}
    return outputs


def bench_device(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    net = build_model(args).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5, weight_decay=1e-3)
    batch = dmmsa_model.batch_to(make_batch(args, net), device)
    targets = recipe_targets(args.recipe, batch["labels"]["M"])
    use_bf16 = args.bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    def model_step() -> None:
        net.zero_grad(set_to_none=True)
        with autocast:
            out = net(batch)
        output_sum(out).backward()

    with autocast:
        reference_outputs = net(batch)
    width = reference_outputs["features"]["T_d"].shape[1]
    objective = build_recipe(args.recipe, width).to(device).train()
    objective_inputs = recipe_inputs(args.recipe, detached_outputs(reference_outputs))
    objective_targets = ({**targets, "M": targets["M"].repeat(7), "num_anchors": args.batch_size}
                         if args.recipe == "confede" else targets)
    del reference_outputs

    def objective_step() -> None:
        for t in [*objective_inputs["features"].values(), *objective_inputs["unimodal"].values(),
                  objective_inputs["prediction"], objective_inputs["logits"]]:
            t.grad = None
        objective(objective_inputs, objective_targets).loss.backward()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = net(batch)
            loss = objective(out, targets).loss
        loss.backward()
        optimizer.step()

    trains = args.recipe in ("dmmsa", "plain")  # the model gives these recipes' inputs
    for _ in range(args.warmup):
        model_step()
        objective_step()
        if trains:
            train_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model_times, objective_times = [], []
    for _ in range(args.repeats):  # interleaved: the same load conditions for both
        model_times.append(timed(model_step, device))
        objective_times.append(timed(objective_step, device))
    steps = args.steps or args.repeats
    train_times = [timed(train_step, device) for _ in range(steps)] if trains else [math.nan]
    objective.step()  # GDWG's stage end works on what the steps accumulated
    result = {
        "model_s": statistics.median(model_times),
        "objective_s": statistics.median(objective_times),
        "train_step_s": statistics.median(train_times),
    }
    result["share"] = result["objective_s"] / result["model_s"]
    result["samples_per_s"] = args.batch_size / result["train_step_s"]
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: CUDA is not available")
        devices.remove("cuda")
    s = sizes(args.small)
    print(
        f"{args.recipe} objective benchmark: batch {args.batch_size}, text {args.text} "
        f"(L={s['text_len']}), audio {s['audio_len']}x5, vision {s['vision_len']}x20, "
        f"d_model {s['d_model']}, bf16 {args.bf16}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    results = {}
    for name in devices:
        device = torch.device(name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        r = bench_device(args, device)
        results[name] = r
        memory = f" | peak memory {r['peak_memory_gib']:.2f} GiB" if device.type == "cuda" else ""
        print(f"[{label}] model fwd+bwd {r['model_s'] * 1e3:9.1f} ms | objective fwd+bwd "
              f"{r['objective_s'] * 1e3:7.2f} ms | share {100 * r['share']:.2f} % "
              f"(target < 2 %) | train step {r['train_step_s'] * 1e3:9.1f} ms = "
              f"{r['samples_per_s']:.1f} samples/s{memory}", flush=True)
    return results


if __name__ == "__main__":
    main()
