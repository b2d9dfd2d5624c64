"""
Helpers shared by the reliability suites: a minimal task context for driving operators
in-process, counting what the emulator really received, and the per-suite figures that the
conftest prints at the end of the run.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.doubles import FakeTI, StateStore
from vantax_provider.emulator.testing import Emulator

#: Connection extras for fast retries: 2 repeats, 10 ms first backoff, 0.5 s read timeout.
FAST_EXTRAS: dict[str, Any] = {"retry_backoff": 0.01, "timeout": 0.5, "max_retries": 2, "max_retry_after": 5}
#: The hook makes at most this many attempts per request under FAST_EXTRAS.
MAX_ATTEMPTS = 1 + FAST_EXTRAS["max_retries"]


@dataclass
class Figures:
    """What one suite tried and found; printed as one line at the end of the session."""

    cases: int = 0
    faults_applied: int = 0
    survived: int = 0
    duplicates: int = 0
    leaks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


FIGURES: dict[str, Figures] = {}


def figures(suite: str) -> Figures:
    return FIGURES.setdefault(suite, Figures())


def summary_lines() -> list[str]:
    lines = []
    for suite, f in sorted(FIGURES.items()):
        extra = "".join(f" {k}={v}" for k, v in f.extra.items())
        lines.append(
            f"reliability: {suite} cases={f.cases} faults={f.faults_applied} survived={f.survived} "
            f"duplicates={f.duplicates} leaks={f.leaks}{extra}"
        )
    return lines


MemoryStateStore = StateStore  # the shared JSON round-tripping double


def make_context(
    task_id: str, *, store: MemoryStateStore | None = None, try_number: int = 1
) -> dict[str, Any]:
    """A task context with a ``ti`` and, when given, a state store (as on Airflow 3.3)."""
    ti = FakeTI(dag_id="reliability", task_id=task_id, run_id="manual__reliability", try_number=try_number)
    context: dict[str, Any] = {"ti": ti, "params": {}}
    if store is not None:
        context["task_state_store"] = store
    return context


def settle(emu: Emulator, *, quiet: float = 0.3, limit: float = 5.0) -> None:
    """Wait until the emulator's request counter stops moving (stalled requests are logged at their end)."""
    deadline = time.monotonic() + limit
    last = emu.stats()["requests"]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = emu.stats()["requests"]
        if now == last:
            return
        last = now


def created_per_conversation(emu: Emulator) -> Counter[str]:
    return Counter(m["conversation_id"] for m in emu.messages())


def attempts(emu: Emulator, conversation_id: str, method: str) -> int:
    return sum(1 for r in emu.requests() if r["conversation_id"] == conversation_id and r["method"] == method)


def duplicates(counts: Iterable[int]) -> int:
    return sum(max(0, n - 1) for n in counts)


def outcome_class(ok: bool, tries: int) -> str:
    """The outcome class of a case, from whether it succeeded and how many attempts the server saw."""
    if ok:
        return "succeeded" if tries <= 1 else "retried-and-succeeded"
    return "failed-without-retry" if tries <= 1 else "failed-after-retries"


class FileStateStore:
    """
    A ``task_state_store`` kept in a folder (one JSON file per key, replaced atomically), so that
    the tries of one task instance can run in different processes and one can be SIGKILLed.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str, default: Any = None) -> Any:
        path = self.folder / f"{key}.json"
        return json.loads(path.read_text()) if path.exists() else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        temporary = self.folder / f".{key}.tmp"
        temporary.write_text(json.dumps(value))
        os.replace(temporary, self.folder / f"{key}.json")

    def delete(self, key: str) -> None:
        (self.folder / f"{key}.json").unlink(missing_ok=True)
