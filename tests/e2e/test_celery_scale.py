"""
The provider on the deployment large users run: PostgreSQL, Redis, the CeleryExecutor, two workers.

One deployment for the whole module (starting it is most of the cost).  In order:

1. the example DAGs run to success;
2. a mapped outreach DAG (5,000 recipients in 10 chunks, each chunk a deferred wait for delivery)
   runs on both workers, every recipient gets exactly one message and every delivery is seen;
3. the same DAG again, and one Celery worker is SIGKILLed in the middle of a chunk: with a short
   heartbeat timeout, Airflow retries the chunk on the other worker, the retry skips what the
   checkpoint recorded, and every recipient still gets exactly one message;
4. the account's rate limit across the workers: 4 mapped chunks on one connection whose
   ``rate_limit`` extra is L, against the emulator enforcing L (429 with ``Retry-After``, no
   deduplication): accepted >= 0.9 L, 429s <= 5 % of requests, no second message.

Counts are the emulator's: what the server really received.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_cluster import CeleryCluster, missing_servers

from bench._rate import account_figures
from tests.reliability._support import figures

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

DAG_ID = "e2e_celery_outreach"
N, CHUNKS = 5000, 10
CHUNK = N // CHUNKS
EXAMPLES = {
    "example_vantax_scheduled_notification": {},
    "example_vantax_pipeline_alert": {},
    "example_vantax_outreach": {},
    "example_vantax_bulk_mapped_chunks": {},
}

OUTREACH_DAG = f"""
from datetime import datetime, timedelta
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax import VantaxBulkSendMessageOperator

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
         params={{"tag": "run"}}) as dag:

    @task
    def chunks(params=None):
        rows = [{{"cid": f"conv_{{params['tag']}}_{{i:05d}}", "name": f"Customer {{i}}"}} for i in range({N})]
        return [rows[i : i + {CHUNK}] for i in range(0, {N}, {CHUNK})]

    VantaxBulkSendMessageOperator.partial(
        task_id="send_chunk", conversation_id="{{{{ recipient.cid }}}}", channel="email",
        subject="Your renewal", content="Hi {{{{ recipient.name }}}}, your plan renews next month.",
        max_concurrency=16, wait_for_delivery=True, deferrable=True, poll_interval=3,
        delivery_timeout=600, retries=2, retry_delay=timedelta(seconds=2),
    ).expand(recipients=chunks())
"""

RATE_DAG_ID = "e2e_celery_rate"
# Two minutes at the limit. Chunks start and end a few seconds apart on a Celery deployment, and
# for those seconds fewer tasks share the budget (docs/scale.md): a fixed cost that took a batch
# of one minute (300 per chunk) down to 0.90 L when a chunk started 4 s late.
RATE_LIMIT, RATE_CHUNKS, RATE_CHUNK = 20.0, 4, 600
RATE_CONN = "vantax_rated"

RATE_DAG = f"""
from datetime import datetime
from airflow.sdk import DAG, task
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

