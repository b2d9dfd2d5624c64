"""In-memory state of one emulator process: settings, messages, idempotency records, log, stats."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from vantax_provider.emulator import rules
from vantax_provider.emulator.faults import FaultRule, parse_rule

LOG_LIMIT = 100_000
#: Messages kept by default (about 2.4 KB each); older ones are evicted first, their keys with them.
DEFAULT_MAX_MESSAGES = 100_000
#: What a message's queued and sent delays count from.
DELAYS_FROM = ("create", "first_read")


@dataclass(frozen=True)
class Settings:
    """Behaviour knobs, changed at run time by ``POST /_emulator/config``.

    :param latency_ms: delay added to every API request (control requests are never delayed).
    :param queued_seconds: how long a new message stays ``queued``.
    :param sent_seconds: how long it then stays ``sent`` before its final outcome.
    :param delays_from: ``create`` (the delays count from creation) or ``first_read`` (from the first
        GET of the message, so its poller sees ``queued`` first however late it starts).
    :param outcomes: conversation id -> final status (``delivered``, ``failed``, ``stuck`` or any string).
    :param closed_windows: conversation ids whose WhatsApp/Messenger/Instagram sends get 422.
    :param deduplicate: honour ``Idempotency-Key`` (replay the first answer). False acts as a service
        that ignores the key, which the vendor's reference does not rule out: every POST creates.
    :param rate_limit: the account's limit, API requests per second (sends and reads); 0 for none.
        A token bucket: a request without a token gets 429 with ``Retry-After``.
    :param rate_burst: the bucket's size, requests; 0 means one second's worth (``rate_limit``).
    """

    latency_ms: float = 0.0
    queued_seconds: float = 0.05
    sent_seconds: float = 0.1
    delays_from: str = "create"
    outcomes: dict[str, str] = field(default_factory=dict)
    closed_windows: frozenset[str] = frozenset()
    deduplicate: bool = True
    rate_limit: float = 0.0
    rate_burst: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "queued_seconds": self.queued_seconds,
            "sent_seconds": self.sent_seconds,
            "delays_from": self.delays_from,
            "outcomes": dict(self.outcomes),
            "closed_windows": sorted(self.closed_windows),
            "deduplicate": self.deduplicate,
            "rate_limit": self.rate_limit,
            "rate_burst": self.rate_burst,
        }

    def updated(self, data: Any) -> Settings:
        """A copy with the given keys changed; raise ValueError naming every bad key."""
        if not isinstance(data, dict):
            raise ValueError("config must be a JSON object")
        errors = [f"{key}: unknown key" for key in sorted(set(data) - set(self.to_dict()))]
        changes: dict[str, Any] = {}
        for key in ("latency_ms", "queued_seconds", "sent_seconds", "rate_limit", "rate_burst"):
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    errors.append(f"{key}: must be a non-negative number")
                else:
                    changes[key] = float(value)
        if "delays_from" in data:
            if data["delays_from"] not in DELAYS_FROM:
                errors.append(f"delays_from: must be one of {', '.join(DELAYS_FROM)}")
            else:
                changes["delays_from"] = data["delays_from"]
        if "outcomes" in data:
            outcomes = data["outcomes"]
            if not isinstance(outcomes, dict) or not all(isinstance(v, str) for v in outcomes.values()):
                errors.append("outcomes: must be an object of conversation id -> status string")
            else:
                changes["outcomes"] = dict(outcomes)
        if "closed_windows" in data:
            closed = data["closed_windows"]
            if not isinstance(closed, list) or not all(isinstance(v, str) for v in closed):
                errors.append("closed_windows: must be a list of conversation ids")
            else:
                changes["closed_windows"] = frozenset(closed)
        if "deduplicate" in data:
            if not isinstance(data["deduplicate"], bool):
                errors.append("deduplicate: must be true or false")
            else:
                changes["deduplicate"] = data["deduplicate"]
        if errors:
            raise ValueError("; ".join(errors))
        return replace(self, **changes)


@dataclass
class Message:
    """A created message. Its status is derived from the clock on every read, so no background task."""

    id: str
    conversation_id: str
    channel: str
    body: dict[str, Any]
    idempotency_key: str | None
    created_at: str
    created_monotonic: float
    # Snapshotted at creation, so later config changes don't rewrite history.
    queued_seconds: float
    sent_seconds: float
    delays_from: str
    outcome: str
    ignored_fields: list[str]
    first_read: float | None = None

    def mark_read(self, now: float) -> None:
        if self.first_read is None:
            self.first_read = now

    def status(self, now: float) -> str:
        if self.delays_from == "first_read":
            age = 0.0 if self.first_read is None else now - self.first_read
        else:
            age = now - self.created_monotonic
        if age < self.queued_seconds:
            return "queued"
        if age < self.queued_seconds + self.sent_seconds or self.outcome == "stuck":
            return "sent"
        return self.outcome

    def data(self, now: float, *, initial: bool = False) -> dict[str, Any]:
        """The ``data`` object of the API envelope, shaped like the reference's example."""
        status = self.status(now)
        if initial and status not in ("queued", "sent"):
            # The reference promises an initial status of queued or sent, even with zero delays.
            status = "sent"
        email = self.channel == "email"
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "channel": self.channel,
            "direction": "outbound",
            "content": self.body["content"],
            "subject": self.body.get("subject") if email else None,
            "sender_type": "api",
            # The reference says email ignores media_url.
            "media_url": [] if email else list(self.body.get("media_url") or []),
            "status": status,
            "created_at": self.created_at,
        }

    def record(self, now: float) -> dict[str, Any]:
        """The control API's view, with what the client actually sent."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "channel": self.channel,
            "body": self.body,
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at,
            "created_monotonic": self.created_monotonic,
            "status": self.status(now),
            "ignored_fields": self.ignored_fields,
        }


@dataclass
class _Replay:
    conversation_id: str
    canonical_body: str
    message: Message


class Store:
    """Everything the emulator remembers; single-threaded (one event loop), so no locks.

    :param api_key: the only accepted bearer token.
    :param settings: initial settings; ``reset()`` returns to them.
    :param max_messages: most messages kept; the oldest is evicted first, with its idempotency record.
    """

    def __init__(self, api_key: str, settings: Settings, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages!r}")
        self.api_key = api_key
        self.max_messages = max_messages
        self.initial_settings = settings
        self.settings = settings
        self.messages: dict[str, Message] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.faults: list[FaultRule] = []
        self._idempotency: dict[tuple[str, str], _Replay] = {}
        self._fault_seq = 0
        self.counts: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.bucket = TokenBucket()

    def reset(self) -> None:
        """Forget messages, log, faults, counters and config changes; keep the api key."""
        self.settings = self.initial_settings
        self.messages.clear()
        self.log.clear()
        self.faults.clear()
        self._idempotency.clear()
        self.counts.clear()
        self.responses.clear()
        self.bucket = TokenBucket()

    # -- messages -------------------------------------------------------------------------------

    def replay_for(self, key: str, conversation_id: str, canonical_body: str) -> Message | None:
        """The original message for a repeated key, None for a new key; ValueError on a mismatch."""
        if not self.settings.deduplicate:
            return None
        found = self._idempotency.get((self.api_key, key))
        if found is None:
            return None
        if found.conversation_id != conversation_id or found.canonical_body != canonical_body:
            raise ValueError("Idempotency-Key was already used with a different request body")
        return found.message

    def create(
        self, conversation_id: str, body: dict[str, Any], key: str | None, canonical_body: str
    ) -> Message:
        now = time.monotonic()
        settings = self.settings
        clean = {k: v for k, v in body.items() if v is not None}
        message = Message(
            id="msg_" + secrets.token_hex(8),
            conversation_id=conversation_id,
            channel=clean["channel"],
            body=body,
            idempotency_key=key,
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            created_monotonic=now,
            queued_seconds=settings.queued_seconds,
            sent_seconds=settings.sent_seconds,
            delays_from=settings.delays_from,
            outcome=rules.final_outcome(conversation_id, settings.outcomes),
            ignored_fields=rules.ignored_fields(clean),
        )
        self.messages[message.id] = message
        if key is not None:
            self._idempotency[(self.api_key, key)] = _Replay(conversation_id, canonical_body, message)
        self.counts["created"] += 1
        while len(self.messages) > self.max_messages:
            self._evict_oldest()
        return message

    def _evict_oldest(self) -> None:
        """Forget the oldest message (dicts keep insertion order) and the key record that names it."""
        oldest = self.messages.pop(next(iter(self.messages)))
        if oldest.idempotency_key is not None:
            record_key = (self.api_key, oldest.idempotency_key)
            record = self._idempotency.get(record_key)
            if record is not None and record.message is oldest:
                del self._idempotency[record_key]
        self.counts["evicted"] += 1

    def take_token(self) -> float | None:
        """None when the account's rate limit lets this request through, else seconds to wait."""
        rate = self.settings.rate_limit
        if rate <= 0:
            return None
        wait = self.bucket.take(rate, self.settings.rate_burst or rate, time.monotonic())
        if wait is not None:
            self.counts["rate_limited"] += 1
        return wait

    # -- faults ---------------------------------------------------------------------------------

    def add_fault(self, data: Any) -> FaultRule:
        self._fault_seq += 1
        rule = parse_rule(data, f"fault_{self._fault_seq}")
        self.faults.append(rule)
        return rule

    def pick_fault(self, when: str, method: str, conversation_id: str) -> FaultRule | None:
        """The first rule, in insertion order, that hits this request (and use up one of its times)."""
        for rule in self.faults:
            if rule.matches(when, method, conversation_id):
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
                self.counts["faults_applied"] += 1
                return rule
        return None

    # -- log and stats --------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        self.log.append(entry)
        self.counts["requests"] += 1
        self.counts["kind:" + str(entry["kind"])] += 1
        self.responses[str(entry["status"])] += 1
        if entry["had_nulls"]:
            self.counts["nulls_received"] += 1

    def stats(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "created": counts["created"],
            "replayed": counts["replayed"],
            "requests": counts["requests"],
            "by_path_kind": {
                "create": counts["kind:create"],
                "get": counts["kind:get"],
                "other": counts["kind:None"],
            },
            "faults_applied": counts["faults_applied"],
            "responses": dict(self.responses),
            "nulls_received": counts["nulls_received"],
            "rate_limited": counts["rate_limited"],
            "messages": len(self.messages),
            "evicted": counts["evicted"],
            "idempotency_records": len(self._idempotency),
            "max_messages": self.max_messages,
            "log_entries": len(self.log),
        }


class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``size``; each request takes one."""

    def __init__(self) -> None:
        self.tokens: float | None = None  # full on first use
        self.updated = 0.0

    def take(self, rate: float, size: float, now: float) -> float | None:
        size = max(1.0, size)
        if self.tokens is None:
            self.tokens = size
        else:
            self.tokens = min(size, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


def canonical_json(value: Any) -> str:
    """Key-order- and whitespace-independent form of a body, for idempotency comparisons."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
