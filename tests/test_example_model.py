"""examples/dmmsa model and configs: ConFEDE's encoders feeding the decomposition head."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as torch_f
from hypothesis import given
from hypothesis import strategies as st

import mtobjectives as mt
from dmmsa import configs, model, prepare_text


def _tokenize(texts: list[str], folder: str, length: int) -> torch.Tensor:
    """``text_bert`` ``[N, 3, L]`` (int64) as the preparation command writes it."""
    return torch.from_numpy(prepare_text.tokenize(texts, folder, max_len=length).text_bert).long()

HAS_OBJECTIVE = importlib.util.find_spec("mtobjectives.objective") is not None
WORDS = ["good", "bad", "movie", "not", "very", "boring", "great", "plot"]


def tiny_config(**changes: object) -> configs.ModelConfig:
    base = configs.ModelConfig(
        text_source="features", text_dim=12, audio_dim=5, vision_dim=7, d_model=16,
        text_layers=1, audio_layers=1, vision_layers=2, max_len=20, feature_dim=8,
        fusion_hidden=(16, 8), unimodal_hidden=(4,), pretrain_hidden=(8,), head_dropout=0.1,
        encoder_dropout=0.1,
    )
    return dataclasses.replace(base, **changes)


def random_batch(batch: int = 4, text_len: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text_mask = (torch.arange(text_len) < torch.randint(3, text_len + 1, (batch, 1), generator=g))
    ids = torch.randint(5, 5 + len(WORDS), (batch, text_len), generator=g) * text_mask
    return {
        "text": torch.randn(batch, text_len, 12, generator=g),
        "text_bert": torch.stack([ids, text_mask.long(), torch.zeros_like(ids)], dim=1),
        "audio": torch.randn(batch, 15, 5, generator=g),
        "audio_lengths": torch.randint(1, 16, (batch,), generator=g),
        "vision": torch.randn(batch, 11, 7, generator=g),
        "vision_lengths": torch.randint(1, 12, (batch,), generator=g),
        "labels": {"M": torch.rand(batch, generator=g) * 6 - 3},
        "index": torch.arange(batch),
    }


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT with its tokenizer saved to a local folder (no download)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=32,
    )
    BertModel(bert_config).save_pretrained(folder)
    return folder


def bert_batch(folder: Path, batch: int = 4) -> dict[str, torch.Tensor]:
    texts = ["good movie", "not very good plot", "bad", "very boring movie not great"][:batch]
    return {**random_batch(batch), "text_bert": _tokenize(texts, str(folder), 9)}


def assert_dmmsa_outputs(out: dict, batch: int, modalities: tuple[str, ...], dim: int) -> None:
    names = [f"{m}_{k}" for m in modalities for k in "sd"]
    assert out["prediction"].shape == (batch,)
    assert out["logits"].shape == (batch, 3)
    assert list(out["features"]) == names and list(out["unimodal"]) == names
    assert all(f.shape == (batch, dim) for f in out["features"].values())
    assert all(u.shape == (batch,) for u in out["unimodal"].values())


def dmmsa_targets(batch: dict) -> dict[str, torch.Tensor]:
    return {"M": batch["labels"]["M"]}


def hand_written_loss(out: dict, y: torch.Tensor) -> torch.Tensor:
    feats = out["features"]
    anchor = torch_f.normalize(feats["T_s"], dim=-1)
    cands = torch_f.normalize(torch.stack([feats[k] for k in ("T_d", "A_s", "A_d")], 1), dim=-1)
    sim = torch.einsum("bd,bkd->bk", anchor, cands) / 0.5
    cl = (torch.logsumexp(sim, 1) - sim[:, 1]).mean()
    uni = sum(torch_f.smooth_l1_loss(u, y) for u in out["unimodal"].values())
    classes = torch.bucketize(y, torch.tensor([-0.5, 0.5]))
    return torch_f.smooth_l1_loss(out["prediction"], y) + torch_f.cross_entropy(
        out["logits"], classes
    ) + uni + cl


def assert_every_parameter_has_gradient(module: torch.nn.Module, skip: str = "pretrain_heads"):
    for name, param in module.named_parameters():
        if name.startswith(skip):
            continue
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


# --- forward shapes ---------------------------------------------------------------------------


def test_forward_shapes_with_precomputed_text_features():
    net = model.DMMSAModel(tiny_config())
    assert_dmmsa_outputs(net(random_batch()), 4, ("T", "A", "V"), 8)


def test_forward_shapes_with_a_tiny_bert_from_a_local_folder(tiny_bert_dir):
    net = model.DMMSAModel(tiny_config(text_source="bert", text_model=str(tiny_bert_dir)))
    assert isinstance(net.encoders["T"], model.BertTextEncoder)
    assert_dmmsa_outputs(net(bert_batch(tiny_bert_dir)), 4, ("T", "A", "V"), 8)


def test_tokenize_gives_mmsa_text_bert_layout(tiny_bert_dir):
    text_bert = _tokenize(["good movie", "bad"], str(tiny_bert_dir), 6)
    assert text_bert.shape == (2, 3, 6) and text_bert.dtype == torch.long
    assert text_bert[:, 1].sum(1).tolist() == [4, 3]  # [CLS] words [SEP]
    assert text_bert[1, 0, 3:].eq(0).all()  # [PAD] beyond the mask


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_text_poolings_give_the_bert_hidden_size(tiny_bert_dir, pooling):
    net = model.DMMSAModel(
        tiny_config(text_source="bert", text_model=str(tiny_bert_dir), text_pooling=pooling)
    )
    assert net.encode(bert_batch(tiny_bert_dir), ["T"])["T"].shape == (4, 16)


def test_prebuilt_text_backbone_is_used_without_loading(tiny_bert_dir):
    from transformers import BertConfig, BertModel

    backbone = BertModel(BertConfig(vocab_size=20, hidden_size=24, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=8))
    net = model.DMMSAModel(
        tiny_config(text_source="bert", text_model="does/not/exist"), text_backbone=backbone
    )
    assert net.encoders["T"].backbone is backbone
    assert net.feature_dims == {"T": 24, "A": 16, "V": 16}
    assert_dmmsa_outputs(net(bert_batch(tiny_bert_dir)), 4, ("T", "A", "V"), 8)


def test_encode_returns_one_pooled_feature_per_modality():
    features = model.DMMSAModel(tiny_config()).encode(random_batch())
    assert {m: tuple(f.shape) for m, f in features.items()} == {
        "T": (4, 16), "A": (4, 16), "V": (4, 16)
    }


def test_pretrain_forward_gives_one_prediction_per_modality():
    predictions = model.DMMSAModel(tiny_config()).pretrain_forward(random_batch(), ["A", "V"])
    assert {m: tuple(p.shape) for m, p in predictions.items()} == {"A": (4,), "V": (4,)}


def test_model_accepts_an_experiment_config():
    config = configs.get_config("synthetic")
    net = model.DMMSAModel(config)
    assert net.config is config.model


# --- lengths masking --------------------------------------------------------------------------


def overwrite_padding(batch: dict, value: float) -> dict:
    batch = {**batch}
    for key in ("audio", "vision"):
        steps = torch.arange(batch[key].shape[1])
        padded = steps.unsqueeze(0) >= batch[f"{key}_lengths"].unsqueeze(1)
        batch[key] = batch[key].masked_fill(padded.unsqueeze(-1), value)
    padded_text = batch["text_bert"][:, 1].eq(0)
    batch["text"] = batch["text"].masked_fill(padded_text.unsqueeze(-1), value)
    return batch


@pytest.mark.parametrize("value", [0.0, 123.0, float("inf"), float("nan")])
def test_padding_beyond_lengths_does_not_change_outputs(value):
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config()).eval()
    batch = random_batch()
    with torch.no_grad():
        reference, padded = net(batch), net(overwrite_padding(batch, value))
    torch.testing.assert_close(padded["prediction"], reference["prediction"])
    for name in reference["features"]:
        torch.testing.assert_close(padded["features"][name], reference["features"][name])


def test_padding_is_ignored_in_training_mode_too():
    torch.manual_seed(0)
    encoder = model.SequenceEncoder(5, 16, 2, dropout=0.0, max_len=20)
    x, lengths = torch.randn(3, 10, 5), torch.tensor([10, 4, 1])
    reference = encoder(x, lengths)
    padded = x.clone()
    padded[1, 4:], padded[2, 1:] = 7.0, -7.0
    torch.testing.assert_close(encoder(padded, lengths), reference)


def test_a_clip_padded_with_extra_steps_encodes_as_the_unpadded_clip():
    torch.manual_seed(0)
    encoder = model.SequenceEncoder(5, 16, 1, dropout=0.0, max_len=20).eval()
    x = torch.randn(1, 6, 5)
    longer = torch.cat([x, torch.randn(1, 9, 5)], dim=1)
    torch.testing.assert_close(encoder(longer, torch.tensor([6])), encoder(x), atol=1e-6, rtol=1e-5)


def test_lengths_are_used():
    torch.manual_seed(0)
    encoder = model.SequenceEncoder(5, 16, 1, dropout=0.0, max_len=20).eval()
    x = torch.randn(2, 10, 5)
    assert not torch.allclose(encoder(x, torch.tensor([10, 10])), encoder(x, torch.tensor([3, 3])))


def test_zero_length_clip_gives_a_finite_feature():
    encoder = model.SequenceEncoder(5, 16, 1, max_len=20).eval()
    assert torch.isfinite(encoder(torch.randn(2, 4, 5), torch.tensor([0, 4]))).all()


# --- subsets of modalities --------------------------------------------------------------------


@pytest.mark.parametrize("modalities", [("T", "A"), ("A", "V"), ("V",)])
def test_a_subset_of_modalities_needs_only_its_inputs(modalities):
    net = model.DMMSAModel(tiny_config(modalities=modalities))
    keys = {"T": ["text"], "A": ["audio", "audio_lengths"], "V": ["vision", "vision_lengths"]}
    batch = {k: v for k, v in random_batch().items() if k not in sum(
        (keys[m] for m in "TAV" if m not in modalities), [])}
    batch.pop("text_bert")
    assert set(net.encoders) == set(modalities)
    assert_dmmsa_outputs(net(batch), 4, modalities, 8)


def test_audio_without_lengths_uses_every_step():
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(modalities=("A",))).eval()
    batch = random_batch()
    full = {"audio": batch["audio"], "audio_lengths": torch.full((4,), 15)}
    without_lengths = net({"audio": batch["audio"]})["prediction"]
    torch.testing.assert_close(without_lengths, net(full)["prediction"])


# --- text-only data ---------------------------------------------------------------------------


def text_only_batch(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """What a text-only file's ``MSADataset(text_source="features")`` items collate to."""
    full = random_batch(batch, seed=seed)
    return {"text": full["text"], "text_lengths": full["text_bert"][:, 1].sum(1),
            "labels": full["labels"], "index": full["index"]}


