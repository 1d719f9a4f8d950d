"""The example's data layer: MMSA feature pickles (checked, cleaned, served), synthetic data."""

from __future__ import annotations

import copy
import importlib.util
import math
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.utils.data.distributed import DistributedSampler

from dmmsa import batching, data, synthetic

SMALL = {"n_train": 30, "n_valid": 12, "n_test": 12}
FEATURE_KEYS = ("text", "audio", "vision")
MODALITY_KEYS = {"A": ("audio", "audio_lengths"), "V": ("vision", "vision_lengths")}


@pytest.fixture(scope="module")
def small() -> dict:
    """A small synthetic dataset in memory (copy it before changing it)."""
    return synthetic.build_synthetic(seed=0, **SMALL)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.make_synthetic(tmp_path_factory.mktemp("syn") / "small.pkl", seed=0, **SMALL)


def write(path: Path, content: object) -> Path:
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=4)
    return path


def load_quietly(path: Path, **kwargs) -> dict[str, data.MMSASplit]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.MMSADataWarning)  # clean files warn about nothing
        return data.load_mmsa(path, **kwargs)


def without(raw: dict, modalities: str, text_keys: tuple[str, ...] = ()) -> dict:
    """A copy of ``raw`` whose splits lack the keys of ``modalities`` (and ``text_keys``)."""
    raw = copy.deepcopy(raw)
    for split in raw.values():
        for key in (*sum((MODALITY_KEYS[m] for m in modalities), ()), *text_keys):
            del split[key]
    return raw


# ------------------------------------------------------------------------------ synthetic


def test_synthetic_round_trip_keeps_every_key(small: dict, small_file: Path) -> None:
    loaded = load_quietly(small_file, label_range=3.0)
    assert list(loaded) == ["train", "valid", "test"]
    for name, split in loaded.items():
        raw = small[name]
        assert len(split) == SMALL[f"n_{name}"]
        assert split.ids == list(raw["id"]) and split.raw_text == list(raw["raw_text"])
        np.testing.assert_array_equal(split.text, raw["text"])
        np.testing.assert_array_equal(split.text_bert, raw["text_bert"])
        np.testing.assert_array_equal(split.audio, raw["audio"])
        np.testing.assert_array_equal(split.vision, raw["vision"])
        np.testing.assert_array_equal(split.audio_lengths, raw["audio_lengths"])
        np.testing.assert_array_equal(split.vision_lengths, raw["vision_lengths"])
        assert sorted(split.labels) == ["A", "M", "T", "V"]
        np.testing.assert_array_equal(split.labels["M"], raw["regression_labels"])
        for m in "TAV":
            np.testing.assert_array_equal(split.labels[m], raw[f"regression_labels_{m}"])


def test_synthetic_shapes_and_dtypes_follow_the_arguments(small_file: Path) -> None:
    split = load_quietly(small_file)["train"]
    n = SMALL["n_train"]
    assert split.text.shape == (n, 8, 32) and split.text.dtype == np.float32
    assert split.text_bert.shape == (n, 3, 8) and split.text_bert.dtype == np.int64
    assert split.audio.shape == (n, 12, 5) and split.vision.shape == (n, 10, 20)
    assert split.feature_dims == {"T": 32, "A": 5, "V": 20}
    assert not split.aligned


def test_synthetic_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = synthetic.make_synthetic(tmp_path / "a.pkl", seed=3, **SMALL)
    b = synthetic.make_synthetic(tmp_path / "b.pkl", seed=3, **SMALL)
    c = synthetic.make_synthetic(tmp_path / "c.pkl", seed=4, **SMALL)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_synthetic_splits_do_not_depend_on_other_split_sizes() -> None:
    a = synthetic.build_synthetic(seed=0, n_train=30, n_valid=12, n_test=12)
    b = synthetic.build_synthetic(seed=0, n_train=30, n_valid=12, n_test=40)
    for key in ("audio", "text_bert", "regression_labels"):
        np.testing.assert_array_equal(a["train"][key], b["train"][key])


