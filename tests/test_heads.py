"""DecompositionHead: the DMMSA outputs for any backbone, any subset of modalities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_f
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mtobjectives as mt
from mtobjectives.heads import DecompositionHead

ALL = ("T", "A", "V")
FEATURES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


def small_head(in_dims: dict[str, int], **kwargs: object) -> DecompositionHead:
    options = {"feature_dim": 8, "fusion_hidden": (16, 8), "unimodal_hidden": (4,)}
    options.update(kwargs)
    return DecompositionHead(in_dims, **options)


def random_features(in_dims: dict[str, int], batch: int = 5) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, d) for m, d in in_dims.items()}


def dmmsa_style_loss(out: dict, y: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Eq. 5 with fixed weights, written independently of the library's objective."""
    msr = torch_f.smooth_l1_loss(out["prediction"], y)
    msc = torch_f.cross_entropy(out["logits"], classes)
    uni = torch.stack([torch_f.smooth_l1_loss(u, y) for u in out["unimodal"].values()]).mean()
    feats = out["features"]
    names = [k for k in FEATURES[1:] if k in feats]
    positive = torch.tensor([k in ("A_s", "V_s") for k in names])
    if not positive.any():  # no positive pair for the text anchor: no contrastive term
        return msr + msc + 0.5 * uni
    anchor = torch_f.normalize(feats["T_s"], dim=-1)
    cands = torch_f.normalize(torch.stack([feats[k] for k in names], dim=1), dim=-1)
    sim = torch.einsum("bd,bkd->bk", anchor, cands) / 0.5
    cl = (torch.logsumexp(sim, dim=1) - torch.logsumexp(sim[:, positive], dim=1)).mean()
    return msr + msc + 0.5 * uni + 0.5 * cl


subsets = st.sets(st.sampled_from(ALL), min_size=1).map(lambda s: [m for m in ALL if m in s])


@given(
    modalities=subsets,
    dims=st.lists(st.integers(1, 40), min_size=3, max_size=3),
    batch=st.integers(1, 6),
    feature_dim=st.integers(1, 12),
    num_classes=st.integers(2, 7),
)
def test_output_shapes_for_any_subset_and_widths(modalities, dims, batch, feature_dim, num_classes):
    in_dims = {m: d for m, d in zip(ALL, dims) if m in modalities}
    head = small_head(in_dims, feature_dim=feature_dim, num_classes=num_classes)
    out = head(random_features(in_dims, batch))
    names = [f"{m}_{k}" for m in modalities for k in "sd"]
    assert set(out) == {"prediction", "logits", "features", "unimodal"}
    assert out["prediction"].shape == (batch,)
    assert out["logits"].shape == (batch, num_classes)
    assert list(out["features"]) == names
    assert list(out["unimodal"]) == names
    assert all(f.shape == (batch, feature_dim) for f in out["features"].values())
    assert all(u.shape == (batch,) for u in out["unimodal"].values())


def test_modalities_follow_equation_6_order_whatever_the_mapping_order():
    head = small_head({"V": 3, "T": 4, "A": 2})
    assert head.modalities == ("T", "A", "V")
    assert head.feature_names == FEATURES