def test_text_only_model_builds_only_the_text_encoder_and_head_input():
    net = model.DMMSAModel(tiny_config(modalities=("T",)))
    assert list(net.encoders) == ["T"] and net.modalities == ("T",)
    assert net.head.in_dims == {"T": 16} and net.feature_dims == {"T": 16}
    assert list(net.pretrain_heads) == ["T"]
    assert not any(name.startswith(("encoders.A", "encoders.V")) for name, _ in
                   net.named_parameters())


def test_text_only_forward_gives_only_text_features():
    out = model.DMMSAModel(tiny_config(modalities=("T",)))(text_only_batch())
    assert_dmmsa_outputs(out, 4, ("T",), 8)
    assert list(out["features"]) == ["T_s", "T_d"]


def test_text_lengths_mask_the_padding_of_text_features():
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(modalities=("T",))).eval()
    batch = text_only_batch()
    padded = batch["text"].masked_fill(
        (torch.arange(9) >= batch["text_lengths"].unsqueeze(1)).unsqueeze(-1), float("nan")
    )
    with torch.no_grad():
        torch.testing.assert_close(net({**batch, "text": padded})["prediction"],
                                   net(batch)["prediction"])


@pytest.mark.skipif(not HAS_OBJECTIVE, reason="mtobjectives.objective is not written yet")
def test_text_only_model_trains_with_the_dmmsa_objective_without_cl():
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(modalities=("T",), head_dropout=0.0, encoder_dropout=0.0))
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"),
                                            cl=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    batch = text_only_batch(batch=8)
    losses = []
    for _stage in range(3):  # GDWG stages end with step(), as train.py does after each epoch
        for _ in range(5):
            optimizer.zero_grad()
            result = objective(net(batch), dmmsa_targets(batch))
            result.loss.backward()
            optimizer.step()
            losses.append(float(result.loss.detach()))
        objective.step()
    assert sorted(result.terms) == ["MSC", "MSR", "Uni"]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < 0.5 * losses[0]


