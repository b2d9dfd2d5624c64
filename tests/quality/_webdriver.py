"""
A minimal W3C WebDriver client over httpx, for Debian's chromium + chromium-driver.

Just what the connection-form test needs (navigate, find, click, type, read text, screenshot),
so the suite needs no selenium.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

# Without the background-networking flags Chromium tries to reach the outside network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1400",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One WebDriver session."""

    def __init__(self, client: httpx.Client, session_id: str) -> None:
        self._client = client
        self._base = f"/session/{session_id}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._client.request(method, self._base + path, json=body)
        value = response.json().get("value")
        if response.status_code >= 400:
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:300]}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find_all(self, css: str) -> list[str]:
        found = self._call("POST", "/elements", {"using": "css selector", "value": css})
        return [item[ELEMENT] for item in found]

    def element(self, element_id: str) -> dict[str, str]:
        return {ELEMENT: element_id}

    def click(self, element_id: str) -> None:
        self._call("POST", f"/element/{element_id}/click", {})

    def type(self, element_id: str, text: str) -> None:
        self._call("POST", f"/element/{element_id}/value", {"text": text})

    def text(self, element_id: str) -> str:
        return str(self._call("GET", f"/element/{element_id}/text"))

    def page_text(self) -> str:
        return str(self.execute("return document.body ? document.body.innerText : '';"))

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise WebDriverError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))


@contextmanager
def chromium_session(chromium: str, driver: str) -> Iterator[Browser]:
    """Start chromedriver on a free loopback port and open a headless Chromium session."""
    port = free_port()
    profile = tempfile.mkdtemp(prefix="vantax-chromium-")
    log = open(os.path.join(profile, "chromedriver.log"), "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1"], stdout=log, stderr=subprocess.STDOUT
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get("/status").json()["value"].get("ready"):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}/profile"],
                    },
                }
            }
        }
        response = client.post("/session", json=caps)
        value = response.json()["value"]
        if response.status_code >= 400:
            raise WebDriverError(f"no browser session: {value.get('message', '')[:500]}")
        session_id = value["sessionId"]
        try:
            yield Browser(client, session_id)
        finally:
            client.delete(f"/session/{session_id}")
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