def test_default_widths_are_the_papers():
    head = DecompositionHead({"T": 768, "A": 768, "V": 768})
    linears = [layer for layer in head.fusion if isinstance(layer, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [
        (2304, 768), (768, 384), (384, 192), (192, 96), (96, 1)
    ]
    classifier = [layer for layer in head.classifier if isinstance(layer, nn.Linear)]
    assert classifier[-1].out_features == 3
    unimodal = [layer for layer in head.unimodal if isinstance(layer, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in unimodal] == [(384, 192), (192, 96), (96, 1)]


def test_projector_is_layernorm_linear_tanh_dropout():
    head = DecompositionHead({"A": 20}, dropout=0.3)
    for projector in (head.similarity["A"], head.dissimilarity["A"]):
        kinds = [type(layer) for layer in projector]
        assert kinds == [nn.LayerNorm, nn.Linear, nn.Tanh, nn.Dropout]
        assert projector[1].in_features == 20 and projector[1].out_features == 384
        assert projector[3].p == 0.3


def test_outputs_match_a_hand_written_forward():
    torch.manual_seed(0)
    in_dims = {"T": 6, "A": 3, "V": 4}
    head = small_head(in_dims).eval()
    x = random_features(in_dims)
    out = head(x)
    feats = []
    for m in ALL:
        for proj in (head.similarity[m], head.dissimilarity[m]):
            ln, lin = proj[0], proj[1]
            normed = torch_f.layer_norm(x[m], (in_dims[m],), ln.weight, ln.bias, ln.eps)
            feats.append(torch.tanh(normed @ lin.weight.T + lin.bias))
    concat = torch.cat(feats, dim=-1)
    torch.testing.assert_close(out["prediction"], head.fusion(concat).squeeze(-1))
    torch.testing.assert_close(out["logits"], head.classifier(concat))
    for name, f in zip(FEATURES, feats):
        torch.testing.assert_close(out["features"][name], f)
        torch.testing.assert_close(out["unimodal"][name], head.unimodal(f).squeeze(-1))


def test_unimodal_head_is_shared_across_the_six_features():
    head = small_head({"T": 4, "A": 4, "V": 4})
    unimodal_params = {id(p) for p in head.unimodal.parameters()}
    other_params = {id(p) for n, p in head.named_parameters() if not n.startswith("unimodal.")}
    assert unimodal_params.isdisjoint(other_params)
    assert sum(p.numel() for p in head.unimodal.parameters()) == (8 * 4 + 4) + (4 + 1)


@pytest.mark.parametrize("modalities", [("T", "A", "V"), ("T", "A"), ("T",)])
def test_gradient_reaches_every_parameter_through_a_dmmsa_style_loss(modalities):
    torch.manual_seed(0)
    in_dims = {m: 5 + i for i, m in enumerate(modalities)}
    head = small_head(in_dims, dropout=0.1)
    out = head(random_features(in_dims, batch=6))
    loss = dmmsa_style_loss(out, torch.randn(6), torch.randint(0, 3, (6,)))
    loss.backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("modalities", [("T", "A", "V"), ("T", "V")])
def test_gradient_reaches_every_parameter_through_the_dmmsa_objective(modalities):
    torch.manual_seed(0)
    in_dims = {m: 4 + i for i, m in enumerate(modalities)}
    head = small_head(in_dims)
    objective = mt.MultiTaskObjective.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi"))
    result = objective(head(random_features(in_dims, batch=6)), {"M": torch.randn(6)})
    result.loss.backward()
    assert set(result.terms) == {"MSR", "MSC", "Uni", "CL"}
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_eval_mode_is_deterministic():
    head = small_head({"T": 7, "V": 3}, dropout=0.5).eval()
    x = random_features({"T": 7, "V": 3})
    first, second = head(x), head(x)
    assert torch.equal(first["prediction"], second["prediction"])
    assert torch.equal(first["features"]["T_s"], second["features"]["T_s"])


def test_training_mode_applies_dropout_to_the_features():
    torch.manual_seed(0)
    head = small_head({"T": 7}, dropout=0.5).train()
    features = head(random_features({"T": 7}, batch=32))["features"]["T_s"]
    assert (features == 0).float().mean() > 0.3


def test_works_in_double_precision():
    head = small_head({"A": 3}).double()
    out = head({"A": torch.randn(2, 3, dtype=torch.float64)})
    assert out["prediction"].dtype == torch.float64


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"T": torch.randn(2, 4)}, "missing \\['A'\\]"),
        ({"T": torch.randn(2, 4), "A": torch.randn(2, 3), "V": torch.randn(2, 2)}, "unexpected"),
        ({"T": torch.randn(2, 4), "A": torch.randn(2, 3, 1)}, "features\\['A'\\] must have 2"),
        ({"T": torch.randn(2, 4), "A": torch.randn(3, 3)}, "batch size"),
        ({"T": torch.randn(2, 5), "A": torch.randn(2, 3)}, "size 4 in dimension 1"),
    ],
)
def test_bad_features_raise_value_error(features, message):
    head = small_head({"T": 4, "A": 3})
    with pytest.raises(ValueError, match=message):
        head(features)


