"""
Templates that change between tries, with a crash between the POST and the record.

Every case renders the single send's content from ``macros.datetime.now()`` and a random number,
so each try renders a different body.  The first try dies right after its POST (before the
operator records the answer) or, in some cases, not at all; up to two more tries follow, each
rendering afresh.  Cases run with and without a task state store (Airflow 3.3 vs 3.1/3.2), with
``on_uncertain`` ``"resend"`` and ``"skip"``, against an emulator that deduplicates by key and one
that ignores keys.  Messages are counted per conversation at the emulator.

Held: at most one message per case wherever the provider can hold it on its own (a state store
with ``"skip"``, or any retry that finds the record) or with a deduplicating service.  The
combinations it cannot hold alone against a service that ignores keys after a crash in the
window (``"resend"``, and no state store at all) are counted and reported, not hidden.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from tests.reliability._support import MemoryStateStore, created_per_conversation, figures, make_context
from vantax_provider._compat import AirflowException
from vantax_provider.emulator.testing import Emulator
from vantax_provider.operators.vantax import VantaxSendMessageOperator

CONTENT = "Code {{ range(10000, 99999) | random }} at {{ macros.datetime.now().isoformat() }}"
MACROS = SimpleNamespace(datetime=datetime)


class Crash(Exception):
    """The worker died after the POST, before the answer was recorded."""


class CrashingSend(VantaxSendMessageOperator):
    def _send(self, *args: Any, **kwargs: Any) -> Any:
        message = super()._send(*args, **kwargs)
        raise Crash(message.id)


def _try(
    cls: type[VantaxSendMessageOperator], conversation_id: str, context: dict[str, Any], **kw: Any
) -> str:
    op = cls(task_id="send", conversation_id=conversation_id, channel="facebook", content=CONTENT, **kw)
    op.render_template_fields({**context, "macros": MACROS})
    try:
        op.execute(context)  # type: ignore[arg-type]
    except Crash:
        return "crash"
    except AirflowException:
        return "failed"
    return "ok"


@pytest.mark.parametrize("deduplicate", [False, True], ids=["keys-ignored", "keys-honoured"])
def test_re_rendered_retries_after_a_crash_send_at_most_once(
    vantax_emulator: Emulator, fast_conn: Any, deduplicate: bool
) -> None:
    fast_conn()
    vantax_emulator.configure(deduplicate=deduplicate)
    rng = random.Random(20261129 + deduplicate)
    f = figures("changing templates")
    cases: list[tuple[str, bool, str, int]] = []
    combos = list(itertools.product((True, False), ("resend", "skip"), (0, 1, 2))) * 2
    rng.shuffle(combos)
    for n, (with_store, on_uncertain, crashes) in enumerate(combos):
        conversation_id = f"conv_tpl_{int(deduplicate)}_{n:03d}"
        store = MemoryStateStore() if with_store else None
        outcomes = []
        for attempt in range(3):
            context = make_context("send", store=store, try_number=attempt + 1)
            cls = CrashingSend if attempt < crashes else VantaxSendMessageOperator
            outcomes.append(_try(cls, conversation_id, context, on_uncertain=on_uncertain))
            if outcomes[-1] == "ok" or outcomes[-1] == "failed":
                break
        cases.append((conversation_id, with_store, on_uncertain, crashes))
        f.cases += 1
        f.faults_applied += min(crashes, len(outcomes))
        f.survived += int(outcomes[-1] == "ok")
    created = created_per_conversation(vantax_emulator)
    limits = {"resend_no_dedup_duplicates": 0, "no_store_no_dedup_duplicates": 0}
    for conversation_id, with_store, on_uncertain, crashes in cases:
        extra = max(0, created[conversation_id] - 1)
        if not deduplicate and crashes > 0 and not with_store:  # Airflow 3.1/3.2: nothing to remember with
            limits["no_store_no_dedup_duplicates"] += extra
            continue
        if not deduplicate and crashes > 0 and on_uncertain == "resend":  # the documented cost of "resend"
            limits["resend_no_dedup_duplicates"] += extra
            continue
        f.duplicates += extra
        assert created[conversation_id] <= 1, (conversation_id, with_store, on_uncertain, crashes)
    for name, value in limits.items():
        f.extra[name] = f.extra.get(name, 0) + value
    f.extra["messages"] = f.extra.get("messages", 0) + sum(created.values())
    assert f.duplicates == 0
