"""The field's objectives as recipes, each matched to its original code.

- MISA and Self-MM against MMSA 2.2.1's own classes (``CMD``, ``DiffLoss``, ``MSE``; the
  ``SELF_MM`` trainer's label methods driven side by side over several epochs);
- ConFEDE's contrastive term against pytorch-metric-learning's ``NTXentLoss`` over ConFEDE's
  index tuple (the library its code subclasses) and a plain loop, and its sample selector
  against independent re-derivations of both readings of its indexing;
- what every recipe reads, and that the recipes reading anchors only ignore retrieved rows.
"""

from __future__ import annotations

import importlib
import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mtobjectives as mt
from mtobjectives import recipes
from mtobjectives.functional import cmd, misa_diff_loss

f64 = torch.float64
FEATURES = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
needs_mmsa = pytest.mark.skipif(importlib.util.find_spec("MMSA") is None,
                                reason="needs mmsa==2.2.1 (pip install --no-deps)")


def grads_of(loss_fn, *inputs):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    return loss.detach(), torch.autograd.grad(loss, leaves)


def assert_same_value_and_gradient(ours, theirs, *inputs, tol=1e-6):
    value, grads = grads_of(ours, *inputs)
    ref_value, ref_grads = grads_of(theirs, *inputs)
    torch.testing.assert_close(value, ref_value, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


# ============================================================================== MISA
@needs_mmsa
@given(batch=st.integers(2, 9), dim=st.integers(1, 7), other=st.integers(1, 7),
       seed=st.integers(0, 10_000), scale=st.sampled_from([1e-2, 1.0, 30.0]))
@settings(deadline=None)
def test_misa_diff_loss_matches_mmsa_forward_and_backward(batch, dim, other, seed, scale):
    """MMSA detaches the row norms: the gradient is MMSA's, not the naive one."""
    from MMSA.trains.singleTask.MISA import DiffLoss

    g = torch.Generator().manual_seed(seed)
    p = torch.randn(batch, dim, generator=g, dtype=f64) * scale
    s = torch.randn(batch, other, generator=g, dtype=f64)
    assert_same_value_and_gradient(misa_diff_loss, DiffLoss(), p, s)


@needs_mmsa
def test_misa_diff_gradient_is_not_the_naive_one():
    from MMSA.trains.singleTask.MISA import DiffLoss

    g = torch.Generator().manual_seed(0)
    p, s = torch.randn(6, 3, generator=g, dtype=f64), torch.randn(6, 4, generator=g, dtype=f64)

    def naive(a, b):
        a = a - a.mean(0)
        b = b - b.mean(0)
        a = a / (a.norm(dim=1, keepdim=True) + 1e-6)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-6)
        return (a.T @ b).pow(2).mean()

    _, ours = grads_of(misa_diff_loss, p, s)
    _, theirs = grads_of(DiffLoss(), p, s)
    _, naive_grads = grads_of(naive, p, s)
    torch.testing.assert_close(ours[0], theirs[0])
    assert not torch.allclose(ours[0], naive_grads[0], atol=1e-4)


@needs_mmsa
@given(bx=st.integers(2, 9), by=st.integers(2, 9), dim=st.integers(1, 6),
       moments=st.integers(1, 6), seed=st.integers(0, 10_000))
@settings(deadline=None)
def test_cmd_matches_mmsa_forward_and_backward(bx, by, dim, moments, seed):
    from MMSA.trains.singleTask.MISA import CMD

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bx, dim, generator=g, dtype=f64)
    y = torch.randn(by, dim, generator=g, dtype=f64) * 1.5 + 0.3
    assert_same_value_and_gradient(lambda a, b: cmd(a, b, moments),
                                   lambda a, b: CMD()(a, b, moments), x, y)


def test_cmd_of_identical_batches_has_a_zero_not_a_nan_gradient():
    x = torch.randn(5, 3, dtype=f64, requires_grad=True)
    cmd(x, x.detach()).backward()
    assert torch.isfinite(x.grad).all()