@pytest.mark.skipif(not HAS_OBJECTIVE, reason="mtobjectives.objective is not written yet")
def test_gradient_reaches_every_parameter_of_a_text_only_model():
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(modalities=("T",)))
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"),
                                            cl=False)
    batch = text_only_batch()
    objective(net(batch), dmmsa_targets(batch)).loss.backward()
    assert_every_parameter_has_gradient(net)


def test_text_only_pretraining_predicts_from_text():
    predictions = model.DMMSAModel(tiny_config(modalities=("T",))).pretrain_forward(
        text_only_batch()
    )
    assert {m: tuple(p.shape) for m, p in predictions.items()} == {"T": (4,)}


@pytest.mark.parametrize("d_model", [768, 48])
def test_minilm_width_text_features_work_with_any_d_model(d_model):
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(text_dim=384, d_model=d_model, modalities=("T", "A")))
    batch = {**random_batch(2), "text": torch.randn(2, 9, 384)}
    out = net(batch)
    assert net.encoders["T"].proj.in_features == 384 and net.feature_dims["T"] == d_model
    assert_dmmsa_outputs(out, 2, ("T", "A"), 8)


def test_minilm_width_bert_backbone_works_with_another_d_model(tiny_bert_dir):
    from transformers import BertConfig, BertModel

    backbone = BertModel(BertConfig(vocab_size=20, hidden_size=384, num_hidden_layers=1,
                                    num_attention_heads=12, intermediate_size=64))
    net = model.DMMSAModel(tiny_config(text_source="bert", d_model=64), text_backbone=backbone)
    assert net.feature_dims == {"T": 384, "A": 64, "V": 64}
    assert net.head.in_dims == {"T": 384, "A": 64, "V": 64}
    assert_dmmsa_outputs(net(bert_batch(tiny_bert_dir)), 4, ("T", "A", "V"), 8)


