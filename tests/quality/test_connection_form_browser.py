"""
The Add Connection form in a real browser: Airflow's api-server, headless Chromium (Debian's
chromium + chromium-driver, driven over the WebDriver protocol), the Vantax type chosen, and
the API key, base URL and timeout fields checked by their labels.  The screenshot is kept in
``docs/img/connection-form.png`` for the docs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

# tests/quality is on sys.path (pytest's rootdir-relative import of a folder without __init__)
from _webdriver import ELEMENT, Browser, WebDriverError, chromium_session, find_browser, free_port

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "connection-form.png"
SCREENSHOT_EXTRA = REPO / "docs" / "img" / "connection-form-extra.png"

# The form's sections open one at a time: the standard fields, then the extra fields.
STANDARD_LABELS = ("API key", "Base URL")
EXTRA_LABELS = ("Timeout", "Max retries", "Default sender number id", "Dashboard URL")

_FIELD_OF_LABEL = """
const [text] = arguments;
const dialog = document.querySelector('[role=dialog]');
const label = [...dialog.querySelectorAll('label')]
    .find(l => l.innerText.replace(/[*\\s]+$/, '').trim() === text);
if (!label) return null;
const input = (label.htmlFor && document.getElementById(label.htmlFor))
    || label.closest('[data-scope=field][data-part=root]')?.querySelector('input, textarea');
if (!input) return {label: true, input: null};
return {label: true, visible: input.offsetParent !== null && label.offsetParent !== null,
        name: input.name || '', type: input.type || '', placeholder: input.placeholder || ''};
"""


@pytest.fixture
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed in CI (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return found


@pytest.fixture
def api_server(airflow_db: Path, tmp_path: Path) -> Iterator[str]:
    """``airflow api-server`` on a free loopback port; every visitor is an admin (simple auth manager)."""
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
    }
    log = (tmp_path / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow",
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"api-server did not start:\n{(tmp_path / 'api-server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _click_button(browser: Browser, text: str) -> None:
    """A real (WebDriver) click on the button with this text, as a user's pointer would do it."""
    button = browser.execute(
        "return [...document.querySelectorAll('button')]"
        ".find(x => x.innerText.trim() === arguments[0]) || null;",
        text,
    )
    assert button, f"no button {text!r} on the page"
    browser.click(button[ELEMENT])


@contextmanager
def _evidence_on_failure(browser: Browser, tmp_path: Path) -> Iterator[None]:
    try:
        yield
    except WebDriverError as exc:
        browser.screenshot(tmp_path / "failure.png")
        raise WebDriverError(
            f"{exc}; screenshot {tmp_path / 'failure.png'}; page:\n{browser.page_text()}"
        ) from exc


def _settle(browser: Browser) -> None:
    """Wait for the form's open/close animations to end, so the screenshot is not caught mid-way."""
    browser.wait_for(
        lambda: browser.execute(
            "return document.getAnimations().every(a => a.playState !== 'running'"
            " || a.effect?.getComputedTiming().iterations === Infinity);"
        ),
        timeout=10,
        what="animations to end",
    )


def _visible_fields(browser: Browser, labels: tuple[str, ...]) -> dict[str, dict[str, str]] | None:
    found = {text: browser.execute(_FIELD_OF_LABEL, text) for text in labels}
    return found if all(f and f.get("visible") for f in found.values()) else None


@pytest.mark.slow  # an api-server and headless Chromium: over a minute on two cores
@pytest.mark.single_env
def test_the_add_connection_form_shows_the_vantax_fields_with_their_labels(
    browser_paths: tuple[str, str], api_server: str, tmp_path: Path
) -> None:
    with chromium_session(*browser_paths) as browser, _evidence_on_failure(browser, tmp_path):
        browser.get(f"{api_server}/connections")
        browser.wait_for(lambda: "Add Connection" in browser.page_text(), what="the connections page")
        _click_button(browser, "Add Connection")
        browser.wait_for(lambda: "Select Connection Type" in browser.page_text(), what="the form")

        (combo,) = browser.find_all("[role=dialog] input[role=combobox]")
        browser.click(combo)
        browser.type(combo, "Vantax")
        options = browser.wait_for(
            lambda: [o for o in browser.find_all("[role=option]") if browser.text(o).strip() == "Vantax"],
            what="the Vantax option",
        )
        browser.click(options[0])
        fields = browser.wait_for(
            lambda: _visible_fields(browser, STANDARD_LABELS), what="visible API key and Base URL fields"
        )
        hidden = [
            t for t in ("Login", "Port", "Password", "Host", "Schema") if browser.execute(_FIELD_OF_LABEL, t)
        ]
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        _settle(browser)
        browser.screenshot(SCREENSHOT)

        _click_button(browser, "Extra Fields")  # a collapsed section of the form
        fields |= browser.wait_for(
            lambda: _visible_fields(browser, EXTRA_LABELS), what="visible Timeout and other extra fields"
        )
        _settle(browser)
        browser.screenshot(SCREENSHOT_EXTRA)

    assert fields["API key"]["type"] == "password", fields["API key"]
    assert fields["API key"]["placeholder"] == "vx_live_..."
    assert fields["Base URL"]["placeholder"] == "https://api.vantaxai.com"
    assert fields["Timeout"]["name"].endswith("timeout"), fields["Timeout"]
    assert hidden == [], f"generic fields still shown: {hidden}"