def test_synthetic_labels_lie_on_the_grid_inside_the_range(small: dict) -> None:
    for split in small.values():
        for key in ("regression_labels", "regression_labels_T", "regression_labels_A",
                    "regression_labels_V"):
            labels = split[key].astype(np.float64)
            assert np.all(np.abs(labels) <= 3.0)
            np.testing.assert_allclose(labels * 3, np.round(labels * 3), atol=1e-5)
            assert not np.any(np.signbit(labels) & (labels == 0))  # no negative zeros


def test_synthetic_sims_like_grid() -> None:
    raw = synthetic.build_synthetic(seed=1, label_range=1.0, label_step=0.2, **SMALL)
    labels = raw["train"]["regression_labels"].astype(np.float64)
    assert np.abs(labels).max() <= 1.0
    np.testing.assert_allclose(labels * 5, np.round(labels * 5), atol=1e-5)


def test_synthetic_ids_name_video_and_clip_and_no_video_spans_two_splits(small: dict) -> None:
    videos = {}
    for name, split in small.items():
        assert all(re.fullmatch(r"syn\d{4}\$_\$\d+", i) for i in split["id"])
        videos[name] = {i.split("$_$")[0] for i in split["id"]}
    assert not videos["train"] & videos["valid"]
    assert not videos["train"] & videos["test"]
    assert not videos["valid"] & videos["test"]


def test_synthetic_text_views_agree(small: dict) -> None:
    split = small["train"]
    tokens, _ = synthetic.vocabulary()
    ids, mask = split["text_bert"][:, 0], split["text_bert"][:, 1]
    for row, valid, text in zip(ids, mask, split["raw_text"]):
        length = int(valid.sum())
        assert row[0] == synthetic.CLS_ID and row[length - 1] == synthetic.SEP_ID
        assert np.all(row[length:] == synthetic.PAD_ID)
        assert " ".join(tokens[t] for t in row[1 : length - 1]) == text
    # token features exist exactly where the attention mask is 1
    assert np.array_equal(np.abs(split["text"]).sum(-1) > 0, mask.astype(bool))


def test_synthetic_streams_are_zero_past_their_lengths(small: dict) -> None:
    split = small["train"]
    for key in ("audio", "vision"):
        steps = np.arange(split[key].shape[1])
        past = steps[None, :] >= split[f"{key}_lengths"][:, None]
        assert np.all(split[key][past] == 0)
        assert np.all(np.abs(split[key][~past]).sum(-1) > 0)


def test_synthetic_aligned_file_has_no_lengths(tmp_path: Path) -> None:
    path = synthetic.make_synthetic(tmp_path / "aligned.pkl", aligned=True, **SMALL)
    with open(path, "rb") as f:
        assert "audio_lengths" not in pickle.load(f)["train"]
    split = load_quietly(path)["train"]
    assert split.aligned and split.audio.shape[1] == split.vision.shape[1] == 8
    item = batching.MSADataset(split)[0]
    assert int(item["audio_lengths"]) == int(item["vision_lengths"]) == 8


def test_synthetic_cli_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.pkl"
    synthetic.main(["--out", str(out), "--seed", "2", "--n-train", "20", "--n-valid", "10",
                    "--n-test", "10", "--d-audio", "3"])
    assert "wrote" in capsys.readouterr().out
    split = load_quietly(out)["valid"]
    assert len(split) == 10 and split.audio.shape[2] == 3


def test_mmsa_reference_loader_reads_the_synthetic_file(small_file: Path) -> None:
    # MMSA's own MMDataset, loaded from its file (the package __init__ imports every model)
    spec = importlib.util.find_spec("MMSA")
    location = Path(spec.origin).parent / "data_loader.py"
    module_spec = importlib.util.spec_from_file_location("mmsa_data_loader", location)
    reference = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(reference)
    ours = load_quietly(small_file)["valid"]
    for use_bert in (True, False):
        args = {"dataset_name": "sims", "custom_feature": str(small_file), "featurePath": None,
                "use_bert": use_bert, "feature_dims": [0, 0, 0], "feature_T": None,
                "feature_A": None, "feature_V": None, "need_data_aligned": False}
        theirs = reference.MMDataset(args, mode="valid")
        np.testing.assert_array_equal(theirs.text, ours.text_bert if use_bert else ours.text)
        np.testing.assert_array_equal(theirs.audio, ours.audio)
        np.testing.assert_array_equal(theirs.vision, ours.vision)
        np.testing.assert_array_equal(theirs.audio_lengths, ours.audio_lengths)
        assert list(theirs.ids) == ours.ids
        for m in "MTAV":
            np.testing.assert_array_equal(theirs.labels[m], ours.labels[m])


