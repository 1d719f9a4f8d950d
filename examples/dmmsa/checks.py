"""The number checks of the reference system's arguments (one place, one rule).

``bool`` is refused where a number is expected (``True`` is an ``int`` to Python, never a width
or a count to us); NumPy scalars are accepted (``numbers.Integral`` / ``numbers.Real``).
"""

from __future__ import annotations

import numbers

__all__ = ["is_int", "is_real"]


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), not a ``bool``.

    Example:
        >>> import numpy as np
        >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
        (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (Python or NumPy int or float), not a ``bool``.

    Example:
        >>> import numpy as np
        >>> is_real(0.5), is_real(np.float32(0.5)), is_real(2), is_real(False), is_real("1")
        (True, True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