def misa_outputs(batch, seed, dim=5, width=7):
    g = torch.Generator().manual_seed(seed)
    return {
        "prediction": torch.randn(batch, generator=g, dtype=f64),
        "features": {f: torch.randn(batch, dim, generator=g, dtype=f64) for f in FEATURES},
        "reconstruction": {m: torch.randn(batch, width, generator=g, dtype=f64) for m in "TAV"},
        "reconstruction_target": {m: torch.randn(batch, width, generator=g, dtype=f64)
                                  for m in "TAV"},
    }


@needs_mmsa
@pytest.mark.parametrize("seed", range(4))
def test_misa_recipe_is_mmsa_misa_total(seed):
    """MMSA's do_train: cls + 0.1 diff + 0.3 cmd + 1.0 recon, built from MMSA's classes."""
    from MMSA.trains.singleTask.MISA import CMD, MSE, DiffLoss

    outputs, y = misa_outputs(8, seed), torch.randn(8, generator=torch.Generator().manual_seed(9),
                                                     dtype=f64)
    f, r = outputs["features"], outputs
    diff, cmd_, mse = DiffLoss(), CMD(), MSE()
    expected_diff = (diff(f["T_d"], f["T_s"]) + diff(f["V_d"], f["V_s"]) + diff(f["A_d"], f["A_s"])
                     + diff(f["A_d"], f["T_d"]) + diff(f["A_d"], f["V_d"])
                     + diff(f["T_d"], f["V_d"]))
    expected_sim = (cmd_(f["T_s"], f["V_s"], 5) + cmd_(f["T_s"], f["A_s"], 5)
                    + cmd_(f["A_s"], f["V_s"], 5)) / 3.0
    expected_recon = sum(mse(r["reconstruction"][m], r["reconstruction_target"][m])
                         for m in "TVA") / 3.0
    task = torch.nn.MSELoss()(outputs["prediction"].view(-1, 1), y.view(-1, 1))
    expected = task + 0.1 * expected_diff + 0.3 * expected_sim + 1.0 * expected_recon
    result = recipes.misa()(outputs, {"M": y})
    torch.testing.assert_close(result.loss, expected, rtol=1e-12, atol=1e-12)
    assert list(result.terms) == ["Task", "Diff", "Sim", "Recon"]


def test_misa_without_reconstruction_needs_no_reconstruction_outputs():
    outputs = misa_outputs(6, 0)
    del outputs["reconstruction"], outputs["reconstruction_target"]
    result = recipes.misa(recon_weight=0.0)(outputs, {"M": torch.zeros(6, dtype=f64)})
    assert "Recon" not in result.terms
    with pytest.raises(ValueError, match=r"recipe 'misa' needs outputs\['reconstruction'\]"):
        recipes.misa()(outputs, {"M": torch.zeros(6, dtype=f64)})


# ============================================================================== Self-MM
def mmsa_self_mm(labels, dims, exclude_zero=True, bound=3.0):
    from easydict import EasyDict
    from MMSA.trains.multiTask.SELF_MM import SELF_MM

    args = EasyDict(train_mode="regression", dataset_name="mosi", train_samples=len(labels),
                    post_fusion_dim=dims["M"], post_text_dim=dims["T"],
                    post_audio_dim=dims["A"], post_video_dim=dims["V"], device="cpu", H=bound,
                    excludeZero=exclude_zero)
    trainer = SELF_MM(args)
    trainer.init_labels(torch.arange(len(labels)), labels.float())
    return trainer


