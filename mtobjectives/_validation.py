"""Argument checks shared by every public entry point.

Each check raises :class:`ValueError` or :class:`TypeError` with a message that names the
argument, says what was expected and shows what was received, so that a user never has to read
a traceback from deep inside PyTorch to learn what they passed wrong.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection, Sequence

import numpy as np
from torch import Tensor

__all__ = [
    "check_choice",
    "check_floating",
    "check_int",
    "check_positive",
    "check_real",
    "check_same_device",
    "check_shape",
    "check_tensor",
]


def check_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a tensor, else raise a :class:`TypeError` naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, value: Tensor) -> Tensor:
    """Require a floating-point tensor (float16, bfloat16, float32 or float64)."""
    check_tensor(name, value)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_shape(name: str, value: Tensor, expected: Sequence[int | str | None]) -> Tensor:
    """Check rank and the fixed sizes of ``value``.

    ``expected`` lists one entry per dimension: an ``int`` pins the size, a ``str`` or ``None``
    is a free size (the string is only the symbol used in the error message, e.g. ``"B"``).
    """
    check_tensor(name, value)
    symbols = ", ".join(str(e) if e is not None else "*" for e in expected)
    if value.dim() != len(expected):
        raise ValueError(
            f"{name} must have {len(expected)} dimensions [{symbols}], "
            f"got shape {tuple(value.shape)}"
        )
    for dim, (size, want) in enumerate(zip(value.shape, expected)):
        if isinstance(want, int) and size != want:
            raise ValueError(
                f"{name} must have shape [{symbols}] with size {want} in dimension {dim}, "
                f"got shape {tuple(value.shape)}"
            )
    return value


def check_same_device(**tensors: Tensor | None) -> None:
    """Require all given (non-``None``) tensors to live on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all tensors must be on the same device, got {listing}")


def check_int(name: str, value: object, *, expected: str = "an int") -> int:
    """Return ``value`` as an ``int`` if it is an integer, else raise a :class:`TypeError`.

    Python and NumPy integers (``np.int64``, ``np.uint8``, ...) are accepted, as anything that
    registers as :class:`numbers.Integral`; bools (Python's and NumPy's) are refused, as are
    floats with an integral value and tensors. ``expected`` is the wording of the message
    (``"an int"``, ``"a positive int"``, ...); the caller checks the range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    return operator.index(value)


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a ``float`` if it is a real number, else raise a :class:`TypeError`.

    Python and NumPy numbers (``np.float32``, ``np.int64``, ...) are accepted, as anything that
    registers as :class:`numbers.Real`; bools (Python's and NumPy's) and tensors are refused.
    Finiteness and range are left to the caller.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Require a finite real number > 0 (or >= 0 with ``allow_zero``); return it as ``float``."""
    number = check_real(name, value)
    ok = math.isfinite(number) and (number >= 0 if allow_zero else number > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {number!r}")
    return number


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        options = " | ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
