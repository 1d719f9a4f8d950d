"""The adoption examples run: a plain model and MMSA's Self-MM, each wrapped with the DMMSA head.

Both check what a user wrapping their own model needs to be true: the loss falls over a few
optimisation steps and every parameter of the head receives a finite gradient. The Self-MM test
builds a tiny BERT folder (config, weights, vocabulary) in ``tmp_path``, so it runs offline.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mtobjectives as mt

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train_plain": "examples/wrap_plain/train_plain.py",
           "train_lightning": "examples/wrap_plain/train_lightning.py",
           "train_self_mm": "examples/wrap_self_mm/train_self_mm.py"}


def example(name: str):
    """An example script imported from its path, as ``python examples/.../NAME.py`` runs it.

    No edit of the import path: the module is loaded from its file and registered under its name, so
    that ``train_lightning``'s ``from train_plain import ...`` (which works when the script is
    run by path, its folder being first on the path) finds ``train_plain`` loaded here first.
    """
    if name in sys.modules:
        return sys.modules[name]
    if name == "train_lightning":
        example("train_plain")
    spec = importlib.util.spec_from_file_location(name, ROOT / SCRIPTS[name])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

MOSI_DIMS = (768, 5, 20)  # text (BERT), audio (COVAREP), vision (FACET) widths of MOSI
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "not", "really",
         "the", "was", "plot", "fine"]


def assert_every_parameter_has_gradient(module: torch.nn.Module) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    zero = [n for n, p in module.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f"all-zero gradients: {zero}"


# --------------------------------------------------------------------------------- plain model
def test_plain_example_loss_falls_over_epochs():
    train_plain = example("train_plain")

    history = train_plain.train(3, seed=0, log=lambda line: None)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test"]["MAE"] < history[0]["test"]["MAE"]


def test_plain_example_head_and_encoders_receive_gradients():
    train_plain = example("train_plain")

    inputs, labels = train_plain.make_toy_data(16, seed=0)
    backbone = train_plain.ThreeEncoders()
    head = mt.heads.DecompositionHead({m: 64 for m in train_plain.DIMS}, feature_dim=16,
                                      fusion_hidden=(32,), unimodal_hidden=(8,), dropout=0.0)
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))
    objective(head(backbone(inputs)), {"M": labels}).loss.backward()
    assert_every_parameter_has_gradient(head)
    assert_every_parameter_has_gradient(backbone)


# ------------------------------------------------------------------------------------ Self-MM
needs_mmsa = pytest.mark.skipif(
    importlib.util.find_spec("MMSA") is None or importlib.util.find_spec("transformers") is None,
    reason="needs mmsa==2.2.1 (pip install --no-deps) and transformers",
)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 1-layer, 32-wide BERT with a 14-word vocabulary, saved as a Hugging Face folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(folder))
    return folder


def random_mosi_split(n: int, rng: np.random.Generator, *, text_len: int = 12) -> dict:
    """A split in MMSA's unaligned pickle format with MOSI's feature widths and random values."""
    lengths = rng.integers(3, text_len - 1, size=n)
    ids = np.zeros((n, text_len), dtype=np.int64)
    mask = np.zeros((n, text_len), dtype=np.int64)
    for i, length in enumerate(lengths):
        ids[i, :length] = [2, *rng.integers(5, len(VOCAB), size=length - 2), 3]
        mask[i, :length] = 1
    audio_len, vision_len = 20, 16
    return {
        "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32),
        "audio": rng.normal(size=(n, audio_len, MOSI_DIMS[1])).astype(np.float32),
        "vision": rng.normal(size=(n, vision_len, MOSI_DIMS[2])).astype(np.float32),
        "audio_lengths": rng.integers(4, audio_len + 1, size=n).tolist(),
        "vision_lengths": rng.integers(4, vision_len + 1, size=n).tolist(),
        "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
    }


@needs_mmsa
def test_self_mm_returns_the_unimodal_features_the_wrapper_reads(tiny_bert):
    train_self_mm = example("train_self_mm")

    config = train_self_mm.self_mm_config("mosi", tiny_bert, MOSI_DIMS)
    model = train_self_mm.SelfMMWithDMMSA(config)
    data = train_self_mm.load_split(random_mosi_split(4, np.random.default_rng(0)))
    out = model.self_mm(*train_self_mm.batch_inputs(data, torch.arange(4), torch.device("cpu")))
    assert {"M", "T", "A", "V", "Feature_t", "Feature_a", "Feature_v"} <= out.keys()
    assert out["Feature_t"].shape == (4, config.post_text_dim)
    assert out["Feature_a"].shape == (4, config.post_audio_dim)
    assert out["Feature_v"].shape == (4, config.post_video_dim)


@needs_mmsa
def test_self_mm_with_dmmsa_loss_falls_and_every_head_parameter_gets_gradient(tiny_bert):
    train_self_mm = example("train_self_mm")

    torch.manual_seed(0)
    config = train_self_mm.self_mm_config("mosi", tiny_bert, MOSI_DIMS)
    model = train_self_mm.SelfMMWithDMMSA(config)
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))
    optimizer = train_self_mm.self_mm_optimizer(model, config)
    data = train_self_mm.load_split(random_mosi_split(16, np.random.default_rng(1)))
    idx = torch.arange(16)
    inputs = train_self_mm.batch_inputs(data, idx, torch.device("cpu"))
    targets = {"M": data["labels"]["M"]}

    def eval_loss() -> float:
        model.eval()
        objective.eval()
        with torch.no_grad():
            return float(objective(model(*inputs), targets).loss)

    before = eval_loss()
    for step in range(10):
        model.train()
        objective.train()
        result = objective(model(*inputs), targets)
        optimizer.zero_grad()
        result.loss.backward()
        if step == 0:
            assert_every_parameter_has_gradient(model.head)
            text = [p.grad for p in model.self_mm.text_model.parameters() if p.grad is not None]
            assert text, "the gradient must reach Self-MM's BERT (use_finetune=True)"
        optimizer.step()
    after = eval_loss()
    assert after < 0.9 * before, (before, after)


@needs_mmsa
def test_self_mm_script_runs_end_to_end(tiny_bert, tmp_path):
    train_self_mm = example("train_self_mm")

    rng = np.random.default_rng(2)
    data = {name: random_mosi_split(n, rng) for name, n in
            (("train", 12), ("valid", 6), ("test", 6))}
    with open(tmp_path / "tiny.pkl", "wb") as f:
        pickle.dump(data, f)
    results = train_self_mm.main(["--data", str(tmp_path / "tiny.pkl"), "--text-model",
                                  str(tiny_bert), "--epochs", "2", "--batch-size", "6",
                                  "--out", str(tmp_path / "results.json")])
    assert set(results) == {"best_valid", "test"}
    assert set(results["test"]) == {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score",
                                    "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"}
    assert (tmp_path / "results.json").is_file()


# --------------------------------------------------------------------------- the docs' claim
def test_self_mm_wrapping_fits_on_one_screen_and_the_docs_count_is_right():
    source = (ROOT / "examples" / "wrap_self_mm" / "train_self_mm.py").read_text()
    region = source.split("# --- wrapping: begin ---")[1].split("# --- wrapping: end ---")[0]
    lines = [line for line in region.splitlines() if line.strip()]
    page = (ROOT / "docs" / "wrapping.rst").read_text()
    claimed = re.search(r"wrapping class is \*\*(\d+) lines\*\*", page)
    assert claimed, "docs/wrapping.rst must state the line count of the wrapping class"
    assert int(claimed.group(1)) == len(lines)
    assert len(lines) <= 30


# ------------------------------------------------------------------------------------ Lightning
def test_lightning_example_trains_and_logs_weights(tmp_path):
    pytest.importorskip("lightning")
    train_lightning = example("train_lightning")

    logged = train_lightning.main(["--epochs", "3", "--root", str(tmp_path)])
    assert {"lambda_Uni", "lambda_CL", "train_loss"} <= logged.keys()


def test_self_mm_script_refuses_a_feature_file_that_would_run_code(tmp_path):
    train_self_mm = example("train_self_mm")

    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("owned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"train": Payload()}))
    refused = r"--data: .*evil\.pkl: refused: .*global 'builtins.getattr'"
    with pytest.raises(SystemExit, match=refused):
        train_self_mm.main(["--data", str(tmp_path / "evil.pkl"), "--text-model", "unused"])
    assert not marker.exists()


def test_the_plain_example_runs_by_path_as_users_run_it(tmp_path):
    """``python examples/wrap_plain/train_plain.py`` from another folder: no install, no path."""
    done = subprocess.run([sys.executable, str(ROOT / SCRIPTS["train_plain"]), "--epochs", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MAE" in done.stdout