@needs_mmsa
@pytest.mark.parametrize("exclude_zero", [True, False])
def test_self_mm_labels_and_loss_follow_mmsa_over_epochs(exclude_zero):
    """Drive MMSA's SELF_MM methods and the recipe on the same batches for 4 epochs: the
    generated labels and the loss agree at every batch."""
    n, dims = 24, {"M": 6, "T": 3, "A": 2, "V": 4}
    g = torch.Generator().manual_seed(3)
    labels = torch.round(torch.randn(n, generator=g) * 1.5 * 2) / 2  # exact zeros too
    labels[:2] = torch.tensor([1.0, -1.0])
    theirs = mmsa_self_mm(labels, dims, exclude_zero=exclude_zero)
    objective = recipes.self_mm(labels, dims, exclude_zero=exclude_zero)
    names = {"M": "fusion", "T": "text", "A": "audio", "V": "vision"}
    for epoch in range(1, 5):
        for batch in torch.randperm(n, generator=g).split(8):
            feats = {s: torch.randn(len(batch), d, generator=g) for s, d in dims.items()}
            preds = {s: torch.randn(len(batch), generator=g, dtype=f64) for s in "MTAV"}
            outputs = {"prediction": preds["M"], "fusion_feature": feats["M"],
                       "unimodal": {f"{m}_d": preds[m] for m in "TAV"},
                       "features": {f"{m}_d": feats[m] for m in "TAV"}}
            targets = {"M": labels[batch].to(f64), "index": batch}
            result = objective(outputs, targets)
            expected = 0.0
            for s in "MTAV":
                expected += theirs.weighted_loss(preds[s], theirs.label_map[names[s]][batch],
                                                 indexes=batch, mode=names[s])
            if epoch > 1:
                theirs.update_labels(feats["M"], feats["T"], feats["A"], feats["V"], epoch,
                                     batch, None)
            theirs.update_features(feats["M"], feats["T"], feats["A"], feats["V"], batch)
            theirs.update_centers()
            torch.testing.assert_close(result.loss, expected, rtol=1e-6, atol=1e-6)
            ulgm = objective.task_modules["labels"]
            for s in "MTAV":
                torch.testing.assert_close(ulgm.labels[s], theirs.label_map[names[s]],
                                           rtol=1e-6, atol=1e-6)
        objective.step()
    moved = (objective.task_modules["labels"].labels["T"] - labels).abs().max()
    assert moved > 0.05  # the labels really were generated, not left at their start


def self_mm_batch(batch, dims, g):
    return ({"prediction": torch.randn(len(batch), generator=g),
             "unimodal": {f"{m}_d": torch.randn(len(batch), generator=g) for m in "TAV"},
             "features": {f"{m}_d": torch.randn(len(batch), dims[m], generator=g)
                          for m in "TAV"},
             "fusion_feature": torch.randn(len(batch), dims["M"], generator=g)},
            {"M": torch.randn(len(batch), generator=g), "index": batch})


def test_self_mm_resumes_exactly_from_its_state_dict():
    dims = {"M": 4, "T": 2, "A": 2, "V": 2}
    labels = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    first, g = recipes.self_mm(labels, dims), torch.Generator().manual_seed(0)
    for _ in range(2):
        first(*self_mm_batch(torch.tensor([0, 1, 2]), dims, g))
        first(*self_mm_batch(torch.tensor([3, 4, 5]), dims, g))
        first.step()
    resumed = recipes.self_mm(labels, dims)
    resumed.load_state_dict(first.state_dict())
    batch = self_mm_batch(torch.tensor([1, 4]), dims, torch.Generator().manual_seed(5))
    assert first(*batch).loss == resumed(*batch).loss
    for s in "MTAV":
        assert torch.equal(first.task_modules["labels"].labels[s],
                           resumed.task_modules["labels"].labels[s])


def test_self_mm_refuses_an_unseen_index_and_changes_nothing():
    dims = {"M": 4, "T": 2, "A": 2, "V": 2}
    objective = recipes.self_mm(torch.tensor([1.0, -1.0, 2.0]), dims)
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    outputs, targets = self_mm_batch(torch.tensor([0, 7]), dims, torch.Generator())
    with pytest.raises(ValueError, match=r"targets\['index'\] holds 7, a row this label map has "
                                         r"never seen: .* rows 0 to 2"):
        objective(outputs, targets)
    assert all(torch.equal(before[k], v) for k, v in objective.state_dict().items())


def test_self_mm_evaluation_needs_no_index_and_reads_the_true_label():
    dims = {"M": 4, "T": 2, "A": 2, "V": 2}
    objective = recipes.self_mm(torch.tensor([1.0, -1.0, 2.0]), dims).eval()
    outputs = {"prediction": torch.tensor([0.0, 1.0]), "unimodal": {}, "features": {}}
    result = objective(outputs, {"M": torch.tensor([1.0, 3.0])})
    assert list(result.terms) == ["M"] and result.loss.item() == 1.5


