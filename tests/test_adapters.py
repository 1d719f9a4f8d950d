"""Wrapping a model that already decomposes its features: ConFEDE's layout, one line of change.

The stand-in below is written here with ConFEDE's forward signature and output layout
(``TVA_fusion.forward(sample1, sample2, return_loss, return_emb)`` returning ``pred [B, 1]`` and
``x1_all`` in the order T_s, V_s, A_s, T_d, V_d, A_d, with a ``mono_decoder``); ConFEDE's code is
not a dependency and is not copied.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mtobjectives as mt
from mtobjectives.adapters import CONFEDE_ORDER, DecomposedOutputs
from mtobjectives.heads import DecompositionHead

D = 8


class ConFEDELike(nn.Module):
    """Encoders to 16, six projectors to D, a fusion decoder and a unimodal decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Linear(5, 16) for m in "TVA"})
        self.projectors = nn.ModuleDict({f: nn.Sequential(nn.LayerNorm(16), nn.Linear(16, D),
                                                          nn.Tanh()) for f in CONFEDE_ORDER})
        self.TVA_decoder = nn.Sequential(nn.Linear(6 * D, 12), nn.GELU(), nn.Linear(12, 1))
        self.mono_decoder = nn.Sequential(nn.Linear(D, 4), nn.GELU(), nn.Linear(4, 1))

    def forward(self, sample1, sample2=None, return_loss=True, return_emb=False):
        embed = {m: self.encoders[m](sample1[m]) for m in "TVA"}
        x1_all = torch.cat([self.projectors[f](embed[f[0]]) for f in CONFEDE_ORDER], dim=-1)
        pred = self.TVA_decoder(x1_all)  # [B, 1], as ConFEDE's
        loss = torch.nn.functional.mse_loss(pred.squeeze(), sample1["regression_labels"])
        if return_emb:
            return pred, x1_all, loss, loss, 0
        return pred, tuple(embed.values()), loss, loss, 0


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = {m: torch.randn(n, 5, generator=g) for m in "TVA"}
    sample["regression_labels"] = torch.randn(n, generator=g).clamp(-3, 3)
    return sample


def test_the_confede_wrapping_trains_with_dmmsas_objective():
    torch.manual_seed(0)
    model = ConFEDELike()
    adapter = DecomposedOutputs(CONFEDE_ORDER, feature_dim=D, unimodal_head=model.mono_decoder,
                                num_classes=3, classifier_hidden=(16,))
    objective = mt.recipes.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi", 3))
    optimizer = torch.optim.AdamW([*model.parameters(), *adapter.parameters()], lr=1e-2)
    sample = batch()
    losses = []
    for _ in range(30):
        pred, x1_all, *_ = model(sample, None, return_emb=True)
        result = objective(adapter(x1_all, prediction=pred), {"M": sample["regression_labels"]})
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.projectors.parameters())
    assert sum(p.numel() for p in adapter.parameters()) == 6 * D * 16 + 16 + 16 * 3 + 3


def test_the_features_are_sliced_in_the_declared_order_and_returned_in_the_librarys():
    model = ConFEDELike()
    sample = batch()
    pred, x1_all, *_ = model(sample, None, return_emb=True)
    out = DecomposedOutputs(CONFEDE_ORDER, feature_dim=D)(x1_all, prediction=pred)
    assert list(out["features"]) == list(mt.FEATURE_NAMES)
    embed = {m: model.encoders[m](sample[m]) for m in "TVA"}
    for f in CONFEDE_ORDER:
        torch.testing.assert_close(out["features"][f], model.projectors[f](embed[f[0]]))
    assert "unimodal" not in out and "logits" not in out
    assert out["prediction"].shape == (6,)


def test_named_features_need_no_order_and_unimodal_predictions_are_the_models():
    model = ConFEDELike()
    named = {f: torch.randn(3, D) for f in CONFEDE_ORDER}
    adapter = DecomposedOutputs(CONFEDE_ORDER, feature_dim=D, unimodal_head=model.mono_decoder)
    out = adapter(named, prediction=torch.zeros(3))
    torch.testing.assert_close(out["unimodal"]["A_d"], model.mono_decoder(named["A_d"])[:, 0])
    assert list(adapter.parameters()) == []  # the model's decoder is not registered twice


@pytest.mark.parametrize("order, match", [
    (("T_s", "V_s", "A_s", "T_d", "V_d"),
     r"both features of each modality it names, got .* \(missing \['A_d'\]\)"),
    (("T_s", "T_s", "A_s", "A_d"), r"at most once"),
    (("T_s", "X_d"), r"at most once"),
])
def test_a_bad_order_is_refused(order, match):
    with pytest.raises(ValueError, match=match):
        DecomposedOutputs(order, feature_dim=D)


def test_a_concatenation_of_another_width_names_the_order():
    adapter = DecomposedOutputs(CONFEDE_ORDER, feature_dim=D)
    with pytest.raises(ValueError, match=r"features must have .*48.*got .*40"):
        adapter(torch.zeros(2, 5 * D), prediction=torch.zeros(2))


def test_the_head_reconstructs_only_on_request_and_leaves_the_rest_unchanged():
    dims = {"T": 6, "A": 3, "V": 4}
    x = {m: torch.randn(5, d) for m, d in dims.items()}
    torch.manual_seed(0)
    plain = DecompositionHead(dims, feature_dim=4, fusion_hidden=(8,), unimodal_hidden=(4,))
    torch.manual_seed(0)
    recon = DecompositionHead(dims, feature_dim=4, fusion_hidden=(8,), unimodal_hidden=(4,),
                              reconstruction=True)
    plain.eval(), recon.eval()
    a, b = plain(x), recon(x)
    assert "reconstruction" not in a
    assert torch.equal(a["prediction"], b["prediction"]) and torch.equal(a["logits"], b["logits"])
    assert {m: v.shape for m, v in b["reconstruction"].items()} == {
        m: (5, d) for m, d in dims.items()}
    assert all(torch.equal(b["reconstruction_target"][m], x[m]) for m in dims)
    result = mt.recipes.misa()(b, {"M": torch.randn(5)})
    assert set(result.terms) == {"Task", "Diff", "Sim", "Recon"}


@pytest.mark.parametrize("name", ["dmmsa", "plain", "misa", "self_mm", "confede"])
def test_every_recipe_runs_on_the_decomposition_head(name):
    dims = {"T": 6, "A": 3, "V": 4}
    head = DecompositionHead(dims, feature_dim=4, fusion_hidden=(8,), unimodal_hidden=(4,),
                             reconstruction=True)
    rows = 7 * 2 if name == "confede" else 6
    outputs = head({m: torch.randn(rows, d) for m, d in dims.items()})
    targets = {"M": torch.linspace(-2, 2, rows), "index": torch.arange(rows) % 6}
    build = {"dmmsa": lambda: mt.recipes.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi")),
             "plain": mt.recipes.plain, "misa": mt.recipes.misa, "confede": mt.recipes.confede,
             "self_mm": lambda: mt.recipes.self_mm(torch.linspace(-2, 2, 6),
                                                   {"M": 24, "T": 4, "A": 4, "V": 4})}[name]
    if name == "confede":
        targets["num_anchors"] = 2
    result = build()(outputs, targets)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert all(p.grad is not None for p in head.similarity.parameters())