@pytest.mark.parametrize(("changes", "field"), [
    ({"audio_dim": None}, "audio_dim"), ({"vision_dim": 0}, "vision_dim"),
    ({"text_dim": None}, "text_dim"),
])
def test_a_configured_modality_without_input_width_is_refused(changes, field):
    with pytest.raises(ValueError, match=f"{field} must be an int > 0 for modality.*available"):
        model.DMMSAModel(tiny_config(**changes))


def test_text_width_is_not_needed_with_a_bert_backbone(tiny_bert_dir):
    net = model.DMMSAModel(tiny_config(text_source="bert", text_model=str(tiny_bert_dir),
                                       text_dim=None, modalities=("T",)))
    assert_dmmsa_outputs(net(bert_batch(tiny_bert_dir)), 4, ("T",), 8)


def test_a_text_only_file_end_to_end(tmp_path):
    from dmmsa import batching, data, synthetic

    raw = synthetic.build_synthetic(seed=0, n_train=16, n_valid=8, n_test=8)
    for split in raw.values():
        for key in ("audio", "audio_lengths", "vision", "vision_lengths"):
            del split[key]
    synthetic_path = tmp_path / "text_only.pkl"
    with open(synthetic_path, "wb") as f:
        pickle.dump(raw, f)
    splits = data.load_mmsa(synthetic_path, label_range="mosi")
    dims = splits["train"].feature_dims
    config = configs.get_config("synthetic")
    config = configs.with_input_dims(config, text=dims["T"], audio=dims["A"],
                                     vision=dims["V"], available=splits["train"].modalities)
    assert config.model.modalities == ("T",)
    net = model.DMMSAModel(config)
    batch = next(iter(batching.make_loader(splits["train"], batch_size=8, text_source="features")))
    assert_dmmsa_outputs(net(batch), 8, ("T",), config.model.feature_dim)