def test_self_mm_refuses_non_finite_features_without_updating():
    dims = {"M": 4, "T": 2, "A": 2, "V": 2}
    objective = recipes.self_mm(torch.tensor([1.0, -1.0, 2.0]), dims)
    outputs, targets = self_mm_batch(torch.tensor([0, 1]), dims, torch.Generator())
    outputs["features"]["A_d"][0, 0] = float("nan")
    before = objective.state_dict()["task_modules.labels.feature_A"].clone()
    with pytest.raises(ValueError, match=r"features\['A'\] must be finite"):
        objective(outputs, targets)
    assert torch.equal(objective.state_dict()["task_modules.labels.feature_A"], before)


def test_self_mm_in_training_needs_the_index_and_names_the_recipe():
    dims = {"M": 4, "T": 2, "A": 2, "V": 2}
    objective = recipes.self_mm(torch.tensor([1.0, -1.0, 2.0]), dims)
    outputs, targets = self_mm_batch(torch.tensor([0, 1]), dims, torch.Generator())
    del targets["index"]
    with pytest.raises(ValueError, match=r"recipe 'self_mm' needs targets\['index'\]"):
        objective(outputs, targets)


# ============================================================================== ConFEDE
# ConFEDE's index tuple (TVA_fusion.py), the reference its code hands to NTXentLoss.
CONFEDE_T1 = [0, 0, 7, 7, 14, 14, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
CONFEDE_P = [1, 2, 8, 9, 15, 16, 7, 14, 8, 15, 9, 16, 10, 17, 11, 18, 12, 19, 13, 20]
CONFEDE_T2 = [0, 0, 0, 0, 7, 7, 7, 7, 14, 14, 14, 14,
              0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]
CONFEDE_N = [3, 4, 5, 6, 10, 11, 12, 13, 17, 18, 19, 20,
             21, 28, 35, 22, 29, 36, 23, 30, 37, 24, 31, 38, 25, 32, 39, 26, 33, 40, 27, 34, 41]
CONFEDE_ORDER = ("T_s", "V_s", "A_s", "T_d", "V_d", "A_d")


def confede_rows(b, dim, seed, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(7 * b, dim, generator=g, dtype=dtype) for f in FEATURES}


def confede_with_pml(features, b, temperature=0.5):
    """ConFEDE's loop: per anchor, its 42 rows into pml's NTXentLoss with the index tuple."""
    from pytorch_metric_learning.losses import NTXentLoss

    loss_fn = NTXentLoss(temperature=temperature)
    tuple_ = tuple(torch.tensor(v) for v in (CONFEDE_T1, CONFEDE_P, CONFEDE_T2, CONFEDE_N))
    total = 0.0
    for i in range(b):
        rows = []
        for name in CONFEDE_ORDER:
            anchors, retrieved = features[name][:b], features[name][b:]
            rows.append(torch.cat((anchors[i].unsqueeze(0), retrieved[6 * i:6 * (i + 1)])))
        block = torch.cat(rows)
        labels = torch.zeros(len(block), dtype=torch.long)  # unused with an index tuple
        total = total + loss_fn(block, labels, indices_tuple=tuple_)
    return total / b


def confede_plain_loop(features, b, temperature=0.5):
    """The same with plain float64 loops: -log(e^p / (e^p + sum_n e^n)) per positive pair."""
    total = 0.0
    for i in range(b):
        block = []
        for name in CONFEDE_ORDER:
            block.append(features[name][i])
            block += [features[name][b + 6 * i + j] for j in range(6)]
        cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
        pair_losses = []
        for a, p in zip(CONFEDE_T1, CONFEDE_P):
            negatives = [n for a2, n in zip(CONFEDE_T2, CONFEDE_N) if a2 == a]
            pos = math.exp(cos(block[a], block[p]) / temperature)
            neg = sum(math.exp(cos(block[a], block[n]) / temperature) for n in negatives)
            pair_losses.append(-math.log(pos / (pos + neg)))
        total += sum(pair_losses) / len(pair_losses)
    return total / b


@pytest.mark.parametrize("b, seed", [(1, 0), (2, 1), (5, 2)])
def test_confede_contrastive_matches_pml_over_its_index_tuple(b, seed):
    features = confede_rows(b, 6, seed)
    names = list(FEATURES)
    assert_same_value_and_gradient(
        lambda *xs: recipes.confede_contrastive(dict(zip(names, xs)), b),
        lambda *xs: confede_with_pml(dict(zip(names, xs)), b),
        *[features[f] for f in names])
    ours = recipes.confede_contrastive(features, b).item()
    assert ours == pytest.approx(confede_plain_loop(features, b), rel=1e-9)


def test_confede_pairs_are_those_of_its_index_tuple():
    module = importlib.import_module("mtobjectives.recipes.confede")

    assert [a for a, _ in module._POSITIVES] == CONFEDE_T1
    assert [p for _, p in module._POSITIVES] == CONFEDE_P
    negatives = {a: tuple(n for a2, n in zip(CONFEDE_T2, CONFEDE_N) if a2 == a)
                 for a in set(CONFEDE_T2)}
    assert negatives == module._NEGATIVES


def test_confede_objective_is_its_training_scripts_total():
    b, dim = 3, 5
    features = confede_rows(b, dim, 4)
    g = torch.Generator().manual_seed(8)
    outputs = {"prediction": torch.randn(7 * b, generator=g, dtype=f64), "features": features,
               "unimodal": {f: torch.randn(7 * b, generator=g, dtype=f64) for f in FEATURES}}
    y = torch.randn(7 * b, generator=g, dtype=f64)
    result = recipes.confede()(outputs, {"M": y, "num_anchors": b})
    mono = torch.cat([outputs["unimodal"][f] for f in CONFEDE_ORDER])
    expected = (torch.nn.MSELoss()(outputs["prediction"], y)
                + 0.1 * confede_with_pml(features, b)
                + 0.01 * torch.nn.MSELoss()(mono, y.repeat(6)))
    torch.testing.assert_close(result.loss, expected, rtol=1e-10, atol=1e-10)


def test_confede_contrastive_is_zero_without_retrieved_samples():
    features = confede_rows(1, 4, 0)
    outputs = {"prediction": torch.zeros(7, dtype=f64, requires_grad=True),
               "features": features, "unimodal": {}}
    result = recipes.confede()(outputs, {"M": torch.zeros(7, dtype=f64)})
    assert result.terms["CL"] == 0.0


def test_confede_refuses_a_batch_of_the_wrong_layout():
    outputs = {"prediction": torch.zeros(10, dtype=f64), "features": confede_rows(1, 4, 0),
               "unimodal": {}}
    outputs["features"] = {f: v[:10] if len(v) >= 10 else v for f, v in
                           confede_rows(2, 4, 0).items()}
    with pytest.raises(ValueError, match=r"its 2 anchors and 6 retrieved samples per anchor, "
                                         r"14 rows; got 10 rows"):
        recipes.confede()(outputs, {"M": torch.zeros(10, dtype=f64), "num_anchors": 2})


# ------------------------------------------------------------------ the sample selector
def ranking(features):
    unit = torch.nn.functional.normalize(features, dim=1, eps=1e-6)
    return torch.sort(unit @ unit.T, dim=1, descending=True).indices


def as_written_pools(features, labels, size=10):
    """ConFEDE's __pre_sample re-derived in plain Python: rank positions used as sample ids."""
    rank, label = ranking(features).tolist(), np.round(labels.double().numpy())
    n = len(label)
    pools = {"ss": [], "sd": [], "dd": []}
    for i in range(n):
        ss, sd, dd = [], [], []
        for j in range(n):
            if i == j:  # the position, not the anchor
                continue
            (ss if label[i] == label[rank[i][j]] else sd).append(j)
        for j in range(-1, -n, -1):
            if label[i] != label[rank[i][j]]:
                dd.append(n + j)  # a negative position indexes from the end
        pools["ss"].append(ss[:size])
        pools["sd"].append(sd[:size])
        pools["dd"].append(dd[:size])
    return pools


def intended_pools(features, labels, size=10):
    """What the ranking meant: the ranked samples' ids, the anchor itself excluded."""
    rank, label = ranking(features).tolist(), np.round(labels.double().numpy())
    pools = {"ss": [], "sd": [], "dd": []}
    for i, row in enumerate(rank):
        others = [k for k in row if k != i]
        pools["ss"].append([k for k in others if label[k] == label[i]][:size])
        pools["sd"].append([k for k in others if label[k] != label[i]][:size])
        pools["dd"].append([k for k in reversed(others) if label[k] != label[i]][:size])
    return pools


def sampler_pools(sampler):
    out = {}
    for k, key in enumerate(("ss", "dd", "sd")):
        out[key] = [row[:count].tolist() for row, count in
                    zip(sampler.pools[:, k], sampler.counts[:, k])]
    return out


def labelled_split(n, seed):
    """Features and labels whose rounded values (-2 .. 2) each occur at least 3 times."""
    g = torch.Generator().manual_seed(seed)
    rounded = (torch.arange(n) % 5 - 2).double()
    labels = rounded + (torch.rand(n, generator=g, dtype=f64) - 0.5) * 0.9
    return torch.randn(n, 5, generator=g), labels[torch.randperm(n, generator=g)].float()


@pytest.mark.parametrize("as_written, reference", [(True, as_written_pools),
                                                    (False, intended_pools)])
@pytest.mark.parametrize("n, seed, block", [(40, 0, None), (57, 1, 7), (30, 2, 1)])
def test_sampler_pools_are_those_of_each_reading(as_written, reference, n, seed, block):
    features, labels = labelled_split(n, seed)
    sampler = recipes.ConFEDESampler(as_written=as_written, block_rows=block)
    sampler.rebuild(features, labels)
    assert sampler_pools(sampler) == reference(features, labels)


def test_as_written_hands_out_low_ids_and_the_intended_reading_same_label_samples():
    features, labels = labelled_split(200, 3)
    written = recipes.ConFEDESampler(as_written=True)
    written.rebuild(features, labels)
    meant = recipes.ConFEDESampler(as_written=False)
    meant.rebuild(features, labels)
    assert meant.same_label_share(labels) == 1.0
    assert meant.same_label_share(labels, "dissimilar-dissimilar") == 0.0
    assert written.same_label_share(labels) < 0.6
    share_of_zero = float((written.pools[:, 0] == 0).any(dim=1).double().mean())
    assert share_of_zero > 0.9  # sample 0 sits in nearly every similar-similar pool


def test_sampler_draws_two_distinct_from_each_pool_and_resumes_exactly():
    features, labels = labelled_split(50, 4)
    sampler = recipes.ConFEDESampler(as_written=False, seed=3)
    sampler.rebuild(features, labels)
    index = torch.arange(50)
    drawn = sampler.sample(index)
    assert drawn.shape == (50, 6)
    for i in range(50):
        for k in range(3):
            pair = drawn[i, 2 * k:2 * k + 2].tolist()
            assert pair[0] != pair[1]
            assert set(pair) <= set(sampler.pools[i, k, :sampler.counts[i, k]].tolist())
    copy = recipes.ConFEDESampler(as_written=False)
    copy.load_state_dict(sampler.state_dict())
    assert torch.equal(copy.sample(index), sampler.sample(index))


def test_sampler_refuses_bad_input_and_keeps_its_pools():
    features, labels = labelled_split(30, 5)
    sampler = recipes.ConFEDESampler()
    with pytest.raises(RuntimeError, match=r"sample\(\) before rebuild\(\)"):
        sampler.sample(torch.tensor([0]))
    sampler.rebuild(features, labels)
    pools = sampler.pools.clone()
    bad = features.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"features must be finite .* 1 NaN or infinite"):
        sampler.rebuild(bad, labels)
    with pytest.raises(ValueError, match=r"at least 2 samples"):
        sampler.rebuild(features[:0], labels[:0])
    assert torch.equal(sampler.pools, pools)
    with pytest.raises(ValueError, match=r"training rows in \[0, 29\], got 30"):
        sampler.sample(torch.tensor([30]))


