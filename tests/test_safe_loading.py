"""Loading MMSA feature pickles runs no code: ``mtobjectives.io`` and ``dmmsa.data.load_mmsa``.

Properties: what the restricted unpickler admits loads exactly as :func:`pickle.load` loads it
(the independent reference), for NumPy's pickles of protocols 0-5 in the names of NumPy 1.x and
2.x, the synthetic generator's files and MMSA-layout files; what it refuses is named and has no
side effect; a corrupt file, however corrupt, ends in the loader's error naming the file.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dmmsa import data, synthetic
from mtobjectives import io as safe_io
from mtobjectives.io import PickleLoadError, UnsafePickleError, load_pickle_safely, loads_safely

RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # NumPy's own _reconstruct


def same(expected: Any, got: Any) -> bool:
    """Equal values, types, dtypes, shapes and memory order, recursively."""
    if isinstance(expected, np.ndarray):
        return (type(got) is np.ndarray and got.dtype == expected.dtype
                and got.shape == expected.shape
                and got.flags.f_contiguous == expected.flags.f_contiguous
                and same(expected.tolist(), got.tolist()))
    if isinstance(expected, (list, tuple)):
        return (type(got) is type(expected) and len(got) == len(expected)
                and all(same(a, b) for a, b in zip(expected, got)))
    if isinstance(expected, dict):
        return (type(got) is dict and list(got) == list(expected)
                and all(same(expected[k], got[k]) for k in expected))
    if isinstance(expected, float) and expected != expected:
        return isinstance(got, float) and got != got
    return type(got) is type(expected) and got == expected


def without_frames(blob: bytes) -> bytes:
    """The pickle with its FRAME opcodes removed (frames are optional; lengths then free)."""
    cut = [pos for op, _, pos in pickletools.genops(blob) if op.name == "FRAME"]
    for pos in reversed(cut):
        blob = blob[:pos] + blob[pos + 9:]
    return blob


def numpy1_names(blob: bytes) -> bytes:
    """The pickle as NumPy 1.x writes it: ``numpy.core.*`` instead of ``numpy._core.*``."""
    blob = without_frames(blob)
    for module in (b"multiarray", b"numeric"):
        new, old = b"numpy.core." + module, b"numpy._core." + module
        blob = blob.replace(old + b"\n", new + b"\n")  # GLOBAL, protocols 0-3: text
        blob = blob.replace(b"\x8c" + bytes([len(old)]) + old,  # SHORT_BINUNICODE, 4-5
                            b"\x8c" + bytes([len(new)]) + new)
    return blob


MIXED = {
    "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(16.0).reshape(4, 4)[:, ::2],
    "big_endian": np.arange(3, dtype=">i4"),
    "empty": np.zeros((0, 3), np.float16),
    "zero_d": np.array(2.5),
    "bool": np.array([True, False]),
    "complex": np.array([1 + 2j], np.complex64),
    "unicode": np.array(["ab", "c"]),
    "bytes_array": np.array([b"xy"]),
    "ids": np.array(["v$_$0", "v$_$1", None, np.float32(1.0)], dtype=object),
    "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.str_("x"), np.float64(2.0)],
    "dtype": np.dtype(">f4"),
    "plain": [1, -(2**70), 2.5, "text", b"raw", b"", None, True, (1, ("nested",))],
}


# ----------------------------------------------------------------------- what loads
def test_allow_list_is_exactly_numpys_names() -> None:
    assert sorted(safe_io.ALLOWED_GLOBALS) == [
        "__builtin__.bytes",
        "_codecs.encode",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy.dtype",
        "numpy.ndarray",
    ]


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("names", ["numpy2", "numpy1"])
def test_numpy_pickles_load_as_pickle_loads_them(protocol: int, names: str) -> None:
    blob = pickle.dumps(MIXED, protocol=protocol)
    if names == "numpy1":
        blob = numpy1_names(blob)
        assert b"numpy._core" not in blob and b"numpy.core" in blob
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core under NumPy 2
        expected = pickle.loads(blob)
    assert same(expected, loads_safely(blob))


@settings(max_examples=30)
@given(
    array=arrays(
        st.sampled_from(["?", "i1", "<i8", ">u2", "<f2", ">f8", "c16", "U3", "S2"]),
        st.lists(st.integers(0, 4), max_size=3).map(tuple),
    ),
    protocol=st.integers(0, 5),
    fortran=st.booleans(),
)
def test_any_plain_array_round_trips(array: np.ndarray, protocol: int, fortran: bool) -> None:
    if fortran:
        array = np.asfortranarray(array)
    blob = pickle.dumps({"x": array}, protocol=protocol)
    assert same(pickle.loads(blob), loads_safely(blob))


def test_synthetic_file_loads_identically(tmp_path: Path) -> None:
    path = synthetic.make_synthetic(tmp_path / "syn.pkl", n_train=12, n_valid=6, n_test=6)
    with open(path, "rb") as f:
        expected = pickle.load(f)
    assert same(expected, load_pickle_safely(path))
    assert same(expected, load_pickle_safely(str(path)))


def test_mmsa_layout_of_numpy_1x_loads_identically(tmp_path: Path) -> None:
    """MMSA's files: object-array ids and text, float64 ``text_bert``, str annotations."""
    n = 3
    split = {"id": np.array([f"v$_${i}" for i in range(n)], dtype=object),
             "raw_text": np.array(["a", "b", "c"], dtype=object),
             "text_bert": np.ones((n, 3, 4)), "audio": np.zeros((n, 5, 2), np.float32),
             "audio_lengths": [5, 4, 3], "annotations": np.array(["Positive"] * n),
             "classification_labels": np.array([2.0, 1.0, 0.0]),
             "regression_labels": np.array([1.0, 0.0, -1.0], np.float32)}
    for protocol in (2, 4):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(numpy1_names(pickle.dumps({"train": split}, protocol=protocol)))
        assert same({"train": split}, load_pickle_safely(path))


