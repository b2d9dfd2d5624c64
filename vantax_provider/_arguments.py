"""
Checks of numeric arguments, shared by every operator, sensor, trigger and hook.

A comparison such as ``value <= 0`` lets NaN through (every comparison with NaN is false), and an
infinite interval or deadline turns into a wait that never ends: both are refused here, naming
the argument.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Final

#: The largest count (requests in flight, connections, items taken ahead) any argument may ask for:
#: each one costs memory or a coroutine, and no account serves more at once.
MAX_COUNT: Final = 100_000


def finite_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
    error: type[Exception] = ValueError,
) -> float:
    """
    ``value`` as a float when it is a finite real number within the bounds; else ``error`` naming ``name``.

    :param minimum: the smallest value allowed (inclusive).
    :param positive: refuse 0 and below.
    :param maximum: the largest value allowed (inclusive).
    """
    wanted = _wanted("a finite number", minimum, positive, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be {wanted}, got a {type(value).__name__}.")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (positive and number <= 0)
        or (maximum is not None and number > maximum)
    ):
        raise error(f"{name} must be {wanted}, got {_shown(value)}.")
    return number


def whole_number(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int = MAX_COUNT,
    error: type[Exception] = ValueError,
) -> int:
    """``value`` as an int when it is a whole number within the bounds; else ``error`` naming ``name``."""
    wanted = _wanted("a whole number", minimum, False, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be {wanted}, got a {type(value).__name__}.")
    if isinstance(value, numbers.Integral):
        whole = int(value)
    elif math.isfinite(number := float(value)) and number.is_integer():
        whole = int(number)
    else:
        raise error(f"{name} must be {wanted}, got {_shown(value)}.")
    if (minimum is not None and whole < minimum) or whole > maximum:
        raise error(f"{name} must be {wanted}, got {_shown(value)}.")
    return whole


def _wanted(kind: str, minimum: float | None, positive: bool, maximum: float | None) -> str:
    if positive:
        kind = kind.replace("a ", "a positive ", 1)
    bounds = []
    if minimum is not None:
        bounds.append(f"at least {minimum:g}")
    if maximum is not None:
        bounds.append(f"at most {maximum:g}")
    return kind + (" " + " and ".join(bounds) if bounds else "")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