def test_sampler_rebuild_schedule():
    assert [e for e in range(1, 8) if recipes.ConFEDESampler().needs_rebuild(e)] == [1, 3, 5, 7]
    every_ten = recipes.ConFEDESampler(rebuild_every=10)
    assert [e for e in range(1, 25) if every_ten.needs_rebuild(e)] == [1, 11, 21]


def test_the_confede_objective_carries_its_sampler_in_its_state():
    objective = recipes.confede(sampler=recipes.ConFEDESampler(as_written=False, seed=1))
    features, labels = labelled_split(20, 6)
    objective.sampler.rebuild(features, labels)
    other = recipes.confede(sampler=recipes.ConFEDESampler(as_written=False))
    other.load_state_dict(objective.state_dict())
    assert torch.equal(other.sampler.pools, objective.sampler.pools)


# ============================================================================== all recipes
def dmmsa_like_batch(rows, seed, anchors=None):
    g = torch.Generator().manual_seed(seed)
    outputs = {"prediction": torch.randn(rows, generator=g), "logits": torch.randn(rows, 3,
                                                                                    generator=g),
               "features": {f: torch.randn(rows, 4, generator=g) for f in FEATURES},
               "unimodal": {f: torch.randn(rows, generator=g) for f in FEATURES},
               "reconstruction": {m: torch.randn(rows, 3, generator=g) for m in "TAV"},
               "reconstruction_target": {m: torch.randn(rows, 3, generator=g) for m in "TAV"}}
    targets = {"M": torch.randn(rows, generator=g).clamp(-2.9, 2.9),
               "index": torch.arange(rows) % 6}
    if anchors is not None:
        targets["num_anchors"] = anchors
    return outputs, targets