# ------------------------------------------------------------------------------ validation


def _drop_key(raw: dict) -> None:
    del raw["train"]["vision"]


def _rename_split(raw: dict) -> None:
    raw["dev"] = raw.pop("valid")


def _short_audio(raw: dict) -> None:
    raw["train"]["audio"] = raw["train"]["audio"][:-1]


def _flat_audio(raw: dict) -> None:
    raw["valid"]["audio"] = raw["valid"]["audio"].mean(axis=1)


def _two_row_text_bert(raw: dict) -> None:
    raw["train"]["text_bert"] = raw["train"]["text_bert"][:, :2]


def _nan_label(raw: dict) -> None:
    raw["test"]["regression_labels"][4] = np.nan


def _nan_unimodal_label(raw: dict) -> None:
    raw["train"]["regression_labels_A"][2] = np.nan


def _label_out_of_range(raw: dict) -> None:
    raw["train"]["regression_labels"][7] = 3.5


def _length_out_of_range(raw: dict) -> None:
    raw["train"]["vision_lengths"][3] = 11


def _negative_length(raw: dict) -> None:
    raw["valid"]["audio_lengths"][0] = -1


def _text_keys_missing(raw: dict) -> None:
    del raw["train"]["text"], raw["train"]["text_bert"]


def _feature_sizes_differ(raw: dict) -> None:
    raw["test"]["audio"] = raw["test"]["audio"][:, :, :3].copy()


def _strings_as_audio(raw: dict) -> None:
    raw["train"]["audio"] = np.array(["a"] * len(raw["train"]["audio"]))


def _empty_split(raw: dict) -> None:
    raw["test"] = {key: value[:0] for key, value in raw["test"].items()}


def _not_a_dict(raw: dict) -> None:
    raw["train"] = list(raw["train"].values())


def _mask_not_binary(raw: dict) -> None:
    raw["train"]["text_bert"][0, 1, 0] = 2


def _modality_missing_in_one_split(raw: dict) -> None:
    del raw["valid"]["vision"], raw["valid"]["vision_lengths"]


def _lengths_without_features(raw: dict) -> None:
    for split in raw.values():
        del split["audio"]


def _text_only_without_text(raw: dict) -> None:
    for split in raw.values():
        for key in ("text", "text_bert", *MODALITY_KEYS["A"], *MODALITY_KEYS["V"]):
            del split[key]


BROKEN: dict[str, tuple[Callable[[dict], None], tuple[str, ...]]] = {
    "missing key": (_drop_key, ("split 'train'", "missing key(s) 'vision'", "'audio'")),
    "wrong split names": (_rename_split, ("missing split 'valid'", "'dev'", "rename 'dev'")),
    "mismatched lengths": (_short_audio, ("split 'train'", "'audio' has 29 samples",
                                          "'regression_labels' has 30")),
    "wrong rank": (_flat_audio, ("split 'valid'", "'audio' must have 3 dimension(s)",
                                 "shape (12, 5)")),
    "text_bert rows": (_two_row_text_bert, ("'text_bert' must have shape [N, 3, L]",)),
    "NaN labels": (_nan_label, ("split 'test'", "'regression_labels'", "1 non-finite", "1 NaN",
                                "index 4")),
    "NaN unimodal labels": (_nan_unimodal_label, ("'regression_labels_A'", "index 2")),
    "labels out of range": (_label_out_of_range, ("split 'train'", "outside label_range [-3, 3]",
                                                  "index 7: 3.5")),
    "lengths out of range": (_length_out_of_range, ("'vision_lengths'", "outside [0, 10]",
                                                    "index 3: 11")),
    "negative lengths": (_negative_length, ("split 'valid'", "'audio_lengths'", "index 0: -1")),
    "no text": (_text_keys_missing, ("missing key(s) 'text' or 'text_bert'",)),
    "feature sizes differ": (_feature_sizes_differ, ("'audio' has 5 features in split 'train'",
                                                     "but 3 in split 'test'")),
    "non-numeric features": (_strings_as_audio, ("'audio' must be a numeric array",)),
    "empty split": (_empty_split, ("split 'test'", "has no samples")),
    "split not a dict": (_not_a_dict, ("split 'train'", "must be a dict of arrays, got list")),
    "mask not 0/1": (_mask_not_binary, ("attention mask", "only 0 and 1")),
    "modality missing in one split": (
        _modality_missing_in_one_split,
        ("split 'valid' is missing key(s) 'vision', which split 'train' has",
         "same modalities", "split 'valid': 'T', 'A'"),
    ),
    "lengths without features": (_lengths_without_features,
                                 ("split 'train'", "missing key(s) 'audio'", "'audio_lengths'")),
    "text-only file without text": (_text_only_without_text,
                                    ("missing key(s) 'text' or 'text_bert'",)),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_raises_a_message_naming_the_problem(
    case: str, small: dict, tmp_path: Path
) -> None:
    breaker, fragments = BROKEN[case]
    raw = copy.deepcopy(small)
    breaker(raw)
    path = write(tmp_path / "broken.pkl", raw)
    with pytest.raises(data.MMSADataError) as info:
        data.load_mmsa(path, label_range="mosi")
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_truncated_pickle_is_named(small_file: Path, tmp_path: Path) -> None:
    blob = small_file.read_bytes()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.MMSADataError, match=r"truncated.pkl: not a readable pickle, or "
                                                 r"truncated"):
        data.load_mmsa(path)


