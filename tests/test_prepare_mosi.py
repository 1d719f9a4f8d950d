"""Tests of examples/dmmsa/prepare_mosi.py: raw clips -> MMSA feature pickle.

A fake dataset (3 videos x 3 clips: label CSV, synthetic .flac/.wav audio, a visual .npz) and a
tiny BERT folder are built once per module; every test reads them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, reject
from hypothesis import strategies as st

from dmmsa import prepare_mosi as pm
from mtobjectives.io import load_pickle_safely

MMSA_KEYS = {
    "id",
    "raw_text",
    "text_bert",
    "audio",
    "audio_lengths",
    "vision",
    "vision_lengths",
    "regression_labels",
}
VIDEOS = {"vidA": "train", "vid_B": "dev", "vidC": "test"}  # "vid_B": a video id with "_"
WORDS = ["good", "bad", "movie", "really", "not", "it", "was", "the", "film", "fun"]
VISUAL_DIM = 6
MAX_LEN = 8


def _rows() -> list[dict[str, str]]:
    rows = []
    for v, (video, mode) in enumerate(VIDEOS.items()):
        for clip in (1, 2, 3):
            k = 3 * v + clip
            text = " ".join(WORDS[(k + j) % len(WORDS)] for j in range(1 + k % 9))
            label = round(-3.0 + 6.0 * (k - 1) / 8, 3)
            rows.append(
                {
                    "id": f"{video}_{clip}",
                    "video_id": video,
                    "clip_id": str(clip),
                    "text": text.upper() if clip == 2 else text,
                    "label": str(label),
                    "mode": mode,
                }
            )
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_audio(folder: Path, rows: list[dict[str, str]]) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, row in enumerate(rows):
        seconds = 0.4 + 0.15 * k
        if k == 4:  # one stereo 22.05 kHz .wav: resampled and averaged to 16 kHz mono
            sr = 22050
            t = np.arange(int(seconds * sr)) / sr
            y = np.stack([np.sin(2 * np.pi * 180 * t), 0.5 * rng.standard_normal(t.size)], 1)
            soundfile.write(folder / f"{row['id']}.wav", 0.3 * y, sr)
            continue
        sr = 16000
        t = np.arange(int(seconds * sr)) / sr
        y = 0.3 * np.sin(2 * np.pi * (100 + 20 * k) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(
            folder / f"{row['id']}.flac" if k % 2 else folder / f"{row['id']}.wav",
            y.astype(np.float32),
            sr,
        )


def _write_tiny_bert(folder: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fake_mosi")
    rows = _rows()
    paths = {
        "root": root,
        "csv400": _write_csv(
            root / "labels.csv", rows, ["id", "video_id", "clip_id", "text", "label", "mode"]
        ),
        "csv": _write_csv(root / "label.csv", rows, ["id", "text", "label", "mode"]),
        "audio": root / "audio",
        "visual": root / "visual.npz",
        "bert": root / "bert",
    }
    _write_audio(paths["audio"], rows)
    features = np.random.default_rng(1).normal(size=(len(rows), VISUAL_DIM)).astype(np.float32)
    np.savez(paths["visual"], ids=np.array([r["id"] for r in rows]), features=features)
    _write_tiny_bert(paths["bert"])
    return paths


def _prepare(fake: dict[str, Path], out: Path, **kwargs) -> dict:
    kwargs.setdefault("labels", fake["csv400"])
    kwargs.setdefault("audio_dir", fake["audio"])
    kwargs.setdefault("visual", fake["visual"])
    kwargs.setdefault("audio_cache", out.parent / "cache.npz")
    return pm.prepare_mosi(
        out=out, text_encoder=fake["bert"], max_text_len=MAX_LEN, log=None, **kwargs
    )


def _load(path: Path) -> dict:
    """The pickle, read by the restricted unpickler; checked equal to what pickle.load reads."""
    with path.open("rb") as f:
        expected = pickle.load(f)
    loaded = load_pickle_safely(path)
    assert loaded.keys() == expected.keys()
    for name, split in expected.items():
        assert loaded[name].keys() == split.keys()
        for key, value in split.items():
            got = loaded[name][key]
            assert type(got) is type(value) and np.asarray(got).dtype == np.asarray(value).dtype
            assert np.array_equal(np.asarray(got), np.asarray(value)), (name, key)
    return loaded


@pytest.fixture(scope="module")
def official(fake: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("official") / "mosi.pkl"
    _prepare(fake, out, text_features=True, normalize="none")
    return _load(out)


@pytest.fixture(scope="module")
def kfold(fake: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("kfold")
    data = []
    for fold in range(3):
        out = folder / f"fold{fold}.pkl"
        summary = _prepare(fake, out, split="grouped-kfold", folds=3, fold=fold, valid_videos=1)
        data.append({"data": _load(out), "summary": summary})
    return data


def _video(mmsa_id: str) -> str:
    return mmsa_id.split("$_$")[0]


def _valid_frames(split: dict, modality: str) -> np.ndarray:
    values, lengths = split[modality], split[f"{modality}_lengths"]
    return values[np.arange(values.shape[1])[None, :] < lengths[:, None]]


# ---- format ---------------------------------------------------------------------------------


def test_pickle_has_the_mmsa_keys_shapes_and_dtypes(official: dict) -> None:
    assert set(official) == {"train", "valid", "test"}
    for split in official.values():
        n = len(split["id"])
        assert set(split) == MMSA_KEYS | {"text"}
        assert split["text_bert"].shape == (n, 3, MAX_LEN)
        assert split["text"].shape == (n, MAX_LEN, 8)
        assert split["audio"].shape[::2] == (n, pm.AudioFeatures().dim)
        assert split["vision"].shape == (n, 1, VISUAL_DIM)
        assert split["audio_lengths"].shape == split["vision_lengths"].shape == (n,)
        assert split["regression_labels"].shape == split["raw_text"].shape == (n,)
        for key in ("text_bert", "text", "audio", "vision", "regression_labels"):
            assert split[key].dtype == np.float32, key
        assert split["audio_lengths"].dtype == split["vision_lengths"].dtype == np.int64
        assert all(isinstance(x, str) for x in split["id"].tolist() + split["raw_text"].tolist())


def test_ids_are_video_dollar_clip_with_underscores_in_video_ids_kept(official: dict) -> None:
    assert official["valid"]["id"].tolist() == ["vid_B$_$1", "vid_B$_$2", "vid_B$_$3"]


def test_audio_length_is_the_same_for_every_split(official: dict) -> None:
    lengths = {split["audio"].shape[1] for split in official.values()}
    all_lengths = np.concatenate([s["audio_lengths"] for s in official.values()])
    assert lengths == {all_lengths.max()}


def test_official_split_follows_the_mode_column(official: dict) -> None:
    mapped = {"train": "train", "dev": "valid", "test": "test"}
    for row in _rows():
        split = official[mapped[row["mode"]]]
        ids = split["id"].tolist()
        k = ids.index(f"{row['video_id']}$_${row['clip_id']}")
        assert split["raw_text"][k] == row["text"]
        assert split["regression_labels"][k] == pytest.approx(float(row["label"]))


def test_both_csv_layouts_give_the_same_clips(fake: dict[str, Path]) -> None:
    assert pm.read_labels(fake["csv"]) == pm.read_labels(fake["csv400"])


# ---- text -----------------------------------------------------------------------------------


def test_text_bert_is_what_the_tokenizer_gives(official: dict, fake: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(fake["bert"]))
    split = official["train"]
    ref = tokenizer(
        list(split["raw_text"]),
        padding="max_length",
        truncation=True,
        max_length=MAX_LEN,
        return_tensors="np",
    )
    np.testing.assert_array_equal(split["text_bert"][:, 0], ref["input_ids"])
    np.testing.assert_array_equal(split["text_bert"][:, 1], ref["attention_mask"])
    np.testing.assert_array_equal(split["text_bert"][:, 2], ref["token_type_ids"])


def test_text_features_are_the_encoders_hidden_states_zero_on_padding(
    official: dict, fake: dict[str, Path]
) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(fake["bert"])).eval()
    split = official["test"]
    ids = torch.as_tensor(split["text_bert"].astype(np.int64))
    with torch.no_grad():
        hidden = model(
            input_ids=ids[:, 0], attention_mask=ids[:, 1], token_type_ids=ids[:, 2]
        ).last_hidden_state.numpy()
    mask = split["text_bert"][:, 1].astype(bool)
    np.testing.assert_allclose(split["text"][mask], hidden[mask], atol=1e-5)
    assert not split["text"][~mask].any()


# ---- audio and vision -----------------------------------------------------------------------


def test_audio_mfccs_are_librosas_averaged_over_four_frames(
    official: dict, fake: dict[str, Path]
) -> None:
    import librosa

    y, sr = soundfile.read(fake["audio"] / "vidA_2.flac", dtype="float32")
    mfcc = librosa.feature.mfcc(
        y=y, sr=sr, n_mfcc=20, n_fft=512, win_length=400, hop_length=160, n_mels=40
    ).T
    expected = np.stack([mfcc[i : i + 4].mean(0) for i in range(0, len(mfcc), 4)])
    split = official["train"]
    k = split["id"].tolist().index("vidA$_$2")
    assert split["audio_lengths"][k] == math.ceil((1 + len(y) // 160) / 4) == len(expected)
    np.testing.assert_allclose(
        split["audio"][k, : len(expected), :20], expected, rtol=1e-4, atol=1e-3
    )
    assert not split["audio"][k, len(expected) :].any()


def test_audio_features_are_finite_and_name_every_dimension(official: dict) -> None:
    config = pm.AudioFeatures()
    assert len(config.names) == config.dim == 44
    for split in official.values():
        assert np.isfinite(split["audio"]).all()


def test_long_clips_are_averaged_down_to_audio_max_frames(
    fake: dict[str, Path], tmp_path: Path
) -> None:
    _prepare(fake, tmp_path / "short.pkl", audio_max_frames=5, visual=None)
    for split in _load(tmp_path / "short.pkl").values():
        assert split["audio"].shape[1] == 5
        assert split["audio_lengths"].max() == 5


def test_cap_frames_averages_nearly_equal_segments() -> None:
    x = np.arange(10.0)[:, None]
    bounds = [i * 10 // 4 for i in range(5)]  # segment i: frames [floor(iT/M), floor((i+1)T/M))
    expected = [np.mean(x[bounds[i] : bounds[i + 1]]) for i in range(4)]
    np.testing.assert_allclose(pm.cap_frames(x, 4).ravel(), expected)
    assert pm.cap_frames(x, 10) is x


def test_vision_holds_the_npz_vector_of_each_clip(official: dict, fake: dict[str, Path]) -> None:
    with np.load(fake["visual"]) as z:
        by_id = dict(zip(z["ids"].tolist(), z["features"]))
    for split in official.values():
        assert (split["vision_lengths"] == 1).all()
        for mmsa_id, vec in zip(split["id"], split["vision"][:, 0]):
            np.testing.assert_array_equal(vec, by_id[mmsa_id.replace("$_$", "_")])


def test_normalisation_uses_training_statistics_and_keeps_padding_zero(kfold: list[dict]) -> None:
    train = kfold[0]["data"]["train"]
    for modality in ("audio", "vision"):
        frames = _valid_frames(train, modality)
        np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-4)
        varying = frames.std(0) > 0
        np.testing.assert_allclose(frames.std(0)[varying], 1.0, atol=1e-3)
    mask = np.arange(train["audio"].shape[1])[None, :] >= train["audio_lengths"][:, None]
    assert not train["audio"][mask].any()


def test_audio_cache_is_reused_by_later_folds(kfold: list[dict]) -> None:
    computed = [fold["summary"]["audio"]["computed"] for fold in kfold]
    assert computed == [9, 0, 0]


def test_audio_cache_recomputes_a_changed_file(fake: dict[str, Path], tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for f in fake["audio"].iterdir():
        (audio / f.name).write_bytes(f.read_bytes())
    first = _prepare(fake, tmp_path / "a.pkl", audio_dir=audio, visual=None)
    y, sr = soundfile.read(audio / "vidA_2.flac")
    soundfile.write(audio / "vidA_2.flac", np.concatenate([y, y]), sr)
    second = _prepare(fake, tmp_path / "b.pkl", audio_dir=audio, visual=None)
    assert (first["audio"]["computed"], second["audio"]["computed"]) == (9, 1)


# ---- text-only ------------------------------------------------------------------------------


def test_text_only_mode_omits_audio_and_vision(fake: dict[str, Path], tmp_path: Path) -> None:
    summary = _prepare(fake, tmp_path / "text.pkl", labels=fake["csv"], audio_dir=None, visual=None)
    data = _load(tmp_path / "text.pkl")
    for split in data.values():
        assert set(split) == {"id", "raw_text", "text_bert", "regression_labels"}
    assert summary["modalities"] == ["text"]
    assert not (tmp_path / "cache.npz").exists()


# ---- grouped folds --------------------------------------------------------------------------


def test_grouped_folds_never_share_a_video_between_parts(kfold: list[dict]) -> None:
    for fold in kfold:
        videos = {name: {_video(i) for i in split["id"]} for name, split in fold["data"].items()}
        assert all(videos.values())
        assert not videos["train"] & videos["valid"]
        assert not videos["train"] & videos["test"]
        assert not videos["valid"] & videos["test"]


def test_grouped_folds_test_every_clip_exactly_once(kfold: list[dict]) -> None:
    tested = [i for fold in kfold for i in fold["data"]["test"]["id"]]
    every = {f"{r['video_id']}$_${r['clip_id']}" for r in _rows()}
    assert sorted(tested) == sorted(every)
    for fold in kfold:
        assert sorted(i for split in fold["data"].values() for i in split["id"]) == sorted(every)


@given(
    sizes=st.lists(st.integers(1, 6), min_size=6, max_size=12),
    folds=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_grouped_kfold_split_partitions_videos_for_any_group_sizes(
    sizes: list[int], folds: int, seed: int
) -> None:
    groups = [f"v{g}" for g, n in enumerate(sizes) for _ in range(n)]
    np.random.default_rng(seed).shuffle(groups)
    test_counts = np.zeros(len(groups), dtype=int)
    for fold in range(folds):
        try:
            split = pm.grouped_kfold_split(
                groups, folds=folds, fold=fold, seed=seed, valid_groups=1
            )
        except ValueError as err:  # a fold whose training part is a single video
            assert "valid_videos: expected fewer than the 1 training videos" in str(err)
            reject()
        again = pm.grouped_kfold_split(groups, folds=folds, fold=fold, seed=seed, valid_groups=1)
        assert all(np.array_equal(split[name], again[name]) for name in split)  # deterministic
        parts = {name: {groups[i] for i in idx} for name, idx in split.items()}
        assert len(parts["valid"]) == 1
        assert not (
            parts["train"] & parts["valid"]
            or parts["train"] & parts["test"]
            or parts["valid"] & parts["test"]
        )
        assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(len(groups)))
        test_counts[split["test"]] += 1
    assert (test_counts == 1).all()


def test_grouped_kfold_split_rejects_too_many_validation_videos() -> None:
    with pytest.raises(ValueError, match="valid_videos"):
        pm.grouped_kfold_split(list("aabbcc"), folds=3, fold=0, valid_groups=2)


# ---- errors ---------------------------------------------------------------------------------


def test_missing_audio_file_is_a_clear_error(fake: dict[str, Path], tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for f in fake["audio"].iterdir():
        if not f.name.startswith("vidC_3."):
            os.symlink(f, audio / f.name)
    with pytest.raises(ValueError, match=r"audio_dir: .*1 of 9 clips: 'vidC_3'"):
        _prepare(fake, tmp_path / "x.pkl", audio_dir=audio)
    assert not (tmp_path / "x.pkl").exists()


def _bad_csv(tmp_path: Path, **changes: str) -> Path:
    rows = _rows()
    for key, value in changes.items():
        rows[1][key] = value
    return _write_csv(tmp_path / "bad.csv", rows, ["id", "text", "label", "mode"])


def test_out_of_range_label_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"1 labels outside \[-3, 3\]: 'vidA_2=3.5'"):
        pm.read_labels(_bad_csv(tmp_path, label="3.5"))


def test_nan_label_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 NaN labels: 'vidA_2'"):
        pm.read_labels(_bad_csv(tmp_path, label="nan"))


def test_unknown_split_name_is_a_clear_error(fake: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode: expected split names .* got 'training'"):
        _prepare(
            fake,
            tmp_path / "x.pkl",
            labels=_bad_csv(tmp_path, mode="training"),
            audio_dir=None,
            visual=None,
        )


def test_official_split_without_test_clips_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no clip in \['test'\].*grouped-kfold"):
        pm.official_split(["train", "dev", "train"])


def test_visual_file_without_some_clips_is_a_clear_error(
    fake: dict[str, Path], tmp_path: Path
) -> None:
    np.savez(tmp_path / "v.npz", ids=np.array(["vidA_1"]), features=np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"visual: .*no features for 8 of 9 clips: 'vidA_2'"):
        pm.read_visual(tmp_path / "v.npz", [r["id"] for r in _rows()])


# ---- command line ---------------------------------------------------------------------------


def test_command_line_writes_the_pickle_and_a_summary(
    fake: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.pkl"
    status = pm.main(
        [
            "--labels",
            str(fake["csv"]),
            "--text-encoder",
            str(fake["bert"]),
            "--max-text-len",
            "12",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    summary = json.loads((tmp_path / "cli.pkl.json").read_text())
    assert {k: v["clips"] for k, v in summary["splits"].items()} == {
        "train": 3,
        "valid": 3,
        "test": 3,
    }
    assert summary["splits"]["test"]["shapes"]["text_bert"] == [3, 3, 12]
    assert "wrote" in capsys.readouterr().out


def test_command_line_reports_bad_input_with_status_2(
    fake: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = pm.main(
        [
            "--labels",
            str(_bad_csv(tmp_path, label="-4")),
            "--text-encoder",
            str(fake["bert"]),
            "--out",
            str(tmp_path / "x.pkl"),
        ]
    )
    assert status == 2
    assert "labels outside [-3, 3]: 'vidA_2=-4'" in capsys.readouterr().err