def anchor_readers():
    dims = {"M": 24, "T": 4, "A": 4, "V": 4}
    labels = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    return {"dmmsa": lambda: recipes.dmmsa(binning=mt.CoarseGrainedBinning.preset("mosi", 3)),
            "plain": recipes.plain, "misa": recipes.misa,
            "self_mm": lambda: recipes.self_mm(labels, dims)}


@pytest.mark.parametrize("name", ["dmmsa", "plain", "misa", "self_mm"])
def test_recipes_of_anchors_ignore_retrieved_rows(name):
    build = anchor_readers()[name]
    full_outputs, full_targets = dmmsa_like_batch(14, 0, anchors=2)
    outputs, targets = dmmsa_like_batch(14, 0)
    cut = mt.objective.anchor_rows(outputs, {**targets, "num_anchors": 2})
    with_rows, without = build()(full_outputs, full_targets), build()(*cut)
    assert torch.equal(with_rows.loss, without.loss)


@pytest.mark.parametrize("name, outputs_key", [("plain", "unimodal"), ("misa", "features"),
                                               ("confede", "features"), ("self_mm", "features")])
def test_a_missing_output_names_the_key_and_the_recipe(name, outputs_key):
    outputs, targets = dmmsa_like_batch(7, 1)
    del outputs[outputs_key]
    build = {**anchor_readers(), "confede": recipes.confede}[name]
    with pytest.raises(ValueError, match=rf"recipe '{name}' needs outputs\['{outputs_key}'\]"):
        build()(outputs, targets)


