"""The control API under ``/_emulator/``: inspect state, inject faults, change behaviour.

No auth: it only ever listens on loopback for tests, and must work even when the tests are
checking what happens with a wrong API key.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from vantax_provider.emulator.replies import Reply, error_reply, json_reply, read_body
from vantax_provider.emulator.state import Store

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_CONTROL_BODY_LIMIT = 1024 * 1024


class ControlApi:
    """Handlers for ``/_emulator/*``.

    :param store: the emulator state to read and change.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._routes: dict[tuple[str, bytes], Callable[[Any], Reply]] = {
            ("GET", b"/_emulator/health"): self._health,
            ("GET", b"/_emulator/stats"): lambda _: json_reply(200, self.store.stats()),
            ("GET", b"/_emulator/messages"): self._messages,
            ("GET", b"/_emulator/requests"): lambda _: json_reply(200, list(self.store.log)),
            ("GET", b"/_emulator/faults"): lambda _: json_reply(
                200, [r.to_dict() for r in self.store.faults]
            ),
            ("POST", b"/_emulator/faults"): self._add_fault,
            ("DELETE", b"/_emulator/faults"): self._clear_faults,
            ("POST", b"/_emulator/reset"): self._reset,
            ("GET", b"/_emulator/config"): lambda _: json_reply(200, self.store.settings.to_dict()),
            ("POST", b"/_emulator/config"): self._configure,
        }

    async def handle(self, scope: MutableMapping[str, Any], raw_path: bytes, receive: Receive) -> Reply:
        method: str = scope["method"]
        handler = self._routes.get((method, raw_path))
        if handler is None:
            if any(path == raw_path for _, path in self._routes):
                return error_reply(405, "Method not allowed")
            return error_reply(404, "Not found")
        payload: Any = None
        if method == "POST":
            headers = dict(scope["headers"])
            body, too_large = await read_body(receive, _CONTROL_BODY_LIMIT, headers)
            if too_large:
                return error_reply(413, "Control request body too large")
            if body.strip():
                try:
                    payload = json.loads(body)
                except ValueError:
                    return error_reply(400, "Control request body is not valid JSON")
        return handler(payload)

    def _health(self, _: Any) -> Reply:
        return json_reply(200, {"ok": True, "pid": os.getpid(), "monotonic": time.monotonic()})

    def _messages(self, _: Any) -> Reply:
        now = time.monotonic()
        return json_reply(200, [m.record(now) for m in self.store.messages.values()])

    def _add_fault(self, payload: Any) -> Reply:
        try:
            rule = self.store.add_fault(payload)
        except ValueError as exc:
            return error_reply(400, f"Invalid fault rule: {exc}")
        return json_reply(201, {"id": rule.id, "rule": rule.to_dict()})

    def _faults(self, _: Any) -> Reply:
        return json_reply(200, [rule.to_dict() for rule in self.store.faults])

    def _clear_faults(self, _: Any) -> Reply:
        self.store.faults.clear()
        return json_reply(200, {"ok": True})

    def _reset(self, _: Any) -> Reply:
        self.store.reset()
        return json_reply(200, {"ok": True, "config": self.store.settings.to_dict()})

    def _configure(self, payload: Any) -> Reply:
        try:
            self.store.settings = self.store.settings.updated(payload if payload is not None else {})
        except ValueError as exc:
            return error_reply(400, f"Invalid config: {exc}")
        return json_reply(200, self.store.settings.to_dict())
