"""Fault-injection rules: parsed from the control API, matched in order against API requests."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

KINDS = ("status", "stall", "drop", "malformed")
WHENS = ("before", "after")
METHODS = ("POST", "GET")
DEFAULT_HTML = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
_KEYS = frozenset(
    {
        "kind",
        "status",
        "retry_after",
        "when",
        "method",
        "conversation_id",
        "times",
        "probability",
        "seed",
        "stall_seconds",
        "body",
    }
)


@dataclass
class FaultRule:
    """One fault rule.

    :param id: rule id, returned by ``POST /_emulator/faults`` and written to the request log.
    :param kind: ``status`` (a JSON error), ``stall`` (sleep, then answer normally), ``drop`` (close
        the connection mid-response) or ``malformed`` (a non-JSON body).
    :param status: HTTP status for ``status``/``malformed``.
    :param retry_after: value of a ``Retry-After`` header, or None for none.
    :param when: ``before`` (the request is not processed) or ``after`` (it is, then the fault answers).
    :param method: only requests with this method (None: any).
    :param conversation_id: only requests for this conversation (None: any).
    :param times: how many more requests it hits (None: unlimited).
    :param probability: hit each matching request with this probability (None: always).
    :param seed: seed of the rule's own RNG, so probabilistic runs repeat exactly.
    :param stall_seconds: how long ``stall`` sleeps.
    :param body: the body ``malformed`` answers with.
    """

    id: str
    kind: str
    status: int
    retry_after: str | None
    when: str
    method: str | None
    conversation_id: str | None
    times: int | None
    probability: float | None
    seed: int
    stall_seconds: float
    body: str
    hits: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, when: str, method: str, conversation_id: str) -> bool:
        """Whether this rule hits the request; rolls the RNG only when everything else matches."""
        if self.when != when or (self.times is not None and self.times <= 0):
            return False
        if self.method is not None and self.method != method:
            return False
        if self.conversation_id is not None and self.conversation_id != conversation_id:
            return False
        return self.probability is None or self.rng.random() < self.probability

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "when": self.when,
            "method": self.method,
            "conversation_id": self.conversation_id,
            "times": self.times,
            "probability": self.probability,
            "seed": self.seed,
            "stall_seconds": self.stall_seconds,
            "body": self.body,
            "hits": self.hits,
        }


def _number(
    data: dict[str, Any], key: str, default: float, low: float, high: float, errors: list[str]
) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        errors.append(f"{key}: must be a number in [{low}, {high}]")
        return default
    return float(value)


def parse_rule(data: Any, rule_id: str) -> FaultRule:
    """Build a rule from its JSON form; raise ValueError naming every bad key."""
    if not isinstance(data, dict):
        raise ValueError("rule must be a JSON object")
    errors = [f"{key}: unknown key" for key in sorted(set(data) - _KEYS)]
    kind = data.get("kind")
    if kind not in KINDS:
        errors.append(f"kind: must be one of {', '.join(KINDS)}")
    when = data.get("when") or "before"
    if when not in WHENS:
        errors.append("when: must be 'before' or 'after'")
    method = data.get("method")
    if method is not None:
        method = str(method).upper()
        if method not in METHODS:
            errors.append("method: must be POST, GET or null")
    conversation_id = data.get("conversation_id")
    if conversation_id is not None and not isinstance(conversation_id, str):
        errors.append("conversation_id: must be a string or null")
    # An absent "times" means once; an explicit null means every matching request.
    times = data.get("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        errors.append("times: must be a non-negative integer or null")
    probability = data.get("probability")
    if probability is not None:
        probability = _number(data, "probability", 1.0, 0.0, 1.0, errors)
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        errors.append("seed: must be an integer")
        seed = 1
    stall_seconds = _number(data, "stall_seconds", 5.0, 0.0, 3600.0, errors)
    # malformed defaults: 200 after a create ("2xx but not JSON"), a gateway's 502 page before.
    default_status = 503 if kind == "status" else (200 if when == "after" else 502)
    status = data.get("status")
    if status is None:
        status = default_status
    elif isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        errors.append("status: must be an HTTP status code (100-599)")
        status = default_status
    retry_after = data.get("retry_after")
    if retry_after is not None:
        if isinstance(retry_after, bool) or not isinstance(retry_after, (str, int)):
            errors.append("retry_after: must be a string, an integer or null")
        retry_after = str(retry_after)
    body = data.get("body")
    if body is not None and not isinstance(body, str):
        errors.append("body: must be a string")
    if errors:
        raise ValueError("; ".join(errors))
    return FaultRule(
        id=rule_id,
        kind=str(kind),
        status=int(status),
        retry_after=retry_after,
        when=str(when),
        method=method,
        conversation_id=conversation_id,
        times=times,
        probability=probability,
        seed=seed,
        stall_seconds=stall_seconds,
        body=DEFAULT_HTML if body is None else body,
        rng=random.Random(seed),
    )
