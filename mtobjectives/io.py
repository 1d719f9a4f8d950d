"""Loading pickled feature files without running code.

MMSA's feature files (CH-SIMS, CMU-MOSI, CMU-MOSEI) are pickles downloaded from third-party mirrors
and shared between labs. :func:`pickle.load` runs whatever a pickle asks for (a ``__reduce__``
can call ``os.system``), so :func:`load_pickle_safely` reads them with a restricted unpickler that
admits only what such files hold: dicts, lists, tuples, ``str``/``bytes``, numbers, ``None``,
booleans, NumPy arrays, NumPy scalars and NumPy dtypes. The pickle may refer to exactly the
globals in :data:`ALLOWED_GLOBALS` (the names NumPy 1.x and 2.x write for protocols 0-5), each
replaced by a function that checks its arguments before building anything; any other global
raises :class:`UnsafePickleError` naming it, before anything is called.

A small corrupt file cannot make the loader allocate much more than its own size: the opcode
stream is checked first (every length and memo index must fit in the file), every array's
shape must match the data the file holds for it, zero-width string dtypes (``<U0``, ``S0``,
which hold any number of elements in no bytes) are refused, and the arrays and decoded bytes
built in all (every element counted, at least one byte each) may not exceed
:data:`MEMORY_FACTOR` times the file's size plus 1 MiB. Every failure, whatever
the unpickler or NumPy raised, becomes a :class:`PickleLoadError` whose message starts with the
file's name.

Not supported (refused with a message): PyTorch tensors (MMSA-FET's ``return_type="pt"``; MMSA
itself reads NumPy arrays), structured or datetime dtypes, ndarray subclasses, Python 2 ``str``
data, out-of-band buffers.
"""

from __future__ import annotations

import math
import mmap
import os
import pickle
import pickletools
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ALLOWED_GLOBALS",
    "MEMORY_FACTOR",
    "PickleLoadError",
    "UnsafePickleError",
    "load_pickle_safely",
    "loads_safely",
]

_RECONSTRUCT = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
_SCALAR = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_FROMBUFFER = ("numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer")

ALLOWED_GLOBALS: frozenset[str] = frozenset(
    (*_RECONSTRUCT, *_SCALAR, *_FROMBUFFER, "numpy.ndarray", "numpy.dtype", "_codecs.encode",
     "__builtin__.bytes")
)
"""The globals a pickle may refer to, as ``module.name``.

``numpy.core.*`` is what NumPy 1.x writes, ``numpy._core.*`` what NumPy 2.x writes;
``numpy.core.multiarray._reconstruct`` with ``numpy.ndarray`` (arrays, protocols 0-4, and object
arrays in protocol 5), ``numpy.core.numeric._frombuffer`` (other arrays, protocol 5),
``numpy.core.multiarray.scalar`` (NumPy scalars), ``numpy.dtype`` (every dtype), and, for
protocols 0-2, ``_codecs.encode`` (``bytes`` as latin-1 text) and ``__builtin__.bytes`` (an empty
``bytes``).
"""

MEMORY_FACTOR = 8
"""Arrays and decoded bytes may total at most this many times the pickle's size, plus 1 MiB.

A valid file holds each array's data once (8 covers object arrays, whose 8-byte pointers may
each come from one byte of the file); a corrupt or hostile file that refers to the same data
many times is refused instead of filling the memory.
"""

_SLACK = 1 << 20
_MAX_DEPTH = 64  # nesting of containers; MMSA files nest 3 deep
_VIEW_READ = 1 << 16  # the opcode scan hands longer arguments on as views, not copies
_DTYPE_KINDS = "biufcUSO"  # bool, int, uint, float, complex, str, bytes, object
_LEAVES = (str, bytes, bytearray, int, float, bool, type(None), np.dtype)
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80


class PickleLoadError(ValueError):
    """A pickle that cannot be loaded: unreadable, truncated, corrupt, or too large for its size.

    The message starts with the file's name.
    """


