"""``train.py --objective``: every recipe of ``mt.recipes`` in the reference system (issue 20, 1).

Short synthetic runs of every objective; the flags of one objective refused with another;
MISA's decoders on top of a pre-trained model; ConFEDE's sampler rebuilt on schedule and kept
in the checkpoint; Self-MM's label maps keyed by the training row.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from dmmsa import compare, synthetic, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    return synthetic.make_synthetic(path, seed=0, n_train=40, n_valid=12, n_test=12)



def args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--pretrain-epochs", "1", "--epochs", "3",
            "--batch-size", "8", "--threads", "1", "--limit-batches", "2", *extra]


def finished(out: Path) -> dict:
    result = json.loads((out / "results.json").read_text())
    test = result["per_seed"][0]["test"]
    assert all(math.isfinite(v) for v in test.values()), test
    return result


@pytest.mark.parametrize("objective, terms", [
    ("confede", ["MSE", "CL", "Uni"]), ("self_mm", ["M", "T", "A", "V"]),
    ("misa", ["Task", "Diff", "Sim", "Recon"]), ("plain", ["MSR", "Uni"]),
])
def test_every_objective_trains_and_says_its_terms(tiny_data, tmp_path, capsys, objective, terms):
    out = tmp_path / objective
    assert train.main(args(tiny_data, out, "--objective", objective)) == 0
    printed = capsys.readouterr().out
    assert f"terms {terms}" in printed
    rows = (out / "seed1" / "fusion.csv").read_text().splitlines()
    assert all(f"loss_{t}" in rows[0] for t in terms), rows[0]
    finished(out)


def test_confedes_sampler_is_rebuilt_on_schedule_and_kept_in_the_checkpoint(tiny_data, tmp_path,
                                                                            capsys):
    out = tmp_path / "confede"
    assert train.main(args(tiny_data, out, "--objective", "confede", "--confede-sampler",
                           "intended", "--keep-checkpoint")) == 0
    printed = capsys.readouterr().out
    assert "fusion epoch 1: ConFEDE's sampler rebuilt" in printed
    assert ("(intended reading); 100.0 % of the similar-similar samples share the anchor's "
            "rounded label") in printed
    assert "fusion epoch 3: ConFEDE's sampler rebuilt" in printed
    assert "fusion epoch 2: ConFEDE's sampler rebuilt" not in printed
    state = torch.load(out / "seed1" / "checkpoint.pt", weights_only=True)
    objective = state["per_rank"][0]["objective"]
    key = next(k for k in objective if k.endswith("_extra_state"))
    assert objective[key].dtype == torch.int64 and objective[key][4] == 40  # 40 training rows


def test_on_text_and_audio_only_confede_drops_its_contrastive_term(tiny_data, tmp_path, capsys):
    splits = pickle.loads(tiny_data.read_bytes())
    for split in splits.values():
        split.pop("vision"), split.pop("vision_lengths", None)
    data = tmp_path / "ta.pkl"
    data.write_bytes(pickle.dumps(splits))
    assert train.main(args(data, tmp_path / "run", "--objective", "confede")) == 0
    assert "terms ['MSE', 'Uni']" in capsys.readouterr().out


def test_misa_fusion_starts_from_a_pretraining_without_decoders(tiny_data, tmp_path):
    pre = tmp_path / "pre"
    assert train.main(args(tiny_data, pre, "--stage", "pretrain")) == 0
    fusion = tmp_path / "misa"
    (fusion / "seed1").mkdir(parents=True)
    (fusion / "seed1" / "pretrained.pt").write_bytes((pre / "seed1" / "pretrained.pt").read_bytes())
    assert train.main(args(tiny_data, fusion, "--stage", "fusion", "--objective", "misa")) == 0
    finished(fusion)


def test_the_decoders_leave_every_other_initial_weight_and_the_random_state_alone():
    from dmmsa import configs
    from dmmsa import model as model_lib

    config = configs.get_config("synthetic").model
    torch.manual_seed(3)
    plain = model_lib.DMMSAModel(config)
    after_plain = torch.rand(3)
    torch.manual_seed(3)
    misa = model_lib.DMMSAModel(config, reconstruction=True)
    after_misa = torch.rand(3)
    assert torch.equal(after_plain, after_misa)
    mine = misa.state_dict()
    assert all(torch.equal(value, mine[key]) for key, value in plain.state_dict().items())
    assert any(key.startswith("head.decoders.") for key in mine)


@pytest.mark.parametrize("flags, message", [
    (["--objective", "plain", "--cl-temperature", "0.2"],
     "--cl-temperature set the DMMSA objective; they do not apply to --objective plain"),
    (["--objective", "misa", "--no-msc"], "are ablations of --objective dmmsa, not of "
                                          "--objective misa"),
    (["--confede-sampler", "intended"], "apply to --objective confede only, got --objective "
                                        "dmmsa"),
    (["--objective", "confede", "--rebuild-every", "0"], "--rebuild-every must be an int >= 1"),
])
def test_a_flag_of_another_objective_is_an_error(tiny_data, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        train.main(args(tiny_data, tmp_path / "run", *flags))
    assert message in capsys.readouterr().err


def test_compare_knows_every_recipe_as_a_variant(tmp_path):
    parsed = compare.parse_args(["--data", str(tmp_path / "f.pkl"), "--config", "synthetic",
                                 "--variants", "plain",
                                 "confede", "confede-intended", "self_mm", "misa", "dmmsa",
                                 "--reference", "plain", "--out", str(tmp_path / "o")])
    jobs = {job.name.split()[-1]: job.argv for job in compare.plan(parsed)}
    argv = jobs["confede-intended"]
    assert argv[argv.index("--objective"):argv.index("--objective") + 4] == [
        "--objective", "confede", "--confede-sampler", "intended"]
    for name in ("plain", "confede", "self_mm", "misa"):
        assert "--objective" in jobs[name] and name in jobs[name]


def stop_in_fusion(data: Path, out: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    """Run ``train.py`` and interrupt it at the 4th fusion step (epoch 2 with ``args``)."""
    from dmmsa import training

    real_step, calls = training.train_step, {"fusion": 0}

    def stop(run, phase, *rest):
        if phase.name == "fusion":
            calls["fusion"] += 1
            if calls["fusion"] == 4:  # epoch 2 of fusion, after its rebuild and a step
                raise KeyboardInterrupt
        return real_step(run, phase, *rest)

    with monkeypatch.context() as patch:
        patch.setattr(training, "train_step", stop)
        with pytest.raises(KeyboardInterrupt):
            train.main(args(data, out, *flags))


@pytest.mark.parametrize("flags", [
    ["--objective", "confede"], ["--objective", "self_mm"],
    ["--freeze-encoders"], ["--freeze-encoders", "--no-feature-cache"],
    ["--freeze-encoders", "--stage", "fusion"],  # no pretrained.pt: the seed's initial encoders
])
def test_an_interrupted_fusion_resumes_to_the_uninterrupted_result(tiny_data, tmp_path,
                                                                    monkeypatch, flags):
    """The sampler's pools and random state, Self-MM's label maps, and with frozen encoders the
    head alone, are in the checkpoint; the frozen encoders come back from where they were."""
    flags = [*flags, "--save-every", "1", "--epochs", "4"]
    whole = tmp_path / "whole"
    assert train.main(args(tiny_data, whole, *flags)) == 0
    stopped = tmp_path / "stopped"
    stop_in_fusion(tiny_data, stopped, monkeypatch, *flags)
    assert train.main(args(tiny_data, stopped, *flags, "--resume")) == 0
    assert finished(stopped)["per_seed"][0]["test"] == finished(whole)["per_seed"][0]["test"]
    assert (finished(stopped)["per_seed"][0]["phases"]["fusion"]["valid"]
            == finished(whole)["per_seed"][0]["phases"]["fusion"]["valid"])


# ----------------------------------------------------------------- --freeze-encoders
@pytest.mark.parametrize("objective", ["dmmsa", "confede"])
def test_frozen_encoders_give_the_same_results_cached_and_uncached(tiny_data, tmp_path, capsys,
                                                                   objective):
    flags = ["--objective", objective, "--freeze-encoders"]
    cached, uncached = tmp_path / "cached", tmp_path / "uncached"
    assert train.main(args(tiny_data, cached, *flags)) == 0
    assert "encoder features cached in" in capsys.readouterr().out
    assert len(list((cached / "seed1").glob("encoder_features_*.pt"))) == 1
    assert train.main(args(tiny_data, uncached, *flags, "--no-feature-cache")) == 0
    assert not list((uncached / "seed1").glob("encoder_features_*.pt"))
    a = finished(cached)["per_seed"][0]
    b = finished(uncached)["per_seed"][0]
    assert a["test"] == b["test"]  # result.json keeps 4 digits
    assert a["phases"]["fusion"]["valid"] == b["phases"]["fusion"]["valid"]


def test_frozen_encoders_do_not_move_in_the_fusion_stage(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert train.main(args(tiny_data, out, "--freeze-encoders", "--keep-checkpoint")) == 0
    pretrained = torch.load(out / "seed1" / "pretrained.pt", weights_only=True)
    best = torch.load(out / "seed1" / "model_best.pt", weights_only=True)
    encoders = [k for k in pretrained if k.startswith("encoders.")]
    assert encoders and all(torch.equal(pretrained[k], best[k]) for k in encoders)
    heads = [k for k in pretrained if k.startswith("head.similarity")]
    assert any(not torch.equal(pretrained[k], best[k]) for k in heads)


def test_a_frozen_run_checkpoints_the_head_and_a_digest_of_the_encoders(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert train.main(args(tiny_data, out, "--freeze-encoders", "--keep-checkpoint")) == 0
    saved = torch.load(out / "seed1" / "checkpoint.pt", weights_only=True)
    assert saved["phase"] == "fusion" and saved["fixed"]["prefix"] == "encoders."
    for state in (saved["model"], saved["best"]["state"]):
        assert state and not [k for k in state if k.startswith("encoders.")]
        assert [k for k in state if k.startswith("head.")]
    (cache,) = (out / "seed1").glob("encoder_features_*.pt")  # the same digest keys the cache
    assert (saved["fixed"]["sha256"]
            == torch.load(cache, weights_only=True)["key"]["encoders_sha256"])
    best = torch.load(out / "seed1" / "model_best.pt", weights_only=True)
    assert [k for k in best if k.startswith("encoders.")]  # the model file is whole


def test_a_head_checkpoint_refuses_encoders_other_than_its_own(tiny_data, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / "run"
    flags = ["--freeze-encoders", "--save-every", "1"]
    stop_in_fusion(tiny_data, out, monkeypatch, *flags)
    pretrained = out / "seed1" / "pretrained.pt"
    state = torch.load(pretrained, weights_only=True)
    name = next(k for k in state if k.startswith("encoders.") and state[k].is_floating_point())
    state[name] = state[name] + 1.0  # another pre-training
    torch.save(state, pretrained)
    with pytest.raises(SystemExit, match=r"checkpoint.pt was made with fixed encoders "
                                         r"\(encoders\.\*, SHA-256 [0-9a-f]{12}\.\.\.\) that "
                                         r"this run does not have"):
        train.main(args(tiny_data, out, *flags, "--resume"))


def test_a_stale_feature_cache_is_refused(tiny_data, tmp_path):
    out = tmp_path / "run"
    flags = ["--freeze-encoders", "--stage", "fusion"]
    assert train.main(args(tiny_data, out, *flags)) == 0
    (cache,) = (out / "seed1").glob("encoder_features_*.pt")
    saved = torch.load(cache, weights_only=True)
    saved["key"]["encoders_sha256"] = "0" * 64  # made from other pre-trained weights
    torch.save(saved, cache)
    (out / "seed1" / "result.json").unlink()
    with pytest.raises(SystemExit, match=r"holds the encoder features of other "
                                         r"encoders_sha256; it is never used"):
        train.main(args(tiny_data, out, *flags, "--resume"))


def test_no_feature_cache_needs_frozen_encoders(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(args(tiny_data, tmp_path / "run", "--no-feature-cache"))
    assert "--no-feature-cache applies to --freeze-encoders" in capsys.readouterr().err


def test_runs_from_the_same_pretrained_encoders_share_one_cache(tiny_data, tmp_path, capsys):
    shared = tmp_path / "features"
    first, second = tmp_path / "a", tmp_path / "b"
    assert train.main(args(tiny_data, first, "--freeze-encoders", "--feature-cache",
                           str(shared))) == 0
    assert "encoder features cached in" in capsys.readouterr().out
    (second / "seed1").mkdir(parents=True)
    (second / "seed1" / "pretrained.pt").write_bytes(
        (first / "seed1" / "pretrained.pt").read_bytes())
    assert train.main(args(tiny_data, second, "--freeze-encoders", "--feature-cache",
                           str(shared), "--stage", "fusion", "--objective", "plain")) == 0
    assert "encoder features cached in" not in capsys.readouterr().out  # read, not computed
    assert len(list(shared.glob("encoder_features_*.pt"))) == 1


@pytest.mark.parametrize("objective, terms", [
    ("self_mm", ["M", "T"]), ("misa", ["Task", "Diff", "Recon"]), ("confede", ["MSE", "Uni"]),
    ("dmmsa", ["MSR", "MSC", "Uni"]),
])
def test_on_text_only_the_header_names_only_the_terms_that_run(tiny_data, tmp_path, capsys,
                                                              objective, terms):
    splits = pickle.loads(tiny_data.read_bytes())
    for split in splits.values():
        for key in ("audio", "audio_lengths", "vision", "vision_lengths"):
            split.pop(key, None)
    data = tmp_path / "t.pkl"
    data.write_bytes(pickle.dumps(splits))
    assert train.main(args(data, tmp_path / "run", "--objective", objective)) == 0
    assert f"terms {terms}" in capsys.readouterr().out
    header = (tmp_path / "run" / "seed1" / "fusion.csv").read_text().splitlines()[0]
    assert all(f"loss_{t}" in header for t in terms)


@pytest.mark.parametrize("flags, message", [
    (["--feature-cache", "{tmp}/c"], "--feature-cache applies to --freeze-encoders"),
    (["--freeze-encoders", "--no-feature-cache", "--feature-cache", "{tmp}/c"],
     "--feature-cache applies to --freeze-encoders with the cache on"),
    (["--freeze-encoders", "--feature-cache", "{tmp}/file"], "is a file; expected a folder"),
])
def test_bad_feature_cache_flags_are_one_line(tiny_data, tmp_path, capsys, flags, message):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        train.main(args(tiny_data, tmp_path / "run",
                        *[f.format(tmp=tmp_path) for f in flags]))
    assert message in capsys.readouterr().err


# ------------------------------------------------- docs/scripts/confede_sampler_share.py
def share_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "confede_sampler_share.py"
    spec = importlib.util.spec_from_file_location("confede_sampler_share", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_share_script_reads_fine_tuned_runs_and_a_feature_cache(tiny_data, tmp_path, capsys,
                                                                    monkeypatch):
    script = share_script()
    out = tmp_path / "run"
    assert train.main(args(tiny_data, out, "--objective", "confede")) == 0
    monkeypatch.chdir(tmp_path)  # the run's data is found by the resolved path it trained on
    capsys.readouterr()
    script.main(["--model-best", *[str(out / "seed1" / "model_best.pt")] * 2])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("2 runs, mean ± std: as written ")
    assert "intended 100.0 ± 0.0 %" in lines[-1]
    features, labels = script.read_model_best(out / "seed1" / "model_best.pt")
    assert features.shape[0] == 40 and torch.isfinite(features).all()
    train_labels = pickle.loads(tiny_data.read_bytes())["train"]["regression_labels"]
    assert torch.equal(labels, torch.as_tensor(train_labels, dtype=torch.float32))
    with pytest.raises(SystemExit, match=r"--model-best .*nothing.pt: expected a train.py "
                                         r"run's seed<s>/model_best.pt"):
        script.main(["--model-best", str(tmp_path / "nothing.pt")])
    broken = tmp_path / "broken"
    (broken / "seed1").mkdir(parents=True)
    (broken / "seed1" / "model_best.pt").write_bytes(b"")
    (broken / "config.json").write_text('{"args": {}')
    with pytest.raises(SystemExit, match=r"config.json is not a train.py run's config.json "
                                         r"\(JSONDecodeError"):
        script.main(["--model-best", str(broken / "seed1" / "model_best.pt")])
    (broken / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(SystemExit, match=r"model_best.pt: not the model of that run"):
        script.main(["--model-best", str(broken / "seed1" / "model_best.pt")])
    frozen = tmp_path / "frozen"
    assert train.main(args(tiny_data, frozen, "--freeze-encoders")) == 0
    (cache,) = (frozen / "seed1").glob("encoder_features_*.pt")
    capsys.readouterr()
    script.main(["--data", str(tiny_data), "--encoder-features", str(cache)])
    printed = capsys.readouterr().out
    assert "40 clips; chance" in printed and "as_written=False: similar-similar share with " \
        "the anchor's label 100.0 %" in printed