def test_integer_features_raise_type_error():
    with pytest.raises(TypeError, match="floating-point"):
        small_head({"T": 4})({"T": torch.ones(2, 4, dtype=torch.long)})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_features_of_another_dtype_are_cast_to_the_heads_dtype(dtype):
    """As if the features had been cast first; gradients reach them in their own dtype."""
    in_dims = {"T": 6, "A": 3}
    head = small_head(in_dims).eval()
    features = {m: x.to(dtype).requires_grad_(True) for m, x in random_features(in_dims).items()}
    cast = {m: x.detach().float().requires_grad_(True) for m, x in features.items()}
    out, expected = head(features), head(cast)
    assert out["prediction"].dtype == torch.float32
    assert torch.equal(out["prediction"], expected["prediction"])
    out["prediction"].sum().backward()
    expected["prediction"].sum().backward()
    for m in in_dims:
        assert features[m].grad.dtype == dtype
        assert torch.equal(features[m].grad, cast[m].grad.to(dtype))


def test_a_float64_head_computes_in_float64():
    head = small_head({"T": 4}).double().eval()
    features = random_features({"T": 4})
    out = head(features)
    assert out["prediction"].dtype == torch.float64
    assert torch.equal(out["prediction"], head({"T": features["T"].double()})["prediction"])


def test_under_autocast_the_features_are_passed_on_unchanged():
    """Autocast decides the dtypes inside its region, as for any layer (no cast by the head)."""
    head = small_head({"T": 6}).eval()
    x = torch.randn(5, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head({"T": x})
        similarity = head.similarity["T"](x)  # the projector on the bfloat16 features as given
    assert torch.equal(out["features"]["T_s"], similarity)


def test_features_on_another_device_than_the_head_raise_naming_both():
    head = small_head({"T": 4, "A": 3})
    features = {m: x.to("meta") for m, x in random_features({"T": 4, "A": 3}).items()}
    with pytest.raises(ValueError, match=r"device of the head's parameters \(cpu\), got "
                       r"features\['T'\] on meta"):
        head(features)


def test_features_must_be_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        small_head({"T": 4})(torch.randn(2, 4))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"in_dims": {}}, ValueError, "non-empty"),
        ({"in_dims": {"X": 3}}, ValueError, "non-empty subset"),
        ({"in_dims": {"T": 0}}, ValueError, "in_dims\\['T'\\]"),
        ({"in_dims": [768]}, TypeError, "mapping"),
        ({"feature_dim": 0}, ValueError, "feature_dim"),
        ({"fusion_hidden": (8, -1)}, ValueError, "fusion_hidden\\[1\\]"),
        ({"unimodal_hidden": 8}, TypeError, "unimodal_hidden"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"dropout": 1.0}, ValueError, "dropout"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, error, message):
    arguments = {"in_dims": {"T": 4}, **kwargs}
    with pytest.raises(error, match=message):
        DecompositionHead(arguments.pop("in_dims"), **arguments)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_backward_under_bf16_autocast():
    head = small_head({"T": 16, "A": 5, "V": 20}).cuda()
    x = {m: t.cuda() for m, t in random_features({"T": 16, "A": 5, "V": 20}).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = head(x)
        loss = dmmsa_style_loss(out, torch.randn(5, device="cuda"), torch.zeros(5).long().cuda())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in head.parameters())