# --- bad inputs -------------------------------------------------------------------------------


def test_missing_input_of_a_configured_modality_raises():
    batch = random_batch()
    del batch["vision"]
    with pytest.raises(ValueError, match="batch has no 'vision'.*modality 'V'"):
        model.DMMSAModel(tiny_config())(batch)


def test_lengths_beyond_the_padded_length_raise():
    batch = random_batch()
    batch["audio_lengths"] = torch.full((4,), 16)
    with pytest.raises(ValueError, match="audio_lengths must lie in \\[0, 15\\]"):
        model.DMMSAModel(tiny_config())(batch)


def test_sequences_longer_than_max_len_raise():
    batch = random_batch()
    batch["audio"], batch["audio_lengths"] = torch.randn(4, 21, 5), None
    with pytest.raises(ValueError, match="21 time steps.*max_len is 20"):
        model.DMMSAModel(tiny_config())(batch)


def test_wrong_feature_width_raises():
    batch = random_batch()
    batch["vision"] = torch.randn(4, 11, 8)
    with pytest.raises(ValueError, match="vision must have shape \\[B, L, 7\\]"):
        model.DMMSAModel(tiny_config())(batch)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"modalities": ("T", "X")}, "modalities"),
        ({"modalities": ()}, "modalities"),
        ({"text_source": "raw"}, "text_source"),
        ({"d_model": 20}, "divisible by nhead"),
        ({"audio_layers": 0}, "audio encoder"),
    ],
)
def test_bad_model_config_raises(changes, message):
    with pytest.raises(ValueError, match=message):
        model.DMMSAModel(tiny_config(**changes))


# --- gradients --------------------------------------------------------------------------------


def test_gradient_reaches_every_parameter_through_a_hand_written_dmmsa_loss():
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(modalities=("T", "A")))
    batch = random_batch()
    hand_written_loss(net(batch), batch["labels"]["M"]).backward()
    assert_every_parameter_has_gradient(net)


@pytest.mark.skipif(not HAS_OBJECTIVE, reason="mtobjectives.objective is not written yet")
@pytest.mark.parametrize("text_source", ["features", "bert"])
def test_gradient_reaches_every_parameter_through_the_dmmsa_objective(tiny_bert_dir, text_source):
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(text_source=text_source, text_model=str(tiny_bert_dir)))
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))
    batch = bert_batch(tiny_bert_dir)
    result = objective(net(batch), dmmsa_targets(batch))
    result.loss.backward()
    assert_every_parameter_has_gradient(net)


def test_pretraining_loss_reaches_the_encoder_and_its_regressor_only():
    net = model.DMMSAModel(tiny_config())
    batch = random_batch()
    prediction = net.pretrain_forward(batch, ["V"])["V"]
    torch_f.mse_loss(prediction, batch["labels"]["M"]).backward()
    assert_every_parameter_has_gradient(net.encoders["V"], skip="-")
    assert_every_parameter_has_gradient(net.pretrain_heads["V"], skip="-")
    assert all(p.grad is None for p in net.head.parameters())
    assert all(p.grad is None for p in net.encoders["A"].parameters())


def test_set_text_trainable_freezes_only_the_text_encoder():
    net = model.DMMSAModel(tiny_config())
    net.set_text_trainable(False)
    assert not any(p.requires_grad for p in net.encoders["T"].parameters())
    assert all(p.requires_grad for p in net.encoders["A"].parameters())


def test_batch_to_moves_nested_tensors_and_keeps_the_rest():
    batch = {"audio": torch.ones(1), "labels": {"M": torch.zeros(1)}, "id": ["a"]}
    moved = model.batch_to(batch, "cpu")
    assert moved["labels"]["M"].device.type == "cpu" and moved["id"] == ["a"]


