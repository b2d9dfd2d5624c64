"""The bulk operator's arguments, checked when a task is defined: a ValueError names the first bad one."""

from __future__ import annotations

from collections.abc import Mapping

from vantax_provider._arguments import finite_number, whole_number
from vantax_provider.bulk.journal import MAX_WINDOW
from vantax_provider.defaults import ON_UNCERTAIN


def check_arguments(
    *,
    max_concurrency: int,
    max_uncertain: int | None,
    rate_limit: float | None,
    max_failure_ratio: float | None,
    on_uncertain: str,
    idempotency_key_field: str | None,
    max_listed_outcomes: int,
    intervals: Mapping[str, float],
) -> None:
    """Raise ``ValueError`` naming the first argument of the bulk operator that is out of range."""
    max_concurrency = whole_number(max_concurrency, "max_concurrency", minimum=1, maximum=MAX_WINDOW)
    if max_uncertain is not None and (
        isinstance(max_uncertain, bool)
        or not isinstance(max_uncertain, int)
        or not max_concurrency <= max_uncertain <= MAX_WINDOW
    ):
        raise ValueError(
            f"max_uncertain must be None or between max_concurrency ({max_concurrency}) and "
            f"{MAX_WINDOW}, got {max_uncertain!r}."
        )
    if rate_limit is not None:
        finite_number(rate_limit, "rate_limit", positive=True)
    if max_failure_ratio is not None:
        finite_number(max_failure_ratio, "max_failure_ratio", minimum=0, maximum=1)
    for name, value in intervals.items():
        finite_number(value, name, positive=True)
    if on_uncertain not in ON_UNCERTAIN:
        raise ValueError(f"on_uncertain must be 'resend' or 'skip', got {on_uncertain!r}.")
    own_key = idempotency_key_field
    if own_key is not None and not (isinstance(own_key, str) and own_key):
        raise ValueError("idempotency_key_field must be a recipient dict key (a non-empty string) or None.")
    if (
        isinstance(max_listed_outcomes, bool)
        or not isinstance(max_listed_outcomes, int)
        or not (0 <= max_listed_outcomes <= 100_000)
    ):
        raise ValueError(f"max_listed_outcomes must be between 0 and 100000, got {max_listed_outcomes!r}.")