with DAG("{RATE_DAG_ID}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:

    @task
    def chunks():
        rows = [{{"cid": f"conv_rate_{{i:05d}}"}} for i in range({RATE_CHUNKS * RATE_CHUNK})]
        return [rows[i : i + {RATE_CHUNK}] for i in range(0, len(rows), {RATE_CHUNK})]

    VantaxBulkSendMessageOperator.partial(
        task_id="send_chunk", vantax_conn_id="{RATE_CONN}", conversation_id="{{{{ recipient.cid }}}}",
        channel="email", subject="Your renewal", content="Hi, your plan renews next month.",
        max_concurrency=16, retries=0,
    ).expand(recipients=chunks())
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CeleryCluster, Any]]:
    missing = missing_servers()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (.ci/run installs Debian's postgresql and redis-server)")
    from vantax_provider.emulator.testing import running_emulator

    root = tmp_path_factory.mktemp("celery")
    dags = root / "dags"
    dags.mkdir()
    for name in EXAMPLES:
        shutil.copy(REPO / "example_dags" / f"{name}.py", dags)
    shutil.copytree(REPO / "example_dags" / "data", dags / "data")
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(OUTREACH_DAG))
    (dags / f"{RATE_DAG_ID}.py").write_text(textwrap.dedent(RATE_DAG))
    env = {
        # A lost worker is noticed within seconds, not the default five minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
        # A task handed to the killed worker but never started is re-queued, not lost.
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
    }
    # Delivery a few seconds after creation: realistic for email, and slower than the deferral
    # itself (issue 9: a trigger that fires at once can race the scheduler on Airflow 3.3).
    with running_emulator(queued_seconds=3, sent_seconds=3) as emu:
        env.update(emu.airflow_env())
        # The account's budget, set once on the connection; each of the 4 chunks starts at a quarter.
        rated = json.loads(emu.connection_json())
        rated["extra"] = {"rate_limit": RATE_LIMIT, "rate_limit_share": 1 / RATE_CHUNKS, "max_retries": 10,
                          "max_retry_time": 600}  # fmt: skip
        env[f"AIRFLOW_CONN_{RATE_CONN.upper()}"] = json.dumps(rated)
        with CeleryCluster(root / "home", dags, env=env, worker_concurrency=3) as running:
            yield running, emu


def _wait_all_runs(cluster: CeleryCluster, dag_ids: list[str], timeout: float) -> dict[str, list[str]]:
    """Until every run of these DAGs (triggered or scheduled) has finished; their states."""
    deadline = time.monotonic() + timeout
    while True:
        cluster.check_alive()
        rows = cluster.query("SELECT dag_id, state FROM dag_run WHERE dag_id = ANY(?)", dag_ids)
        states: dict[str, list[str]] = {}
        for dag_id, state in rows:
            states.setdefault(dag_id, []).append(state)
        if set(states) == set(dag_ids) and all(
            s in ("success", "failed") for v in states.values() for s in v
        ):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not finished within {timeout}s: {states}\n{cluster.dump_logs()}")
        time.sleep(1)


def test_example_dags_run_on_celery(cluster: tuple[CeleryCluster, Any]) -> None:
    deployment, emu = cluster
    for dag_id in EXAMPLES:
        deployment.wait_for_dag(dag_id)
    for dag_id, conf in EXAMPLES.items():  # scheduled ones may also have a run of their own
        deployment.trigger(dag_id, conf=conf)
    states = _wait_all_runs(deployment, list(EXAMPLES), timeout=300)
    assert all(s == ["success"] * len(s) for s in states.values()), (states, deployment.dump_logs())
    created = emu.messages()
    assert created, "the examples sent nothing"
    assert {m["status"] for m in created} <= {"queued", "sent", "delivered"}
    per_key = Counter(m["idempotency_key"] for m in created if m["idempotency_key"])
    assert max(per_key.values()) == 1


def _per_chunk(emu: Any, tag: str = "kill") -> Counter[int]:
    """Messages created so far per chunk of the run tagged ``tag`` (the example DAGs' runs aside)."""
    prefix = f"conv_{tag}_"
    return Counter(
        int(m["conversation_id"].removeprefix(prefix)) // CHUNK
        for m in emu.messages()
        if m["conversation_id"].startswith(prefix)
    )


def _run_outreach(deployment: CeleryCluster, tag: str) -> str:
    deployment.wait_for_dag(DAG_ID)
    return deployment.trigger(DAG_ID, conf={"tag": tag})


def _assert_exactly_once(emu: Any, tag: str) -> list[dict[str, Any]]:
    mine = [m for m in emu.messages() if m["conversation_id"].startswith(f"conv_{tag}_")]
    per_conversation = Counter(m["conversation_id"] for m in mine)
    assert len(per_conversation) == N, f"{N - len(per_conversation)} recipients got no message"
    assert max(per_conversation.values()) == 1, per_conversation.most_common(3)
    return mine