# ----------------------------------------------------------------------- what is refused
class Payload:
    """What a hostile feature file holds: loading it calls ``call(*args)``."""

    def __init__(self, call: Any, *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple:
        return (self.call, self.args)


def test_code_in_a_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    payload = {"train": Payload(os.system, f"echo owned > {marker}")}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused: .*global '\w+\.system'") as e:
        load_pickle_safely(path)
    assert e.value.global_name == f"{os.system.__module__}.system"
    assert not marker.exists()
    with pytest.raises(data.MMSADataError, match=r"evil\.pkl: refused: .*'\w+\.system'"):
        data.load_mmsa(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: plain pickle runs the command
    assert marker.read_text().strip() == "owned"


@pytest.mark.parametrize("call", [open, eval, getattr, np.load, torch.load])
def test_any_other_global_is_refused_by_name(call: Any, tmp_path: Path) -> None:
    blob = pickle.dumps([Payload(call, str(tmp_path / "x"))], protocol=4)
    with pytest.raises(UnsafePickleError, match=r"<bytes>: refused") as error:
        loads_safely(blob)
    assert error.value.global_name.endswith("." + call.__name__)


def test_torch_tensors_are_refused_with_the_way_out() -> None:
    blob = pickle.dumps({"train": {"audio": torch.zeros(2, 3)}})
    with pytest.raises(UnsafePickleError, match=r"PyTorch tensors .*return_type='np'"):
        loads_safely(blob)


def test_plain_data_outside_the_admitted_types_is_refused() -> None:
    for value in ({1, 2}, frozenset([1]), np.ndarray, bytearray(b"x")):
        blob = pickle.dumps({"x": value}, protocol=4)
        with pytest.raises(PickleLoadError):
            loads_safely(blob)


# -------------------------------------------------------------- what a small file may allocate
def _state(shape: tuple[int, ...], dtype: str, raw: object) -> Any:
    """An array pickle with a chosen state, written with NumPy's own globals."""

    class Crafted:
        def __reduce__(self) -> tuple:
            return (RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(dtype), False, raw))

    return Crafted()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        # memo index 2**31 - 1: the C unpickler would size its memo to 2**32 entries (32 GB)
        (b"\x80\x04N\x72\xff\xff\xff\x7f.", r"memo index 2147483647 at byte 3 is out of sequence"),
        # a bytes object of 2**62 bytes in a 13-byte file
        (b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"ab.", r"bytes8, but only 3 remain"),
        (b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"N.", r"frame of 1099511627776"),
        # an object array of 3e8 items from 2 (NumPy itself would crash)
        (pickle.dumps(_state((3 * 10**8,), "O", ["a", "b"])),
         r"object array of shape \(300000000,\) needs a list of 300000000 items"),
        (pickle.dumps(_state((10**12,), "f4", b"\0" * 8)),
         r"needs 4000000000000 bytes of data, got bytes of length 8"),
        (pickle.dumps(_state((2**40, 2**40), "f8", b"")), r"needs \d+ bytes of data"),
    ],
    ids=["memo-index", "bytes8-length", "frame-length", "object-shape", "float-shape",
         "overflowing-shape"],
)
def test_sizes_a_file_cannot_hold_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(PickleLoadError, match=message):
        loads_safely(blob)


def test_data_referred_to_many_times_is_refused() -> None:
    """2000 arrays of 64 KiB from one shared 64 KiB string: 128 MiB from a 100 KiB file."""
    shared = b"\0" * (1 << 16)
    blob = pickle.dumps([_state((1 << 14,), "f4", shared) for _ in range(2000)], protocol=4)
    assert len(blob) < 150_000
    with pytest.raises(PickleLoadError, match=r"refused: its arrays would take more than 8 times"):
        loads_safely(blob)


def _tiny_file(tmp_path: Path, protocol: int) -> tuple[Path, bytes]:
    rng = np.random.default_rng(0)
    raw = {}
    for i, name in enumerate(("train", "valid", "test")):
        raw[name] = {"id": np.array([f"v{i}$_${k}" for k in range(3)], dtype=object),
                     "raw_text": [f"clip {k}" for k in range(3)],
                     "text": rng.standard_normal((3, 2, 4)).astype(np.float32),
                     "audio": rng.standard_normal((3, 2, 2)).astype(np.float32),
                     "audio_lengths": np.array([2, 1, 2]),
                     "regression_labels": np.array([-1.0, 0.0, 1.0], np.float32)}
    blob = pickle.dumps(raw, protocol=protocol)
    return tmp_path / "tiny.pkl", blob


