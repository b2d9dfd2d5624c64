"""Python-side handle on an emulator process, for tests, the demo, benchmarks and users' DAG tests.

Example::

    with running_emulator(queued_seconds=0.05, sent_seconds=0.1) as emu:
        os.environ.update(emu.airflow_env())
        ...  # run the code under test against emu.url
        assert emu.stats()["created"] == 1
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from vantax_provider.emulator import API_KEY_ENV, new_api_key

URL_PREFIX = "VANTAX_EMULATOR_URL="
_UNSET: Any = object()


class EmulatorError(RuntimeError):
    """The emulator could not be started, or a control request failed."""


class Emulator:
    """A running emulator, reached through its control API.

    :param url: base URL, e.g. ``http://127.0.0.1:40123``.
    :param api_key: the bearer token it accepts.
    :param process: the emulator process when this handle started it, else None.
    :param timeout: timeout in seconds for control requests.
    """

    def __init__(
        self, url: str, api_key: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.process = process
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    # -- control API --------------------------------------------------------------------------

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._client.request(method, "/_emulator/" + path, json=payload)
        if response.status_code >= 400:
            raise EmulatorError(f"{method} /_emulator/{path}: {response.status_code} {response.text}")
        return response.json()

    def health(self) -> dict[str, Any]:
        """``{"ok": true, "pid": ..., "monotonic": <server clock>}``."""
        result: dict[str, Any] = self._call("GET", "health")
        return result

    def stats(self) -> dict[str, Any]:
        """Counters: created, replayed, requests, by_path_kind, faults_applied, responses, nulls_received."""
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def messages(self) -> list[dict[str, Any]]:
        """Every created message, oldest first, with the body as received and its current status."""
        result: list[dict[str, Any]] = self._call("GET", "messages")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """The API request log (last 100,000), in completion order; ``t`` is the server's arrival time."""
        result: list[dict[str, Any]] = self._call("GET", "requests")
        return result

    def faults(self) -> list[dict[str, Any]]:
        """The fault rules with their remaining ``times`` and ``hits``."""
        result: list[dict[str, Any]] = self._call("GET", "faults")
        return result

    def inject(
        self,
        kind: str,
        *,
        status: int | None = None,
        retry_after: str | int | None = None,
        when: str = "before",
        method: str | None = None,
        conversation_id: str | None = None,
        times: int | None = 1,
        probability: float | None = None,
        seed: int = 1,
        stall_seconds: float | None = None,
        body: str | None = None,
    ) -> str:
        """Add a fault rule (see docs/emulator.md) and return its id. ``times=None`` means unlimited."""
        rule: dict[str, Any] = {"kind": kind, "when": when, "times": times, "seed": seed}
        optional = {
            "status": status,
            "retry_after": retry_after,
            "method": method,
            "conversation_id": conversation_id,
            "probability": probability,
            "stall_seconds": stall_seconds,
            "body": body,
        }
        rule.update({k: v for k, v in optional.items() if v is not None})
        rule_id: str = self._call("POST", "faults", rule)["id"]
        return rule_id

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def configure(
        self,
        *,
        latency_ms: float = _UNSET,
        queued_seconds: float = _UNSET,
        sent_seconds: float = _UNSET,
        delays_from: str = _UNSET,
        outcomes: dict[str, str] = _UNSET,
        closed_windows: Sequence[str] = _UNSET,
        deduplicate: bool = _UNSET,
        rate_limit: float = _UNSET,
        rate_burst: float = _UNSET,
    ) -> dict[str, Any]:
        """Change behaviour from now on (messages already created keep their timings); returns the config."""
        changes = {
            "latency_ms": latency_ms,
            "queued_seconds": queued_seconds,
            "sent_seconds": sent_seconds,
            "delays_from": delays_from,
            "outcomes": outcomes,
            "closed_windows": closed_windows if closed_windows is _UNSET else list(closed_windows),
            "deduplicate": deduplicate,
            "rate_limit": rate_limit,
            "rate_burst": rate_burst,
        }
        result: dict[str, Any] = self._call(
            "POST", "config", {k: v for k, v in changes.items() if v is not _UNSET}
        )
        return result

    def reset(self) -> None:
        """Forget messages, the log, faults, counters and configure() changes; the api key stays."""
        self._call("POST", "reset")

    # -- Airflow connection -------------------------------------------------------------------

    def connection_json(self) -> str:
        """The Airflow connection in JSON form (the hook takes the base URL, scheme included, from host)."""
        return json.dumps({"conn_type": "vantax", "host": self.url, "password": self.api_key})

    def airflow_env(self, conn_id: str = "vantax_default") -> dict[str, str]:
        """``{"AIRFLOW_CONN_<CONN_ID>": connection_json}``, to merge into ``os.environ``."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json()}

    def close(self) -> None:
        self._client.close()


def _child_env() -> dict[str, str]:
    # Make the package importable in the child even when it is only on this process's sys.path.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _read_url(stdout: IO[bytes], found: queue.Queue[str]) -> None:
    """Hand the URL line to the parent, then keep draining so the child never blocks on a full pipe."""
    for raw in stdout:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith(URL_PREFIX):
            found.put(line[len(URL_PREFIX) :])


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_emulator(
    *,
    api_key: str | None = None,
    latency_ms: float = 0,
    queued_seconds: float = 0.05,
    sent_seconds: float = 0.1,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 20.0,
    stop_grace: float = 5.0,
    log_level: str = "warning",
    deduplicate: bool = True,
    max_messages: int | None = None,
) -> Iterator[Emulator]:
    """
    Start the emulator in a subprocess, yield a handle, and stop it (SIGTERM, then kill) on exit.

    ``api_key`` None makes a random test key (``emu.api_key``); the child gets it by environment.
    ``deduplicate=False`` starts it as a service that ignores ``Idempotency-Key``.
    ``max_messages`` caps the messages it keeps (None: the emulator's default, 100,000).
    """
    command = [
        sys.executable, "-m", "vantax_provider.emulator",
        "--host", host, "--port", str(port),
        "--latency-ms", str(latency_ms), "--queued-seconds", str(queued_seconds),
        "--sent-seconds", str(sent_seconds), "--log-level", log_level,
        *([] if deduplicate else ["--ignore-idempotency-keys"]),
        *([] if max_messages is None else ["--max-messages", str(max_messages)]),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stderr:
        api_key = api_key or new_api_key()
        env = {**_child_env(), API_KEY_ENV: api_key}  # by environment: argv is visible to other users
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
        assert process.stdout is not None
        found: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_url, args=(process.stdout, found), daemon=True).start()
        emulator: Emulator | None = None
        try:
            deadline = time.monotonic() + startup_timeout
            url: str | None = None
            while url is None:
                with contextlib.suppress(queue.Empty):
                    url = found.get(timeout=0.05)
                if url is None and (process.poll() is not None or time.monotonic() > deadline):
                    _stop(process, stop_grace)
                    stderr.seek(0)
                    detail = stderr.read().decode("utf-8", "replace").strip() or "(no stderr)"
                    what = f"exited with {process.returncode}" if process.returncode else "did not start"
                    raise EmulatorError(f"Vantax emulator {what} within {startup_timeout}s: {detail}")
            emulator = Emulator(url, api_key, process)
            yield emulator
        finally:
            if emulator is not None:
                emulator.close()
            _stop(process, stop_grace)
            process.stdout.close()
