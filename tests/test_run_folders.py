"""A run folder describes one run: what ``train.py`` and ``compare`` re-use, and who writes there.

Each case below reproduced a run folder that mixed two runs before the fix (issue 21, B).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from dmmsa import compare, runlock, synthetic, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    return synthetic.make_synthetic(path, seed=0, n_train=32, n_valid=12, n_test=12)



def fusion_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--stage", "fusion", "--epochs", "1",
            "--batch-size", "16", "--threads", "1", "--limit-batches", "1", *extra]


def mae_of(out: Path) -> float:
    return json.loads((out / "results.json").read_text())["per_seed"][0]["test"]["MAE"]


# ------------------------------------------------------------ a finished seed's settings
def test_resume_never_reuses_a_seed_finished_with_other_settings(
        tiny_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    assert train.main(fusion_args(tiny_data, out, "--lr", "0.01")) == 0
    high_lr = mae_of(out)

    def killed(*args, **kwargs):  # the new run is stopped after it rewrote config.json
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train, "run_seed", killed)
        with pytest.raises(KeyboardInterrupt):
            train.main(fusion_args(tiny_data, out))
    assert not (out / runlock.LOCK_NAME).exists()  # released on the way out
    capsys.readouterr()
    assert train.main(fusion_args(tiny_data, out, "--resume")) == 0
    printed = capsys.readouterr().out
    assert "was made with other settings" in printed and "lr: 0.01 →" in printed
    assert "finished earlier" not in printed
    fresh = tmp_path / "fresh"
    assert train.main(fusion_args(tiny_data, fresh)) == 0
    assert mae_of(out) == mae_of(fresh) != high_lr  # trained again, with this run's lr


def test_a_result_without_fingerprint_is_trained_again(tiny_data: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = tmp_path / "run"
    assert train.main(fusion_args(tiny_data, out)) == 0
    result = out / "seed1" / "result.json"
    saved = json.loads(result.read_text())
    saved.pop("fingerprint")
    result.write_text(json.dumps(saved))  # as an older train.py wrote it
    capsys.readouterr()
    assert train.main(fusion_args(tiny_data, out, "--resume")) == 0
    assert "no fingerprint" in capsys.readouterr().out
    assert "fingerprint" in json.loads(result.read_text())
    assert "fingerprint" not in json.loads((out / "results.json").read_text())["per_seed"][0]


def test_resume_names_the_data_by_its_resolved_path_not_its_spelling(
        tiny_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    assert train.main(fusion_args(tiny_data.resolve(), out)) == 0
    monkeypatch.chdir(tiny_data.parent.parent)
    relative = Path(os.path.relpath(tiny_data, Path.cwd()))
    assert not relative.is_absolute()
    capsys.readouterr()
    assert train.main(fusion_args(relative, out, "--resume")) == 0
    assert "finished earlier" in capsys.readouterr().out


def test_resume_refuses_the_same_path_with_other_content(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.pkl"
    data.write_bytes(tiny_data.read_bytes())
    out = tmp_path / "run"
    assert train.main(fusion_args(data, out)) == 0
    synthetic.make_synthetic(data, seed=1, n_train=32, n_valid=12, n_test=12)  # replaced
    with pytest.raises(SystemExit, match=r"data_sha256: '[0-9a-f]{64}' → '[0-9a-f]{64}'"):
        train.main(fusion_args(data, out, "--resume"))


# ------------------------------------------------------------------ one writer per --out
def live_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)


def hold(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"program": "train.py", "pid": pid, "started": "2026-12-06 10:00:00",
              "host": host or runlock.socket.gethostname()}
    (out / runlock.LOCK_NAME).write_text(json.dumps(record))


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tiny_data: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    other = live_process()
    try:
        hold(out, other.pid)
        with pytest.raises(SystemExit, match=rf"another run writes there \(train.py, pid "
                                             rf"{other.pid} on host .*\); wait for it"):
            train.main(fusion_args(tiny_data, out))
        assert not (out / "config.json").exists()  # refused before writing anything
    finally:
        other.communicate(b"")
    assert train.main(fusion_args(tiny_data, out)) == 0  # its process has ended: stale lock
    assert not (out / runlock.LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_and_said(tmp_path: Path, capsys) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    hold(tmp_path, int(done.stdout))
    with runlock.hold_output(tmp_path, "train.py"):
        holder = json.loads((tmp_path / runlock.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
    assert "taking over a stale lock" in capsys.readouterr().out
    assert not (tmp_path / runlock.LOCK_NAME).exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path: Path) -> None:
    hold(tmp_path, 1, host="another-host")
    with pytest.raises(SystemExit, match="pid 1 on host another-host"):
        with runlock.hold_output(tmp_path, "train.py"):
            pass
    assert (tmp_path / runlock.LOCK_NAME).exists()


@pytest.mark.parametrize("program", ["train", "compare"])
def test_out_naming_a_file_is_one_line_error(tiny_data: Path, tmp_path: Path,
                                             program: str) -> None:
    out = tmp_path / "a_file"
    out.write_text("mine")
    with pytest.raises(SystemExit, match=rf"--out {out}: is a file; expected a folder") as caught:
        if program == "train":
            train.main(fusion_args(tiny_data, out))
        else:
            compare.main(["--data", str(tiny_data), "--config", "synthetic", "--seeds", "1",
                          "--variants", "baseline", "--out", str(out)])
    assert "\n" not in str(caught.value.code)
    assert out.read_text() == "mine"


# ------------------------------------------------------------ compare's cells
def test_compare_refuses_a_cell_made_with_other_variant_flags(tiny_data: Path, tmp_path: Path,
                                                              capsys) -> None:
    def argv(lr: str) -> list[str]:
        return ["--data", str(tiny_data), "--config", "synthetic", "--seeds", "1",
                "--variant", f"v=--lr {lr}", "--variants", "v", "--reference", "v", "--out",
                str(tmp_path), "--extra", "--pretrain-epochs", "1", "--epochs", "1",
                "--batch-size", "16", "--limit-batches", "1"]

    assert compare.main(argv("0.0005")) == 0
    table = (tmp_path / "table.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"1 finished run\(s\) were made with other settings.*"
                                         r"fold0 seed1 v in .*lr: 0.0005 → 0.01"):
        compare.main(argv("0.01"))
    assert (tmp_path / "table.md").read_text() == table  # nothing reported under the new flags
    assert compare.main(argv("0.0005")) == 0  # the same flags: re-used
    assert "3 runs, 3 finished earlier (skipped)" in capsys.readouterr().out



# ------------------------------------- every bad argument or file: one line, before any work
def text_audio_file(tiny_data: Path, tmp_path: Path) -> Path:
    splits = pickle.loads(tiny_data.read_bytes())
    for split in splits.values():
        split.pop("vision"), split.pop("vision_lengths", None)
    path = tmp_path / "text_audio.pkl"
    path.write_bytes(pickle.dumps(splits))
    return path


def refused(capsys, argv: list[str], *names: str) -> str:
    """train.py must stop with one line naming ``names``, before writing a result."""
    with pytest.raises(SystemExit) as caught:
        train.main(argv)
    message = caught.value.code if isinstance(caught.value.code, str) else (
        capsys.readouterr().err.strip().splitlines()[-1])
    assert "\n" not in message and "Traceback" not in message, message
    for name in names:
        assert name in message, (name, message)
    return message


@pytest.mark.parametrize("flags, names", [
    (["--lr", "inf"], ["--lr must be a finite number > 0, got inf"]),
    (["--lr", "nan"], ["--lr must be a finite number > 0, got nan"]),
    (["--cl-temperature", "1e-40"], ["--cl-temperature 1e-40", "temperature must be >="]),
])
def test_bad_numbers_are_refused_when_the_command_starts(tiny_data, tmp_path, capsys, flags,
                                                          names) -> None:
    refused(capsys, fusion_args(tiny_data, tmp_path / "run", *flags), *names)
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_label_csv_as_data_is_one_line_pointing_to_prepare(tmp_path, capsys) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("id,text,label,mode\nv_1,good,1.0,train\n")
    refused(capsys, fusion_args(csv, tmp_path / "run"), "--data", str(csv),
            "not a readable pickle", "python -m dmmsa.prepare")


def test_modalities_the_data_lacks_are_refused(tiny_data, tmp_path, capsys) -> None:
    data = text_audio_file(tiny_data, tmp_path)
    refused(capsys, fusion_args(data, tmp_path / "run", "--modalities", "TV"),
            "--modalities TV", "holds TA, without V")
    assert train.main(fusion_args(data, tmp_path / "ok", "--modalities", "TA")) == 0


def test_a_text_input_the_data_lacks_is_refused(tiny_data, tmp_path, capsys) -> None:
    splits = pickle.loads(tiny_data.read_bytes())
    for split in splits.values():
        split.pop("text")
    data = tmp_path / "ids_only.pkl"
    data.write_bytes(pickle.dumps(splits))
    refused(capsys, fusion_args(data, tmp_path / "run"), "text source 'features'",
            "the key 'text'", "--text-source bert --text-model FOLDER")


def test_a_text_model_that_cannot_be_loaded_is_refused_before_training(tiny_data, tmp_path,
                                                                         capsys) -> None:
    refused(capsys, fusion_args(tiny_data, tmp_path / "run", "--text-model",
                                str(tmp_path / "no_such_model")),
            "--text-model", "no_such_model", "cannot be loaded")
    assert not (tmp_path / "run" / "seed1").exists()


def test_a_text_model_with_fewer_positions_than_the_data_is_refused(tiny_data, tmp_path,
                                                                      capsys) -> None:
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16, max_position_embeddings=4).save_pretrained(folder)
    length = pickle.loads(tiny_data.read_bytes())["train"]["text_bert"].shape[2]
    assert length > 4
    refused(capsys, fusion_args(tiny_data, tmp_path / "run", "--text-model", str(folder)),
            "it has 4 positions", f"fewer than the {length} tokens per clip")
