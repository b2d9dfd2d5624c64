"""
Real DAG runs (``dag.test()``) whose message renders differently on every try
(``macros.datetime.now()`` and a random number), with the task dying right after its POST, before
the answer is recorded.  Airflow's own retry then runs it again.  Counted at the emulator (in its
mode that ignores ``Idempotency-Key`` where the provider alone must hold).  Clearing is covered
in test_send_once.py and in the e2e suite.
"""

from __future__ import annotations

from typing import Any

import pytest
from vantax_dagtest import load_dag, task_states

pytestmark = pytest.mark.airflow_3_3

DAG = """
from datetime import datetime
from pathlib import Path
from airflow.sdk import DAG
from vantax_provider.operators.vantax import VantaxSendMessageOperator

CRASHED = Path(__file__).with_suffix(".crashed")


class DiesAfterThePost(VantaxSendMessageOperator):
    def _send(self, *args, **kwargs):
        message = super()._send(*args, **kwargs)
        if not CRASHED.exists():  # the first try only
            CRASHED.write_text(message.id)
            raise RuntimeError("the worker died after the POST")
        return message


CONTENT = "Code {{{{ range(10000, 99999) | random }}}} at {{{{ macros.datetime.now().isoformat() }}}}"

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    DiesAfterThePost(
        task_id="send", conversation_id="conv_once", channel="facebook", content=CONTENT,
        retries=1, retry_delay=0, {extra}
    )
"""


def _dag(dag_id: str, on_uncertain: str) -> Any:
    extra = "" if on_uncertain == "resend" else f"on_uncertain={on_uncertain!r},"  # resend: the default
    return load_dag(dag_id, DAG.format(dag_id=dag_id, extra=extra))


def test_crash_between_post_and_record_then_retry_resends_the_first_request(dag_env: Any) -> None:
    # A service that deduplicates: the retry's request must be the very same one to be deduplicated.
    dr = _dag("once_resend", "resend").test()
    assert task_states(dr) == {"send": ("success", 2)}
    posts = [r for r in dag_env.requests() if r["method"] == "POST"]
    assert len(posts) == 2 and posts[1].get("replayed") is True
    assert len({r["idempotency_key"] for r in posts}) == 1
    assert len(dag_env.messages()) == 1


def test_crash_between_post_and_record_with_skip_sends_nothing_again(dag_env: Any) -> None:
    dag_env.configure(deduplicate=False)
    dr = _dag("once_skip", "skip").test()
    assert task_states(dr) == {"send": ("failed", 2)}
    assert len([r for r in dag_env.requests() if r["method"] == "POST"]) == 1
    assert len(dag_env.messages()) == 1