def test_mapped_outreach_runs_on_both_workers(cluster: tuple[CeleryCluster, Any]) -> None:
    deployment, emu = cluster
    emu.reset()
    emu.configure(queued_seconds=3, sent_seconds=3, latency_ms=20)
    run_id = _run_outreach(deployment, "both")
    state = deployment.wait_for_run(DAG_ID, run_id, timeout=420)
    tis = deployment.task_instances(DAG_ID, run_id)
    assert state == "success", (tis, deployment.dump_logs())
    hosts = deployment.task_hosts(DAG_ID, run_id, "send_chunk")
    assert sorted(hosts) == list(range(CHUNKS))
    print(f"\nchunks by worker (hostname, pid, try): {hosts}")
    assert {h for h, _, _ in hosts.values()} == set(deployment.workers), hosts
    assert len({p for _, p, _ in hosts.values()}) > 1
    for map_index in range(CHUNKS):
        assert "deferred" in deployment.states_seen(DAG_ID, run_id, "send_chunk", map_index)
        result = deployment.xcom(DAG_ID, run_id, "send_chunk", map_index)
        assert result["sent"] == CHUNK and result["delivery"]["counts"]["success"] == CHUNK, result
    mine = _assert_exactly_once(emu, "both")
    assert {m["status"] for m in mine} == {"delivered"}
    posts = [r for r in emu.requests() if r["kind"] == "create"]
    assert len(posts) == N and {r["status"] for r in posts} == {201}  # no replay was even needed


def test_worker_killed_mid_chunk_resumes_on_the_other(cluster: tuple[CeleryCluster, Any]) -> None:
    deployment, emu = cluster
    emu.reset()
    # Slower answers: a chunk of 500 at 16 in flight takes ~10 s, long enough to kill it midway.
    emu.configure(queued_seconds=3, sent_seconds=3, latency_ms=300)
    run_id = _run_outreach(deployment, "kill")
    victim, partial = _kill_a_worker_mid_chunk(deployment, emu, run_id)
    survivor = next(w for w in deployment.workers if w != victim)
    state = deployment.wait_for_run(DAG_ID, run_id, timeout=480)
    assert state == "success", (deployment.task_instances(DAG_ID, run_id), deployment.dump_logs())
    hosts = deployment.task_hosts(DAG_ID, run_id, "send_chunk")
    resumed = 0
    assert any(sent >= 100 for sent in partial.values()), partial
    for map_index, sent_before in partial.items():
        host, _, try_number = hosts[map_index]
        assert try_number >= 2 and host == survivor, (map_index, hosts[map_index])
        result = deployment.xcom(DAG_ID, run_id, "send_chunk", map_index)
        assert result["sent"] + result["skipped_already_sent"] == CHUNK, result
        if sent_before >= 100:  # the first try ran for seconds: its checkpoint was written
            # The retry skipped what the checkpoint (written every second) recorded of the first try.
            assert result["skipped_already_sent"] > 0, (sent_before, result)
        resumed += result["skipped_already_sent"]
    mine = _assert_exactly_once(emu, "kill")
    posts = [r for r in emu.requests() if r["kind"] == "create"]
    replayed = sum(1 for r in posts if r["replayed"])
    print(
        f"\nkilled {victim} with chunks {sorted(partial)} part-sent {partial}; the retries on {survivor} "
        f"skipped {resumed} from the checkpoint, {replayed} POSTs were idempotent replays, "
        f"{len(mine)} messages for {N} recipients"
    )
    assert {m["status"] for m in mine} == {"delivered"}
    # Only what the first tries sent after their last checkpoint was posted again (and replayed
    # by its Idempotency-Key): the killed tries did not go on sending behind the retries' backs.
    assert replayed <= sum(partial.values()) - resumed + 16 * len(partial), (replayed, partial, resumed)


