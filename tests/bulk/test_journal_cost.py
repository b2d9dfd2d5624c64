"""
What the bulk journal costs on a real Airflow 3.3 deployment (api-server, scheduler with
LocalExecutor, dag-processor, triggerer; SQLite), where every ``task_state_store`` call of a
task goes from the task process through its supervisor to the api-server.

One task measures, in the worker:

- the time of one ``set()`` of a typical journal head (256 done + 32 in-flight identities,
  about 3 KB) and of one ``get()``;
- the bulk operator's throughput over 1,500 recipients (concurrency 32, emulator latency
  50 ms) with the real store (write-ahead on), and with no store (journal off), interleaved.

A measurement, printed for docs/performance.md; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.airflow_3_3, pytest.mark.timeout(900)]

DAG_SOURCE = """
import base64, os, time
from datetime import datetime
from airflow.sdk import DAG, task

N = 1500

@task(retries=2)
def measure(**context):
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    store = context["task_state_store"]
    head = {"v": 1, "sealed": 0, "done": base64.b64encode(os.urandom(8 * 256)).decode(),
            "maybe": "", "intent": base64.b64encode(os.urandom(8 * 32)).decode()}
    sets = []
    for _ in range(200):
        started = time.perf_counter()
        store.set("vx_probe", head)
        sets.append(time.perf_counter() - started)
    gets = []
    for _ in range(100):
        started = time.perf_counter()
        store.get("vx_probe")
        gets.append(time.perf_counter() - started)
    rates = {"store": [], "none": []}
    for round_ in range(2):
        for mode in (("store", "none") if round_ == 0 else ("none", "store")):
            op = VantaxBulkSendMessageOperator(
                task_id=f"inner_{mode}_{round_}",
                recipients=[{"cid": f"conv_{mode}{round_}_{i:05d}"} for i in range(N)],
                conversation_id="{{ recipient.cid }}", channel="email", subject="s",
                content="Hello {{ recipient.cid }}", max_concurrency=32,
            )
            ctx = dict(context)
            if mode == "none":
                ctx.pop("task_state_store")
            started = time.perf_counter()
            result = op.execute(ctx)
            rates[mode].append(N / (time.perf_counter() - started))
            assert result["sent"] == N, result["failed"]
    sets.sort(); gets.sort()
    return {
        "set_ms_median": 1000 * sets[len(sets) // 2], "set_ms_p95": 1000 * sets[int(len(sets) * 0.95)],
        "get_ms_median": 1000 * gets[len(gets) // 2], "head_bytes": len(str(head)),
        "rate_store": max(rates["store"]), "rate_none": max(rates["none"]), "runs": rates,
    }

with DAG("vx_journal_cost", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
    measure()
"""


def test_journal_cost_on_a_real_deployment(tmp_path: Path) -> None:
    from tests.e2e.airflow_cluster import AirflowCluster
    from vantax_provider.emulator.testing import running_emulator

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "vx_journal_cost.py").write_text(textwrap.dedent(DAG_SOURCE))
    with running_emulator(latency_ms=50) as emu:
        env = {"AIRFLOW_CONN_VANTAX_DEFAULT": emu.connection_json()}
        with AirflowCluster(tmp_path / "home", dags, env=env) as cluster:
            cluster.wait_for_dag("vx_journal_cost")
            run_id = cluster.trigger("vx_journal_cost")
            state = cluster.wait_for_run("vx_journal_cost", run_id, timeout=600)
            assert state == "success", cluster.dump_logs()
            [(value,)] = cluster.query(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                "vx_journal_cost", run_id,
            )  # fmt: skip
    figures = json.loads(value) if isinstance(value, (str, bytes)) else value
    print("\njournal cost:", json.dumps(figures))
    assert figures["rate_store"] > 0 and figures["rate_none"] > 0