def test_non_pickle_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not features\n")
    with pytest.raises(data.MMSADataError, match="notes.txt: not a readable pickle"):
        data.load_mmsa(path)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_path_that_is_not_a_file_is_named(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "features.pkl"
    if kind == "directory":
        path.mkdir()
    expected = "does not exist" if kind == "missing" else "is a directory"
    with pytest.raises(data.MMSADataError, match=f"not a file \\({expected}\\)"):
        data.load_mmsa(path)


def test_top_level_must_be_a_dict_of_splits(tmp_path: Path) -> None:
    path = write(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(data.MMSADataError, match="must hold a dict of splits .* got list"):
        data.load_mmsa(path)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(data.MMSADataError, ValueError)


def test_label_range_by_dataset_name(small_file: Path) -> None:
    load_quietly(small_file, label_range="mosi")
    with pytest.raises(data.MMSADataError, match=r"outside label_range \[-1, 1\]"):
        data.load_mmsa(small_file, label_range="sims")
    with pytest.raises(ValueError, match="label_range must be"):
        data.load_mmsa(small_file, label_range="imdb")


def test_labels_stored_as_column_and_float_token_ids_are_accepted(
    small: dict, tmp_path: Path
) -> None:
    raw = copy.deepcopy(small)
    for split in raw.values():
        split["regression_labels"] = split["regression_labels"][:, None].astype(np.float64)
        split["text_bert"] = split["text_bert"].astype(np.float32)
    loaded = load_quietly(write(tmp_path / "mmsa_style.pkl", raw))["train"]
    assert loaded.labels["M"].shape == (30,) and loaded.labels["M"].dtype == np.float32
    assert loaded.text_bert.dtype == np.int64
    np.testing.assert_array_equal(loaded.text_bert, small["train"]["text_bert"])


def test_extra_keys_and_splits_are_ignored(small: dict, tmp_path: Path) -> None:
    raw = copy.deepcopy(small)
    raw["train"]["classification_labels"] = np.zeros(30)
    raw["extra"] = {}
    assert list(load_quietly(write(tmp_path / "extra.pkl", raw))) == ["train", "valid", "test"]


# ------------------------------------------------------------------------------ cleaning


def _corrupt(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    audio = raw["train"]["audio"]
    audio[0, 0, :3] = -np.inf  # 3 -inf
    audio[1, 0, 0] = np.nan  # 1 NaN
    audio[2, 0, 0] = 5e4  # 1 huge
    raw["train"]["vision"][0, 0, 0] = np.inf  # 1 +inf
    raw["test"]["audio"][0, 0, 0] = -2e5  # 1 huge
    return raw


def test_bad_feature_values_are_replaced_with_zero_and_counted(
    small: dict, tmp_path: Path
) -> None:
    path = write(tmp_path / "dirty.pkl", _corrupt(small))
    with pytest.warns(data.MMSADataWarning) as record:
        loaded = data.load_mmsa(path)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 3  # one per split and modality that had bad values
    assert any("split 'train': replaced 5 value(s) of 'audio' with 0 (3 -inf, 0 +inf, 1 NaN, "
               "1 with |x| > 10000)" in m for m in messages)
    assert any("split 'train': replaced 1 value(s) of 'vision' with 0 (0 -inf, 1 +inf" in m
               for m in messages)
    assert any("split 'test': replaced 1 value(s) of 'audio'" in m for m in messages)
    audio = loaded["train"].audio
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1e4
    assert np.all(audio[0, 0, :3] == 0) and audio[1, 0, 0] == 0 and audio[2, 0, 0] == 0
    np.testing.assert_array_equal(audio[3:], small["train"]["audio"][3:])  # the rest untouched


def test_huge_threshold_is_configurable(small: dict, tmp_path: Path) -> None:
    path = write(tmp_path / "dirty.pkl", _corrupt(small))
    with pytest.warns(data.MMSADataWarning) as record:
        loaded = data.load_mmsa(path, max_abs=math.inf)
    assert len(record) == 2  # the test split's -2e5 is kept
    assert loaded["train"].audio[2, 0, 0] == 5e4 and loaded["test"].audio[0, 0, 0] == -2e5


def test_clean_file_gives_no_warning(small_file: Path) -> None:
    load_quietly(small_file)  # would raise on any MMSADataWarning


# ------------------------------------------------------------------------------ dataset


@pytest.fixture(scope="module")
def splits(small_file: Path) -> dict[str, data.MMSASplit]:
    return load_quietly(small_file)


@pytest.mark.parametrize(
    ("text_source", "key", "shape", "dtype"),
    [("bert", "text_bert", (3, 8), torch.int64), ("features", "text", (8, 32), torch.float32),
     ("auto", "text_bert", (3, 8), torch.int64)],
)
def test_dataset_item_holds_the_agreed_tensors(
    splits: dict, text_source: str, key: str, shape: tuple, dtype: torch.dtype
) -> None:
    split = splits["train"]
    item = batching.MSADataset(split, text_source=text_source)[5]
    text_keys = {key, "text_lengths"} if text_source == "features" else {key}
    assert set(item) == text_keys | {"audio", "audio_lengths", "vision", "vision_lengths",
                                     "labels", "index"}
    assert item[key].shape == shape and item[key].dtype == dtype
    assert item["audio"].shape == (12, 5) and item["audio"].dtype == torch.float32
    assert item["vision"].shape == (10, 20)
    assert item["audio_lengths"].shape == () and int(item["audio_lengths"]) == \
        split.audio_lengths[5]
    assert item["vision_lengths"].dtype == torch.int64
    assert sorted(item["labels"]) == ["A", "M", "T", "V"]
    assert item["labels"]["M"].shape == () and float(item["labels"]["M"]) == \
        split.labels["M"][5]
    assert int(item["index"]) == 5


@pytest.mark.parametrize(("text_source", "key", "shape"),
                         [("bert", "text_bert", (8, 3, 8)), ("features", "text", (8, 8, 32))])
def test_default_collate_batches_the_items(splits: dict, text_source: str, key: str,
                                           shape: tuple) -> None:
    loader = batching.make_loader(splits["valid"], batch_size=8, text_source=text_source)
    batch = next(iter(loader))
    assert batch[key].shape == shape
    assert batch["audio"].shape == (8, 12, 5) and batch["vision"].shape == (8, 10, 20)
    assert batch["audio_lengths"].shape == (8,) and batch["vision_lengths"].dtype == torch.int64
    assert {k: v.shape for k, v in batch["labels"].items()} == {m: (8,) for m in "MTAV"}
    assert batch["index"].tolist() == list(range(8))


def test_dataset_items_share_memory_with_the_split(splits: dict) -> None:
    split = splits["train"]
    item = batching.MSADataset(split, text_source="features")[2]
    assert item["text"].data_ptr() == split.text[2].ctypes.data
    assert item["audio"].data_ptr() == split.audio[2].ctypes.data


def test_missing_text_source_is_refused(splits: dict) -> None:
    split = copy.copy(splits["train"])
    split.text = None
    assert batching.MSADataset(split).text_source == "bert"
    with pytest.raises(ValueError, match="text_source='features' needs key 'text'"):
        batching.MSADataset(split, text_source="features")
    with pytest.raises(ValueError, match="text_source must be one of"):
        batching.MSADataset(split, text_source="tokens")


def test_dataset_index_out_of_range_raises_index_error(splits: dict) -> None:
    dataset = batching.MSADataset(splits["test"])
    assert int(dataset[-1]["index"]) == len(dataset) - 1
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_loader_with_distributed_sampler_covers_the_split_once(splits: dict) -> None:
    dataset = batching.MSADataset(splits["train"])
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=1)
        for batch in batching.make_loader(dataset, batch_size=4, sampler=sampler):
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(dataset)))