class UnsafePickleError(PickleLoadError):
    """A pickle that refers to a global outside :data:`ALLOWED_GLOBALS` (refused, nothing run).

    Attributes:
        global_name: the refused global, ``"module.name"``.
    """

    def __init__(self, message: str, global_name: str = "") -> None:
        super().__init__(message)
        self.global_name = global_name


def _describe(value: object) -> str:
    """A short repr that cannot fail (huge ints have no repr in Python >= 3.11)."""
    try:
        return _short.repr(value)
    except Exception:  # noqa: BLE001 - any failure: describe by type
        return f"<{type(value).__name__}>"


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 5] + " ..."


def load_pickle_safely(path: str | os.PathLike[str]) -> Any:
    """Load a pickle of plain data and NumPy arrays without running any code from it.

    Args:
        path: the pickle file, e.g. an MMSA feature file ``unaligned_50.pkl``.

    Returns:
        What the pickle holds: dicts, lists, tuples, ``str``/``bytes``, numbers, ``None``,
        NumPy arrays, scalars and dtypes, equal to what :func:`pickle.load` returns.

    Raises:
        TypeError: ``path`` is not a ``str`` or path-like.
        OSError: the file cannot be opened (missing, a directory, no permission).
        UnsafePickleError: the pickle refers to a global outside :data:`ALLOWED_GLOBALS`.
        PickleLoadError: anything else is wrong with the content.

    Example:
        >>> import os, pickle, tempfile, numpy as np
        >>> from mtobjectives.io import load_pickle_safely, UnsafePickleError
        >>> folder = tempfile.mkdtemp()
        >>> with open(folder + "/ok.pkl", "wb") as f:
        ...     pickle.dump({"train": {"id": ["v$_$0"], "audio": np.ones((1, 2, 3))}}, f)
        >>> load_pickle_safely(folder + "/ok.pkl")["train"]["audio"].shape
        (1, 2, 3)
        >>> class Payload:  # pickle.load would call print("owned")
        ...     def __reduce__(self):
        ...         return (print, ("owned",))
        >>> with open(folder + "/evil.pkl", "wb") as f:
        ...     pickle.dump({"train": Payload()}, f)
        >>> try:
        ...     load_pickle_safely(folder + "/evil.pkl")
        ... except UnsafePickleError as error:
        ...     print(error.global_name)
        builtins.print
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise PickleLoadError(f"{path}: not a readable pickle, or truncated (the file is "
                                  "empty)")
        try:
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # not mappable (a pipe, some file systems): read it
            return loads_safely(f.read(), source=str(path))
    with buffer:
        return _Loader(buffer, str(path)).load()


def loads_safely(data: bytes | bytearray, *, source: str = "<bytes>") -> Any:
    """:func:`load_pickle_safely` for a pickle in memory; messages name it ``source``.

    Example:
        >>> import pickle, numpy as np
        >>> from mtobjectives.io import loads_safely, UnsafePickleError
        >>> loads_safely(pickle.dumps({"labels": np.float32([0.5, -1.0])}, protocol=2))
        {'labels': array([ 0.5, -1. ], dtype=float32)}
        >>> try:
        ...     loads_safely(pickle.dumps(print))
        ... except UnsafePickleError as error:
        ...     print(str(error).split(", which")[0])
        <bytes>: refused: the pickle refers to the global 'builtins.print'
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not data:
        raise PickleLoadError(f"{source}: not a readable pickle, or truncated (no data)")
    return _Loader(bytes(data), source).load()


