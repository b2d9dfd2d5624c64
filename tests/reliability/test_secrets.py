"""
Secrets: the example DAGs run against an emulator whose API key is a recognisable canary, also
while the server echoes the key back in its error text; then every place a key could end up is
scanned — captured stdout/stderr and log records, task log files, every XCom value, every rendered
template field, the whole metadata database file, and exception text and reprs.  The canary must
occur zero times.  Plain http to anything but loopback is refused before a key is sent.
"""

from __future__ import annotations

import json
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability._support import figures
from vantax_provider.emulator.testing import Emulator, running_emulator
from vantax_provider.exceptions import VantaxConfigurationError, VantaxError
from vantax_provider.hooks.vantax import VantaxHook

CANARY = "vx_test_CANARY" + secrets.token_hex(12)
ECHO = json.dumps({"success": False, "message": f"Invalid token: Bearer {CANARY} (key {CANARY})"})


@pytest.fixture(scope="module")
def canary_emulator() -> Iterator[Emulator]:
    with running_emulator(api_key=CANARY) as emu:
        yield emu


@pytest.fixture
def canary_env(airflow_db: Path, canary_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    canary_emulator.reset()
    conn = json.loads(canary_emulator.connection_json())
    conn["extra"] = {"retry_backoff": 0.01, "timeout": 2, "max_retries": 1}
    monkeypatch.setenv("AIRFLOW_CONN_VANTAX_DEFAULT", json.dumps(conn))
    return canary_emulator


class Scan:
    """Counts what was scanned, and where the canary was found."""

    def __init__(self) -> None:
        self.scanned: dict[str, int] = {}
        self.found: list[str] = []

    def text(self, where: str, text: str, count: int = 1) -> None:
        self.scanned[where] = self.scanned.get(where, 0) + count
        if CANARY in text:
            line = next(line for line in text.splitlines() if CANARY in line)
            self.found.append(f"{where}: {line[:300]}")


def _dag(name: str) -> Any:
    from vantax_dagtest import copy_examples, load_module

    return load_module(copy_examples() / f"{name}.py").dag


def _run_examples(emu: Emulator) -> list[tuple[str, str]]:
    """Run every example DAG, some with failures whose text could carry the key; return (run, state)."""
    from vantax_dagtest import task_states

    runs = []
    for name, conf in [
        ("example_vantax_scheduled_notification", None),
        ("example_vantax_pipeline_alert", {"fail": False}),
        ("example_vantax_pipeline_alert", {"fail": True}),
        ("example_vantax_outreach", None),
        ("example_vantax_bulk_mapped_chunks", None),
    ]:
        run = _dag(name).test(run_conf=conf) if conf else _dag(name).test()
        runs.append((name, str(run.state)))
        states = task_states(run)
        failing = {"load"} if conf == {"fail": True} else set()  # the alert example's failing task
        assert {task for task, (state, _) in states.items() if state != "success"} == failing, states
    # The server echoes the key in its error text: on a refused key, and in a 5xx page.
    emu.inject("malformed", status=401, body=ECHO, method="POST", times=None)
    run = _dag("example_vantax_scheduled_notification").test()
    runs.append(("scheduled_notification+401-echo", str(run.state)))
    emu.clear_faults()
    emu.inject("malformed", status=500, body=ECHO, times=None)
    run = _dag("example_vantax_outreach").test()
    runs.append(("outreach+500-echo", str(run.state)))
    emu.clear_faults()
    return runs


def test_the_key_occurs_nowhere(
    canary_env: Emulator,
    airflow_home: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    scan = Scan()
    caplog.set_level("DEBUG")
    runs = _run_examples(canary_env)
    # Each kind of run really happened: sends succeeded, and the echoing server failed some.
    assert [state for _, state in runs[:2]] == ["success", "success"]
    assert runs[-2][1] == "failed" and runs[-1][1] == "failed"
    assert canary_env.stats()["created"] >= 1 + 1 + 1 + 4

    out, err = capfd.readouterr()
    scan.text("stdout/stderr lines", out + err, count=len((out + err).splitlines()))
    scan.text("log records", caplog.text, count=len(caplog.records))
    for record in caplog.records:
        if record.exc_info:
            scan.text("exception tracebacks", "".join(traceback.format_exception(*record.exc_info)))
    # dag.test() writes task logs to the captured output above, not to files: nothing to scan there.
    with create_session() as session:
        for row in session.scalars(select(XComModel)).all():
            scan.text("XCom values", json.dumps(row.value, default=str) + repr(row.value))
        for row in session.scalars(select(RenderedTaskInstanceFields)).all():
            scan.text("rendered template fields", json.dumps(row.rendered_fields, default=str))
    for suffix in ("", "-wal", "-journal"):
        db = Path(str(airflow_home / "airflow.db") + suffix)
        if db.exists():
            scan.text("metadata DB bytes", db.read_bytes().decode("latin-1"))
    f = figures("secrets")
    f.cases += len(runs)
    f.leaks += len(scan.found)
    f.extra.update({k.replace(" ", "_").replace("/", "_"): v for k, v in scan.scanned.items()})
    for where in ("stdout/stderr lines", "log records", "XCom values", "rendered template fields",
                  "metadata DB bytes"):  # fmt: skip
        assert scan.scanned.get(where, 0) > 0, f"nothing was scanned in {where}"
    assert scan.scanned["stdout/stderr lines"] >= 100, scan.scanned
    assert scan.found == [], scan.found


def test_exception_text_and_reprs_carry_no_key(canary_env: Emulator) -> None:
    hook = VantaxHook()
    canary_env.inject("malformed", status=401, body=ECHO, times=None)
    caught: list[BaseException] = []
    for call in (
        lambda: hook.send_message("conv_1", channel="facebook", content="hi"),
        lambda: hook.get_message("conv_1", "msg_1"),
    ):
        with pytest.raises(VantaxError) as info:
            call()
        caught.append(info.value)
    assert caught[0].status_code == 401 and "Invalid token" in str(caught[0])  # the echo was read
    texts = [repr(hook), repr(hook.settings), repr(hook.get_conn()), str(hook.get_conn().headers.keys())]
    for exc in caught:
        texts += [str(exc), repr(exc), str(exc.api_message), "".join(traceback.format_exception(exc))]
    hook.close()
    found = [t for t in texts if CANARY in t]
    figures("secrets").cases += len(texts)
    figures("secrets").leaks += len(found)
    assert found == []


@pytest.mark.parametrize(
    "host",
    ["http://api.vantaxai.com", "http://10.0.0.5:8080", "http://localhost.example.com", "http://127.0.0.1.nip.io",
     "http://[2001:db8::1]", "api.vantaxai.com"],
)  # fmt: skip
def test_plain_http_to_a_non_loopback_host_is_refused(
    host: str, canary_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "vantax", "host": host, "password": CANARY}
    if "://" not in host:
        conn["schema"] = "http"
    monkeypatch.setenv("AIRFLOW_CONN_VX_PLAIN", json.dumps(conn))
    hook = VantaxHook("vx_plain")
    with pytest.raises(VantaxConfigurationError, match="Refusing plain http") as info:
        hook.send_message("conv_1", channel="facebook", content="hi")
    assert CANARY not in str(info.value)
    figures("secrets").cases += 1


@pytest.mark.parametrize("host", ["http://127.0.0.1", "http://localhost", "http://[::1]"])
def test_plain_http_to_loopback_is_allowed(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VX_LOOP", json.dumps({"conn_type": "vantax", "host": host, "password": "k"})
    )
    assert VantaxHook("vx_loop").settings.base_url == host
    figures("secrets").cases += 1


def test_the_scan_finds_a_planted_key() -> None:
    # A scan that cannot find the key proves nothing: plant it in each form the scans read.
    scan = Scan()
    scan.text("plain", f"header Authorization: Bearer {CANARY} trailer")
    scan.text("json", json.dumps({"password": CANARY}))
    scan.text("latin-1 bytes", f"\x00\x01{CANARY}\xff".encode().decode("latin-1"))
    scan.text("clean", "Authorization: Bearer ***")
    assert [f.split(":")[0] for f in scan.found] == ["plain", "json", "latin-1 bytes"]