def test_loader_shuffle_is_reproducible_with_a_seed(splits: dict) -> None:
    def order(seed: int) -> list[int]:
        loader = batching.make_loader(splits["train"], batch_size=7, shuffle=True, seed=seed)
        return [i for batch in loader for i in batch["index"].tolist()]

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == list(range(30))


def test_loader_rejects_shuffle_with_a_sampler(splits: dict) -> None:
    dataset = batching.MSADataset(splits["train"])
    with pytest.raises(ValueError, match="shuffle=True cannot be combined with a sampler"):
        batching.make_loader(dataset, batch_size=4, shuffle=True,
                         sampler=DistributedSampler(dataset, num_replicas=1, rank=0))


# ------------------------------------------------------------------------------ learnable


def _pool(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    valid = (np.arange(features.shape[1])[None, :] < lengths[:, None])[:, :, None]
    return (features * valid).sum(1) / np.maximum(valid.sum(1), 1)


def _ridge_correlation(splits: dict, modalities: str, penalty: float = 1.0) -> float:
    def design(split: data.MMSASplit) -> np.ndarray:
        parts = {"T": _pool(split.text, split.text_bert[:, 1].sum(1)),
                 "A": _pool(split.audio, split.audio_lengths),
                 "V": _pool(split.vision, split.vision_lengths)}
        return np.concatenate([parts[m] for m in modalities], axis=1).astype(np.float64)

    train, test = design(splits["train"]), design(splits["test"])
    mean, scale = train.mean(0), train.std(0) + 1e-8
    train, test = (train - mean) / scale, (test - mean) / scale
    target = splits["train"].labels["M"].astype(np.float64)
    weights = np.linalg.solve(train.T @ train + penalty * np.eye(train.shape[1]),
                              train.T @ (target - target.mean()))
    prediction = test @ weights + target.mean()
    return float(np.corrcoef(prediction, splits["test"].labels["M"])[0, 1])


def test_default_synthetic_is_learnable_and_needs_every_modality(tmp_path: Path) -> None:
    splits = load_quietly(synthetic.make_synthetic(tmp_path / "default.pkl"))
    all_three = _ridge_correlation(splits, "TAV")
    text_only = _ridge_correlation(splits, "T")
    assert all_three > 0.7
    assert 0.3 < text_only < all_three - 0.05


# ------------------------------------------------------------------------------ missing modalities


@pytest.fixture(scope="module")
def text_only_file(small: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small dataset without audio and vision keys (as prepare_mosi.py writes text only)."""
    return write(tmp_path_factory.mktemp("text-only") / "text.pkl", without(small, "AV"))


def test_text_only_file_loads_with_audio_and_vision_none(small: dict, text_only_file: Path):
    loaded = load_quietly(text_only_file, label_range="mosi")
    for name, split in loaded.items():
        assert split.audio is None and split.vision is None
        assert split.audio_lengths is None and split.vision_lengths is None
        assert split.modalities == ("T",)
        assert split.feature_dims == {"T": 32, "A": None, "V": None}
        np.testing.assert_array_equal(split.text, small[name]["text"])
        np.testing.assert_array_equal(split.text_bert, small[name]["text_bert"])
        np.testing.assert_array_equal(split.labels["M"], small[name]["regression_labels"])
        assert sorted(split.labels) == ["A", "M", "T", "V"]


@pytest.mark.parametrize(("dropped", "present"), [("V", ("T", "A")), ("A", ("T", "V")),
                                                  ("", ("T", "A", "V"))])
def test_modalities_list_the_present_ones_in_t_a_v_order(
    small: dict, tmp_path: Path, dropped: str, present: tuple[str, ...]
) -> None:
    split = load_quietly(write(tmp_path / "subset.pkl", without(small, dropped)))["test"]
    assert split.modalities == present
    assert [m for m, d in split.feature_dims.items() if d is not None] == list(present)


def test_text_bert_only_file_has_no_text_width(small: dict, tmp_path: Path) -> None:
    split = load_quietly(write(tmp_path / "ids.pkl", without(small, "AV", ("text",))))["train"]
    assert split.modalities == ("T",) and split.feature_dims == {"T": None, "A": None, "V": None}


def test_aligned_file_without_vision_loads(tmp_path: Path) -> None:
    raw = synthetic.build_synthetic(seed=0, aligned=True, **SMALL)
    for split in raw.values():
        del split["vision"]
    loaded = load_quietly(write(tmp_path / "aligned.pkl", raw))["valid"]
    assert loaded.modalities == ("T", "A") and loaded.aligned


def test_aligned_file_missing_vision_in_one_split_is_refused(tmp_path: Path) -> None:
    raw = synthetic.build_synthetic(seed=0, aligned=True, **SMALL)
    del raw["test"]["vision"]
    with pytest.raises(data.MMSADataError, match=r"split 'test' is missing key\(s\) 'vision'"):
        data.load_mmsa(write(tmp_path / "aligned.pkl", raw))


@pytest.mark.parametrize(("text_source", "text_keys"),
                         [("bert", {"text_bert"}), ("features", {"text", "text_lengths"}),
                          ("auto", {"text_bert"})])
def test_text_only_items_have_no_audio_or_vision_keys(
    text_only_file: Path, text_source: str, text_keys: set[str]
) -> None:
    dataset = batching.MSADataset(load_quietly(text_only_file)["train"], text_source=text_source)
    assert dataset.modalities == ("T",)
    assert set(dataset[3]) == text_keys | {"labels", "index"}


def test_text_only_batches_collate(text_only_file: Path) -> None:
    split = load_quietly(text_only_file)["valid"]
    batch = next(iter(batching.make_loader(split, batch_size=5, text_source="features")))
    assert batch["text"].shape == (5, 8, 32) and batch["text_lengths"].shape == (5,)
    assert batch["text_lengths"].dtype == torch.int64
    assert {k: v.shape for k, v in batch["labels"].items()} == {m: (5,) for m in "MTAV"}


def test_text_lengths_are_the_attention_mask_sums(splits: dict) -> None:
    split = splits["train"]
    dataset = batching.MSADataset(split, text_source="features")
    for i in range(len(split)):  # right-padded tokens: the sum of the mask
        assert int(dataset[i]["text_lengths"]) == int(split.text_bert[i, 1].sum())


def test_features_without_text_bert_give_no_text_lengths(splits: dict) -> None:
    split = copy.copy(splits["train"])
    split.text_bert = None
    assert "text_lengths" not in batching.MSADataset(split, text_source="features")[0]


@given(mask=arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 9)),
                   elements=st.integers(0, 1)),
       text_steps=st.integers(1, 9))
def test_text_lengths_cover_every_masked_token(mask: np.ndarray, text_steps: int) -> None:
    n, steps = mask.shape
    text_bert = np.stack([mask * 7, mask, np.zeros_like(mask)], axis=1)
    split = data.MMSASplit(
        ids=[f"v$_${i}" for i in range(n)], raw_text=[""] * n,
        text=np.zeros((n, text_steps, 2), np.float32), text_bert=text_bert, audio=None,
        vision=None, audio_lengths=None, vision_lengths=None,
        labels={"M": np.zeros(n, np.float32)},
    )
    dataset = batching.MSADataset(split, text_source="features")
    for i in range(n):
        last = max((t + 1 for t in range(steps) if mask[i, t]), default=0)
        assert int(dataset[i]["text_lengths"]) == min(last, text_steps)