# --- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layers_va", "fusion", "text_model", "dims", "label_range"),
    [
        ("sims", (1, 2), (50, 1e-5, 32), "bert-base-chinese", (768, 33, 709), (-1.0, 1.0)),
        ("mosi", (2, 2), (50, 1e-5, 16), "bert-base-uncased", (768, 5, 20), (-3.0, 3.0)),
        ("mosei", (3, 3), (25, 5e-5, 4), "bert-base-uncased", (768, 74, 35), (-3.0, 3.0)),
    ],
)
def test_paper_presets_hold_table_6(name, layers_va, fusion, text_model, dims, label_range):
    config = configs.get_config(name)
    m, t = config.model, config.train
    assert config.dataset == name and config.label_range == label_range
    assert (m.vision_layers, m.audio_layers) == layers_va
    assert (t.fusion.epochs, t.fusion.lr, t.fusion.batch_size) == fusion
    assert m.text_model == text_model and m.text_source == "bert"
    assert (m.text_dim, m.audio_dim, m.vision_dim) == dims
    assert (m.d_model, m.nhead, m.encoder_dropout, m.feature_dim) == (768, 8, 0.5, 384)
    assert m.fusion_hidden == (768, 384, 192, 96) and m.unimodal_hidden == (192, 96)
    pretrain = {k: (s.lr, s.batch_size, s.epochs) for k, s in t.pretrain.items()}
    assert pretrain == {"T": (1e-5, 64, 150), "A": (1e-4, 128, 300), "V": (1e-4, 128, 300)}


def test_synthetic_preset_is_small_and_uses_text_features():
    config = configs.get_config("synthetic")
    assert config.model.text_source == "features" and config.model.d_model <= 128
    net = model.DMMSAModel(configs.with_input_dims(config, text=12, audio=5, vision=7))
    assert sum(p.numel() for p in net.parameters()) < 1_000_000


def test_get_config_returns_fresh_copies():
    first = configs.get_config("mosi")
    first.train.fusion.epochs = 1
    first.train.pretrain["T"].lr = 1.0
    second = configs.get_config("mosi")
    assert second.train.fusion.epochs == 50 and second.train.pretrain["T"].lr == 1e-5


def test_unknown_config_name_lists_the_presets():
    with pytest.raises(ValueError, match="'sims', 'mosi', 'mosei', 'synthetic'.*'mosei2'"):
        configs.get_config("mosei2")


def test_with_input_dims_changes_only_the_given_widths():
    config = configs.get_config("mosi")
    changed = configs.with_input_dims(config, audio=74)
    assert (changed.model.text_dim, changed.model.audio_dim, changed.model.vision_dim) == (
        768, 74, 20
    )
    assert config.model.audio_dim == 5


# --- CUDA -------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_backward_under_bf16_autocast():
    net = model.DMMSAModel(tiny_config()).cuda()
    batch = model.batch_to(random_batch(), "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(batch)
        loss = hand_written_loss(out, batch["labels"]["M"])
    loss.backward()
    assert torch.isfinite(loss)
    assert_every_parameter_has_gradient(net)


# --- configs: input widths and modalities from the data -----------------------------------------


@pytest.mark.parametrize(("available", "kept"), [
    (("T",), ("T",)), (("T", "V"), ("T", "V")), (("V", "T", "A"), ("T", "A", "V")),
])
def test_with_input_dims_keeps_only_the_available_modalities(available, kept):
    config = configs.get_config("mosi")
    changed = configs.with_input_dims(config, available=available)
    assert changed.model.modalities == kept
    assert config.model.modalities == ("T", "A", "V")  # the original is untouched


def test_with_input_dims_without_available_keeps_the_modalities():
    config = configs.get_config("mosi")
    config.model.modalities = ("T", "A")
    assert configs.with_input_dims(config, vision=35).model.modalities == ("T", "A")


def test_with_input_dims_intersects_with_the_configured_modalities():
    config = configs.get_config("mosi")
    config.model.modalities = ("A", "V")
    assert configs.with_input_dims(config, available=("T", "A")).model.modalities == ("A",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"available": ("T", "X")}, "available must hold modalities"),
    ({"audio": 74, "available": ("T",)}, "audio=74 is given but modality 'A' is not in"),
    ({"vision": 0}, "vision must be an int > 0 or None, got 0"),
    ({"text": 7.5}, "text must be an int > 0 or None, got 7.5"),
])
def test_with_input_dims_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        configs.with_input_dims(configs.get_config("mosi"), **kwargs)