def test_plain_is_the_baseline_of_the_reference_system_bit_for_bit():
    from dmmsa import objectives

    outputs, targets = dmmsa_like_batch(9, 2)
    assert torch.equal(recipes.plain()(outputs, targets).loss,
                       objectives.baseline_objective(1.0)(outputs, targets).loss)


def test_the_dmmsa_alias_is_the_recipe():
    outputs, targets = dmmsa_like_batch(9, 3)
    binning = mt.CoarseGrainedBinning.preset("mosi", 3)
    torch.manual_seed(0)
    a = mt.MultiTaskObjective.dmmsa(binning=binning)(outputs, targets)
    torch.manual_seed(0)
    b = recipes.dmmsa(binning=binning)(outputs, targets)
    assert torch.equal(a.loss, b.loss) and a.terms.keys() == b.terms.keys()


def test_the_old_import_paths_of_dmmsas_terms_still_work():
    from mtobjectives.objective import cl_loss, msr_loss

    module = importlib.import_module("mtobjectives.recipes.dmmsa")
    assert msr_loss is module.msr_loss and cl_loss is module.cl_loss


def test_every_recipe_is_listed_with_its_requirements():
    assert sorted(recipes.RECIPES) == ["confede", "dmmsa", "misa", "plain", "self_mm"]
    for name in recipes.RECIPES:
        assert recipes.requirements(name).recipe == name
    with pytest.raises(ValueError, match=r"name must be one of .* got 'misc'"):
        recipes.requirements("misc")