def _load_or_data_error(path: Path, blob: bytes) -> None:
    """``load_mmsa`` on ``blob`` either loads checked splits or raises MMSADataError."""
    path.write_bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.MMSADataWarning)
        try:
            splits = data.load_mmsa(path)
        except data.MMSADataError as error:
            assert str(error).startswith(str(path)), str(error)
            return
    assert set(splits) == {"train", "valid", "test"}
    for split in splits.values():
        assert np.isfinite(split.labels["M"]).all() and np.isfinite(split.audio).all()


@settings(max_examples=60)
@given(protocol=st.sampled_from([2, 4, 5]), flips=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3))
def test_random_byte_changes_load_or_raise_the_loaders_error(
    tmp_path_factory: pytest.TempPathFactory, protocol: int, flips: list[tuple[float, int]]
) -> None:
    path, blob = _tiny_file(tmp_path_factory.mktemp("flip"), protocol)
    changed = bytearray(blob)
    for where, value in flips:
        changed[int(where * len(blob))] = value
    _load_or_data_error(path, bytes(changed))


@settings(max_examples=30)
@given(protocol=st.sampled_from([2, 4, 5]), keep=st.floats(0, 1, exclude_max=True))
def test_every_truncation_raises_the_loaders_error(
    tmp_path_factory: pytest.TempPathFactory, protocol: int, keep: float
) -> None:
    path, blob = _tiny_file(tmp_path_factory.mktemp("cut"), protocol)
    path.write_bytes(blob[: int(keep * len(blob))])
    with pytest.raises(data.MMSADataError, match=r"tiny\.pkl: not a readable pickle"):
        data.load_mmsa(path)


def test_the_intact_tiny_file_loads(tmp_path: Path) -> None:
    """The fuzzed file itself loads, so that the two tests above start from a valid file."""
    for protocol in (2, 4, 5):
        path, blob = _tiny_file(tmp_path, protocol)
        path.write_bytes(blob)
        assert len(data.load_mmsa(path)["test"]) == 3


def test_one_changed_byte_that_makes_a_memo_index_huge_is_refused(tmp_path: Path) -> None:
    """``BINPUT`` -> ``LONG_BINPUT``: plain pickle sizes its memo from the next 4 bytes (GBs)."""
    path, blob = _tiny_file(tmp_path, 2)
    index, pos = max((int.from_bytes(blob[pos + 1 : pos + 5], "little"), pos)
                     for op, _, pos in pickletools.genops(blob) if op.name == "BINPUT")
    assert index > 2**28
    path.write_bytes(blob[:pos] + b"r" + blob[pos + 1 :])
    with pytest.raises(data.MMSADataError, match=rf"tiny\.pkl: .*memo index {index} at byte {pos}"):
        data.load_mmsa(path)


def test_the_errors_are_value_errors_and_survive_pickling() -> None:
    """``except ValueError`` catches them; they cross process boundaries (DataLoader workers)."""
    with pytest.raises(UnsafePickleError) as caught:
        loads_safely(pickle.dumps(print))
    assert isinstance(caught.value, ValueError)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is UnsafePickleError and str(copy) == str(caught.value)


# ------------------------------------------------------- zero-width items count too
class _ZeroWidthDtype:
    def __init__(self, spec: str) -> None:
        self.spec = spec

    def __reduce__(self):  # numpy.dtype('U0') without the state that would be refused
        return (np.dtype, (self.spec, False, True))


class _ManyZeroWidthItems:
    """An array of 10**9 zero-width strings in a few hundred bytes (a hostile file)."""

    def __init__(self, spec: str, count: int = 10**9) -> None:
        self.spec, self.count = spec, count

    def __reduce__(self):
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
        return (reconstruct, (np.ndarray, (0,), b"b"),
                (1, (self.count,), _ZeroWidthDtype(self.spec), False, b""))


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("spec", ["U0", "S0"])
def test_zero_width_string_arrays_are_refused(protocol: int, spec: str) -> None:
    """10**9 `<U0` ids in a ~200-byte pickle once loaded, and training then tried to allocate
    7.45 GiB; an array with zero-width items is refused, however few elements it has."""
    for count in (10**9, 3):
        blob = pickle.dumps({"train": {"id": _ManyZeroWidthItems(spec, count)}},
                            protocol=protocol)
        assert len(blob) < 600
        with pytest.raises(PickleLoadError, match=r"zero-width items"):
            loads_safely(blob)


def test_the_elements_of_an_array_count_against_the_budget(monkeypatch) -> None:
    """Every element counts (at least a byte), not only the bytes the file holds for it."""
    monkeypatch.setattr(safe_io, "_check_width", lambda dtype: None)  # reach the budget itself
    blob = pickle.dumps({"id": _ManyZeroWidthItems("U0", 10**9)}, protocol=2)
    with pytest.raises(PickleLoadError, match=r"arrays would take more than"):
        loads_safely(blob)