class _ScanReader:
    """A file-like view of the pickle for :func:`pickletools.genops` (long reads are views) and
    the unpickler (``readinto`` copies once)."""

    def __init__(self, data: bytes | mmap.mmap, *, views: bool) -> None:
        self._data = data
        self._view = memoryview(data)
        self._pos = 0
        self._views = views

    def read(self, n: int = -1) -> bytes | memoryview:
        start = self._pos
        end = len(self._view) if n < 0 else min(len(self._view), start + n)
        self._pos = end
        chunk = self._view[start:end]
        return chunk if self._views and end - start > _VIEW_READ else chunk.tobytes()

    def readline(self) -> bytes:
        end = self._data.find(b"\n", self._pos)
        return self.read(-1 if end < 0 else end + 1 - self._pos)

    def readinto(self, target: Any) -> int:
        """For the unpickler: copies straight from the data into ``target`` (one copy)."""
        with memoryview(target) as out:
            n = min(out.nbytes, len(self._view) - self._pos)
            out.cast("B")[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view.release()


class _PendingDtype:
    """A dtype being unpickled: ``numpy.dtype(...)`` then its state (byte order, size)."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        # NumPy writes (3, byteorder, subarray, names, fields, elsize, alignment, flags); only
        # the byte order and, for str/bytes, the size matter for the dtypes admitted here.
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
                and all(type(v) is int for v in state[5:])):
            raise ValueError(f"dtype state {_describe(state)} is not that of a plain dtype")
        dtype, elsize = self.dtype, state[5]
        if dtype.kind in "US":
            unit = 4 if dtype.kind == "U" else 1
            if elsize <= 0 or elsize % unit or elsize > 1 << 31:
                raise ValueError(f"dtype {dtype.kind} with item size {elsize}")
            dtype = np.dtype(f"{dtype.kind}{elsize // unit}")
        if state[1] in "<>" and dtype.byteorder != "|":
            dtype = dtype.newbyteorder(state[1])
        self.dtype = dtype


class _PendingArray:
    """An array being unpickled: ``_reconstruct(...)`` then its state (shape, dtype, data)."""

    __slots__ = ("array", "loader")

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 4:  # NumPy < 1.0 wrote no version
            state = (1, *state)
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise ValueError(f"array state {_describe(state)} is not (1, shape, dtype, "
                             "is_fortran, data)")
        _, shape, dtype, fortran, raw = state
        shape, dtype = _shape(shape), _dtype_of(dtype)
        if fortran not in (True, False) or type(fortran) not in (bool, int):
            raise ValueError(f"array order flag {_describe(fortran)} is not a bool")
        count = math.prod(shape)
        _check_width(dtype)
        if dtype.kind == "O":
            if type(raw) is not list or len(raw) != count:
                raise ValueError(f"object array of shape {shape} needs a list of {count} "
                                 f"items, got {_describe(raw)}")
            self.loader.charge(8 * count)
        else:
            if type(raw) not in (bytes, bytearray) or len(raw) != count * dtype.itemsize:
                raise ValueError(
                    f"array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} "
                    f"bytes of data, got {type(raw).__name__} of length "
                    f"{len(raw) if isinstance(raw, (bytes, bytearray, list)) else '?'}"
                )
            self.loader.charge(max(len(raw), count))  # every element counts, at least a byte
        array = np.ndarray((0,), np.int8)
        array.__setstate__((1, shape, dtype, bool(fortran), raw))  # checked: NumPy's own path
        self.array = array


def _check_width(dtype: np.dtype) -> None:
    """Refuse zero-width str/bytes dtypes (``<U0``, ``S0``): no real data has them, and an array
    of them holds any number of elements in no bytes (each becomes an object when used)."""
    if dtype.kind in "US" and dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype.str} has zero-width items; a file of plain data holds "
                         "strings of at least one character's width")


def _shape(value: object) -> tuple[int, ...]:
    if not (type(value) is tuple and len(value) <= 32
            and all(type(n) is int and n >= 0 for n in value)):
        raise ValueError(f"array shape {_describe(value)} is not a tuple of sizes >= 0")
    return value  # type: ignore[return-value]


def _dtype_of(value: object) -> np.dtype:
    if type(value) is not _PendingDtype:
        raise ValueError(f"array dtype {_describe(value)} is not a numpy.dtype")
    return value.dtype


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, loader: _Loader) -> None:
        super().__init__(file)
        self._loader = loader

    def find_class(self, module: str, name: str) -> Any:
        return self._loader.find_class(module, name)


class _Loader:
    """One load: the opcode scan, the unpickler with its checked globals, the final pass."""

    def __init__(self, data: bytes | mmap.mmap, source: str) -> None:
        self.data = data
        self.source = source
        self.budget = MEMORY_FACTOR * len(data) + _SLACK
        self.ndarray = object()  # stands for numpy.ndarray; only _reconstruct accepts it
        self.globals: dict[str, Callable[..., Any] | object] = {
            **dict.fromkeys(_RECONSTRUCT, self._reconstruct),
            **dict.fromkeys(_SCALAR, self._scalar),
            **dict.fromkeys(_FROMBUFFER, self._frombuffer),
            "numpy.ndarray": self.ndarray,
            "numpy.dtype": self._dtype,
            "_codecs.encode": self._encode,
            "__builtin__.bytes": self._bytes,
        }
        assert set(self.globals) == ALLOWED_GLOBALS

    def fail(self, detail: str) -> PickleLoadError:
        return PickleLoadError(f"{self.source}: not a readable pickle, or truncated ({detail})")

    def load(self) -> Any:
        self.scan()
        reader = _ScanReader(self.data, views=False)
        try:
            result = _Unpickler(reader, self).load()
            return self.finish(result)
        except PickleLoadError:
            raise
        except Exception as error:  # noqa: BLE001 - every failure names the file
            raise self.fail(f"{type(error).__name__}: {_clip(str(error))}") from None
        finally:
            reader.close()

    def scan(self) -> None:
        """Check every opcode's lengths and memo indices before the C unpickler allocates."""
        reader = _ScanReader(self.data, views=True)
        size, memo, detail = len(self.data), 0, ""
        try:
            for opcode, arg, pos in pickletools.genops(reader):
                if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    if type(arg) is not int or not 0 <= arg <= memo:
                        raise ValueError(f"memo index {_describe(arg)} at byte {pos} is out of "
                                         f"sequence")
                    memo = max(memo, arg + 1)
                elif opcode.name == "MEMOIZE":
                    memo += 1
                elif opcode.name == "FRAME" and arg > size - reader.tell():
                    raise ValueError(f"frame of {arg} bytes at byte {pos} runs past the end")
                del arg
        except Exception as error:  # noqa: BLE001 - every failure names the file
            detail = f"{type(error).__name__}: {_clip(str(error))}"
        finally:
            reader.close()  # after the traceback's views of the data are gone
        if detail:
            raise self.fail(detail)

    def charge(self, nbytes: int) -> None:
        self.budget -= nbytes
        if self.budget < 0:
            raise PickleLoadError(
                f"{self.source}: refused: its arrays would take more than {MEMORY_FACTOR} times "
                f"the file's {len(self.data)} bytes (+1 MiB); the file is corrupt or hostile"
            )

    # --------------------------------------------------------------- the allowed globals
    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in self.globals:
            return self.globals[qualified]
        hint = ""
        if module.split(".")[0] == "torch":
            hint = (" The file holds PyTorch tensors (MMSA-FET's return_type='pt'); MMSA reads "
                    "NumPy arrays: export it with return_type='np'.")
        shown = _describe(qualified)
        raise UnsafePickleError(
            f"{self.source}: refused: the pickle refers to the global {shown}, which a file of "
            "plain data (dicts, lists, strings, numbers, NumPy arrays) never needs; loading it "
            f"could run code, so nothing was loaded (allowed: "
            f"mtobjectives.io.ALLOWED_GLOBALS).{hint}",
            global_name=qualified,
        )

    def _reconstruct(self, subtype: object, shape: object, dtype: object) -> _PendingArray:
        if subtype is not self.ndarray:
            raise ValueError(f"_reconstruct builds numpy.ndarray only, got {_describe(subtype)}")
        _shape(shape)
        return _PendingArray(self)

    def _dtype(self, spec: object, align: object = False, copy: object = False) -> _PendingDtype:
        if not (type(spec) is str and 1 <= len(spec) <= 8 and spec.isalnum()
                or spec in ("?", "b1")) or align not in (True, False):
            raise ValueError(f"numpy.dtype({_describe(spec)}) is not a plain dtype")
        dtype = np.dtype(spec)
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
            raise ValueError(f"dtype {dtype} is not supported (kinds {_DTYPE_KINDS} only)")
        return _PendingDtype(dtype)

    def _scalar(self, dtype: object, data: object = None) -> np.generic:
        dtype = _dtype_of(dtype)
        if dtype.kind == "O" or type(data) is not bytes or len(data) != dtype.itemsize:
            raise ValueError(f"scalar of dtype {dtype} from {_describe(data)}")
        return np.frombuffer(data, dtype=dtype, count=1)[0]

    def _frombuffer(self, buffer: object, dtype: object, shape: object,
                    order: object) -> np.ndarray:
        dtype, shape = _dtype_of(dtype), _shape(shape)
        count = math.prod(shape)
        _check_width(dtype)
        if (dtype.kind == "O" or order not in ("C", "F")
                or type(buffer) not in (bytes, bytearray)
                or len(buffer) != count * dtype.itemsize or dtype.itemsize == 0):
            raise ValueError(f"array of shape {shape}, dtype {dtype} and order "
                             f"{_describe(order)} from {type(buffer).__name__} of the wrong size")
        self.charge(len(buffer))
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)

    def _encode(self, text: object, encoding: object) -> bytes:
        if type(text) is not str or encoding != "latin1":
            raise ValueError(f"_codecs.encode({_describe(text)}, {_describe(encoding)}): only "
                             "str to latin1 is admitted")
        self.charge(len(text))
        return text.encode("latin1")

    def _bytes(self, *args: object) -> bytes:
        if args:
            raise ValueError(f"bytes{_describe(args)}: only bytes() is admitted")
        return b""

    # --------------------------------------------------------------- the final pass
    def finish(self, root: object) -> Any:
        """Replace the pending arrays and dtypes; refuse anything that is not plain data."""
        done: dict[int, tuple[object, Any]] = {}

        def visit(obj: object, depth: int) -> Any:
            kind = type(obj)
            if kind in _LEAVES or isinstance(obj, np.generic):
                return obj
            if kind is np.ndarray and obj.dtype.kind != "O":  # type: ignore[attr-defined]
                return obj  # from _frombuffer
            key = id(obj)
            if key in done:
                return done[key][1]
            if depth > _MAX_DEPTH:
                raise self.fail(f"containers nested deeper than {_MAX_DEPTH} levels")
            if kind is _PendingDtype:
                result: Any = obj.dtype  # type: ignore[attr-defined]
            elif kind is _PendingArray:
                result = obj.array  # type: ignore[attr-defined]
                if result is None:
                    raise self.fail("an array without its data")
                done[key] = (obj, result)
                if result.dtype.kind == "O":
                    flat = result.reshape(-1, order="A")  # a view: the array is contiguous
                    for i, item in enumerate(flat):
                        new = visit(item, depth + 1)
                        if new is not item:
                            flat[i] = new
            elif kind is list:
                done[key] = (obj, obj)
                for i, item in enumerate(obj):  # type: ignore[arg-type]
                    new = visit(item, depth + 1)
                    if new is not item:
                        obj[i] = new  # type: ignore[index]
                result = obj
            elif kind is dict:
                done[key] = (obj, obj)
                for name, item in obj.items():  # type: ignore[attr-defined]
                    if not (type(name) in _LEAVES or isinstance(name, np.generic)):
                        raise self.fail(f"a dict key of type {type(name).__name__}")
                    new = visit(item, depth + 1)
                    if new is not item:
                        obj[name] = new  # type: ignore[index]
                result = obj
            elif kind is tuple:
                items = [visit(item, depth + 1) for item in obj]  # type: ignore[attr-defined]
                same = all(a is b for a, b in zip(items, obj))  # type: ignore[call-overload]
                result = obj if same else tuple(items)
            else:
                what = "numpy.ndarray outside an array" if obj is self.ndarray else (
                    f"an object of type {kind.__name__}")
                raise self.fail(f"it holds {what}; expected dicts, lists, tuples, strings, "
                                "numbers and NumPy arrays")
            done[key] = (obj, result)
            return result

        return visit(root, 0)