def _kill_a_worker_mid_chunk(
    deployment: CeleryCluster, emu: Any, run_id: str, timeout: float = 300
) -> tuple[str, dict[int, int]]:
    """SIGKILL the worker of the first chunk seen part-sent; which chunks were partial, how far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.check_alive()
        running = deployment.query(
            "SELECT map_index, hostname FROM task_instance WHERE dag_id = ? AND run_id = ? "
            "AND task_id = 'send_chunk' AND state = 'running'",
            DAG_ID, run_id,
        )  # fmt: skip
        if running:
            per_chunk = _per_chunk(emu)
            partial = [(m, h) for m, h in running if 100 <= per_chunk.get(m, 0) <= CHUNK - 150]
            if partial:
                victim = partial[0][1]
                deployment.kill_worker(victim)
                time.sleep(2)  # requests in flight when it died may still land
                per_chunk = _per_chunk(emu)
                return victim, {m: per_chunk.get(m, 0) for m, h in running if h == victim}
        time.sleep(0.5)
    raise AssertionError(f"no chunk was seen part-sent within {timeout}s\n{deployment.dump_logs()}")


def test_account_rate_limit_holds_across_workers(cluster: tuple[CeleryCluster, Any]) -> None:
    deployment, emu = cluster
    deployment.wait_for_dag(RATE_DAG_ID)
    emu.reset()
    emu.configure(queued_seconds=0, sent_seconds=0, latency_ms=0, rate_limit=RATE_LIMIT, deduplicate=False)
    try:
        run_id = deployment.trigger(RATE_DAG_ID)
        state = deployment.wait_for_run(RATE_DAG_ID, run_id, timeout=420)
        # Only this DAG's traffic: the examples' scheduled runs may send too, and are not measured.
        log = [r for r in emu.requests() if str(r.get("conversation_id")).startswith("conv_rate_")]
        messages = [m for m in emu.messages() if m["conversation_id"].startswith("conv_rate_")]
    finally:
        emu.configure(rate_limit=0, deduplicate=True)
    assert state == "success", (deployment.task_instances(RATE_DAG_ID, run_id), deployment.dump_logs())
    hosts = deployment.task_hosts(RATE_DAG_ID, run_id, "send_chunk")
    total = RATE_CHUNKS * RATE_CHUNK
    per_conversation = Counter(m["conversation_id"] for m in messages)
    assert len(per_conversation) == total and max(per_conversation.values()) == 1, (
        per_conversation.most_common(3)
    )
    measured = account_figures(log, messages, RATE_LIMIT)
    # One line in the session's reliability figures, next to the four-process test's.
    f = figures("account_rate_limit/celery")
    f.cases, f.faults_applied, f.survived = total, measured["throttled"], len(per_conversation)
    f.duplicates = measured["duplicates"]
    f.extra.update({
        "limit": RATE_LIMIT, "chunks": RATE_CHUNKS, "workers": len({h for h, _, _ in hosts.values()}),
        "accepted_ratio": round(measured["accepted_ratio"], 3),
        "throttled_ratio": round(measured["throttled_ratio"], 3), "requests": len(log),
        "chunk_first_last_create_s": chunk_spans(log),
    })  # fmt: skip
    assert measured["accepted_ratio"] >= 0.9, measured
    assert measured["throttled_ratio"] <= 0.05, measured


def chunk_spans(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each chunk's first and last accepted create, in seconds from the run's first: staggered
    starts and a lone last chunk are what lower the accepted rate."""
    creates = [r for r in log if r["kind"] == "create" and r["status"] == 201]
    t0 = min(r["t"] for r in creates)
    spans: dict[int, list[float]] = {}
    for r in creates:
        chunk = int(r["conversation_id"].removeprefix("conv_rate_")) // RATE_CHUNK
        spans.setdefault(chunk, []).append(r["t"] - t0)
    return [(round(min(ts), 1), round(max(ts), 1)) for _, ts in sorted(spans.items())]