def test_with_input_dims_refuses_data_without_any_configured_modality():
    config = configs.get_config("mosi")
    config.model.modalities = ("A", "V")
    with pytest.raises(ValueError, match="none of the model's modalities"):
        configs.with_input_dims(config, available=("T",))


# --- cost options: the all-padding tail is dropped, audio/vision can be average-pooled ----------


@given(lengths=st.lists(st.integers(1, 13), min_size=1, max_size=4), pool=st.integers(1, 5))
def test_sequence_encoder_matches_a_per_clip_loop_over_pooled_windows(lengths, pool):
    # reference: each clip alone, cut to its length, windows averaged by a loop, then the same
    # weights with pool=1 and no lengths at all (no padding, no masks, no trimming involved)
    torch.manual_seed(0)
    pooled = model.SequenceEncoder(5, 16, 1, dropout=0.0, max_len=20, pool=pool).eval()
    plain = model.SequenceEncoder(5, 16, 1, dropout=0.0, max_len=20).eval()
    plain.load_state_dict(pooled.state_dict())
    x = torch.randn(len(lengths), 13, 5)
    with torch.no_grad():
        got = pooled(x, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            clip = x[b, :n]
            windows = torch.stack([clip[i:i + pool].mean(dim=0) for i in range(0, n, pool)])
            torch.testing.assert_close(got[b], plain(windows.unsqueeze(0))[0],
                                       atol=1e-5, rtol=1e-4)


def test_pooling_without_lengths_averages_the_partial_last_window_over_its_steps():
    torch.manual_seed(0)
    pooled = model.SequenceEncoder(5, 16, 1, dropout=0.0, max_len=20, pool=4).eval()
    plain = model.SequenceEncoder(5, 16, 1, dropout=0.0, max_len=20).eval()
    plain.load_state_dict(pooled.state_dict())
    x = torch.randn(2, 9, 5)  # windows of 4, 4 and 1 steps
    windows = torch.stack([x[:, :4].mean(1), x[:, 4:8].mean(1), x[:, 8]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), plain(windows), atol=1e-5, rtol=1e-4)


def test_pooling_lets_a_sequence_longer_than_max_len_in_and_refuses_one_that_stays_longer():
    encoder = model.SequenceEncoder(5, 16, 1, max_len=20, pool=4).eval()
    assert encoder(torch.randn(2, 80, 5)).shape == (2, 16)
    with pytest.raises(ValueError, match="81 time steps \\(pooled by 4\\).*max_len is 20"):
        encoder(torch.randn(2, 81, 5))


@pytest.mark.parametrize("pool", [0, -1, 1.5, True])
def test_bad_pool_is_refused_naming_the_encoder(pool):
    with pytest.raises(ValueError, match=f"pool of the audio encoder must be an int >= 1, got "
                       f"{re.escape(repr(pool))}"):
        model.SequenceEncoder(5, 16, 1, name="audio", pool=pool)


def test_audio_pool_of_the_model_config_reaches_the_audio_encoder_only():
    net = model.DMMSAModel(tiny_config(audio_pool=3))
    assert (net.encoders["A"].pool, net.encoders["V"].pool) == (3, 1)
    assert "pool of the vision encoder" in str(
        pytest.raises(ValueError, model.DMMSAModel, tiny_config(vision_pool=0)).value)


def test_bert_encoder_output_does_not_depend_on_the_padded_length(tiny_bert_dir):
    # the same texts tokenized to 9 and to 24 positions: the extra columns are all padding
    texts = ["good movie", "not very good plot", "bad"]
    torch.manual_seed(0)
    net = model.DMMSAModel(tiny_config(text_source="bert", text_model=str(tiny_bert_dir),
                                       text_pooling="mean")).eval()
    short = _tokenize(texts, str(tiny_bert_dir), 9)
    long = _tokenize(texts, str(tiny_bert_dir), 24)
    assert long.shape[-1] == 24 and bool(long[:, 1, 9:].eq(0).all())
    with torch.no_grad():
        torch.testing.assert_close(net.encoders["T"](long), net.encoders["T"](short),
                                   atol=1e-5, rtol=1e-4)
        everything_padding = torch.zeros(2, 3, 6, dtype=torch.long)
        assert torch.isfinite(net.encoders["T"](everything_padding)).all()