@pytest.mark.parametrize("as_written", [True, False])
def test_short_pools_still_give_six_samples_from_the_pool_or_the_anchor(as_written):
    """A rounded label held by one or two clips (ConFEDE's code fails there): a one-candidate
    pool hands it out twice, an empty pool the anchor itself."""
    features, _ = labelled_split(8, 7)
    labels = torch.tensor([3.0, -3.0, -3.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    sampler = recipes.ConFEDESampler(as_written=as_written)
    sampler.rebuild(features, labels)
    drawn = sampler.sample(torch.arange(8))
    assert drawn.shape == (8, 6) and bool(((drawn >= 0) & (drawn < 8)).all())
    if not as_written:
        assert drawn[0, :2].tolist() == [0, 0]  # label 3 is the anchor's alone
        assert drawn[1, :2].tolist() == [2, 2]  # one other clip of label -3
        assert sampler.short_pools >= 3


def test_the_samplers_state_is_tensors_only_before_and_after_a_rebuild():
    sampler = recipes.ConFEDESampler(seed=4)
    for step in range(2):
        state = sampler.state_dict()
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        copy = recipes.ConFEDESampler()
        copy.load_state_dict(state)
        assert (copy.pools is None) == (step == 0)
        sampler.rebuild(*labelled_split(20, 8))
    with pytest.raises(ValueError, match=r"saved with as_written=True, this sampler has False"):
        recipes.ConFEDESampler(as_written=False).load_state_dict(sampler.state_dict())


ULGM_RANKS = """
import sys, torch, torch.distributed as dist
from mtobjectives import recipes
dist.init_process_group("gloo")
rank = dist.get_rank()
g = torch.Generator().manual_seed(0)
labels = torch.randn(16, generator=g)
dims = {"M": 6, "T": 2, "A": 2, "V": 2}
objective = recipes.self_mm(labels, dims)
for epoch in range(3):
    for batch in torch.randperm(16, generator=g).split(8):
        feats = {s: torch.randn(len(batch), d, generator=g) for s, d in dims.items()}
        mine = slice(rank * 4, rank * 4 + 4) if len(sys.argv) > 2 else slice(None)
        outputs = {"prediction": torch.zeros(len(batch))[mine],
                   "fusion_feature": feats["M"][mine],
                   "unimodal": {f"{m}_d": torch.zeros(len(batch))[mine] for m in "TAV"},
                   "features": {f"{m}_d": feats[m][mine] for m in "TAV"}}
        objective(outputs, {"M": labels[batch][mine], "index": batch[mine]})
    objective.step()
torch.save(objective.state_dict(), sys.argv[1] + f".rank{rank}")
dist.destroy_process_group()
"""


def test_self_mm_label_maps_agree_on_every_rank_and_with_one_process(tmp_path):
    """Two gloo ranks, each with half of every batch, gather before the update: both hold the
    maps that one process updating with the whole batch holds."""
    import subprocess
    import sys

    script = tmp_path / "ranks.py"
    script.write_text(ULGM_RANKS)

    def run(nproc, *extra):
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc_per_node={nproc}", str(script), str(tmp_path / f"n{nproc}"), *extra],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    run(1)
    run(2, "split")
    one = torch.load(tmp_path / "n1.rank0", weights_only=True)
    for rank in (0, 1):
        state = torch.load(tmp_path / f"n2.rank{rank}", weights_only=True)
        for key, value in one.items():
            torch.testing.assert_close(state[key], value, rtol=1e-6, atol=1e-6, msg=key)
