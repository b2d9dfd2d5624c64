"""The import contracts in pyproject.toml (``make imports``) catch what they claim to catch.

Each case copies the package and the real pyproject.toml into a temporary folder, adds one
import to one file of the copy, and runs ``lint-imports`` there.  The unchanged copy must pass,
so a failure below comes from the injected line and not from the harness.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vantax_provider"

# import-linter's contract types `private_modules` and `acyclic_siblings` exist only in the version
# pinned for the main environment, not in the one resolved for the Airflow 3.1 floor.
pytestmark = pytest.mark.single_env


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "vantax_provider", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        "--no-cache",
        "--no-logo",
    ]
    return subprocess.run(cmd, cwd=where, capture_output=True, text=True, timeout=120, check=False)


def _append(path: Path, line: str) -> None:
    text = path.read_text() if path.exists() else ""
    path.write_text(text + f"\n{line}\n")


def _verdicts(output: str) -> dict[str, str]:
    """Contract name -> KEPT/BROKEN, from lint-imports' summary (long names wrap onto two lines)."""
    text = " ".join(output.split())
    names = [
        "The emulator shares no code with the client",
        "The client does not depend on the emulator",
        "No module imports another package's private (underscore) module",
        "No import cycle between the modules of one package",
        "Layers: models/exceptions/status < hooks < bulk < triggers, notifications < operators, sensors",
    ]
    verdicts = {}
    for name in names:
        at = text.find(name + " ")
        assert at >= 0, f"{name!r} missing from lint-imports output:\n{output}"
        verdicts[name] = text[at + len(name) + 1 :].split()[0]
    return verdicts


def test_the_copy_of_today_s_package_passes(tmp_path: Path) -> None:
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(_verdicts(done.stdout).values()) == {"KEPT"}
    # The copy, not the installed package, was analysed: it is the only one under tmp_path.
    assert "Analyzed" in done.stdout


CASES = {
    "upward import: models imports the hook": (
        "models.py",
        "from vantax_provider.hooks.vantax import VantaxHook",
        "Layers",
        "vantax_provider.models -> vantax_provider.hooks.vantax",
    ),
    "upward import: the hook imports a trigger": (
        "hooks/_settings.py",
        "from vantax_provider.triggers import vantax",
        "Layers",
        "vantax_provider.hooks._settings -> vantax_provider.triggers.vantax",
    ),
    "upward import: the hook imports the bulk layer": (
        "hooks/vantax.py",
        "from vantax_provider.bulk.engine import send_many",
        "Layers",
        "vantax_provider.hooks.vantax -> vantax_provider.bulk.engine",
    ),
    "upward import: the bulk layer imports an operator": (
        "bulk/send.py",
        "from vantax_provider.operators import vantax_bulk",
        "Layers",
        "vantax_provider.bulk.send -> vantax_provider.operators.vantax_bulk",
    ),
    "the bulk layer's private module from another package": (
        "operators/vantax_bulk.py",
        "from vantax_provider.bulk._segments import HEAD_KEY",
        "No module imports another package's private",
        "vantax_provider.operators.vantax_bulk -> vantax_provider.bulk._segments",
    ),
    "sideways import: a trigger imports the notifier": (
        "triggers/vantax.py",
        "import vantax_provider.notifications.vantax",
        "Layers",
        "vantax_provider.triggers.vantax -> vantax_provider.notifications.vantax",
    ),
    "the emulator imports client validation": (
        "emulator/rules.py",
        "from vantax_provider.contract import CONTENT_MAX_CHARS",
        "The emulator shares no code",
        "vantax_provider.emulator.rules -> vantax_provider.contract",
    ),
    "the client imports the emulator": (
        "hooks/_wire.py",
        "from vantax_provider.emulator import testing",
        "The client does not depend",
        "vantax_provider.hooks._wire -> vantax_provider.emulator.testing",
    ),
    "another package's private module": (
        "notifications/vantax.py",
        "from vantax_provider.hooks._settings import VantaxSettings",
        "No module imports another package's private",
        "vantax_provider.notifications.vantax -> vantax_provider.hooks._settings",
    ),
    "a new module placed in no layer": (
        "helpers.py",
        "from vantax_provider import models",
        "Layers",
        "vantax_provider.helpers",
    ),
    "a cycle inside the lowest layer": (
        "contract.py",
        "from vantax_provider import models",
        "No import cycle",
        "No cycles are allowed in vantax_provider.",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_injected_import_breaks_its_contract(tmp_path: Path, case: str) -> None:
    file, line, contract, reported = CASES[case]
    copy = _copy(tmp_path)
    _append(copy / "vantax_provider" / file, line)

    done = _lint(copy)

    assert done.returncode == 1, done.stdout + done.stderr
    # An upward import usually closes a cycle too, so other contracts may break with it.
    broken = [name for name, verdict in _verdicts(done.stdout).items() if verdict == "BROKEN"]
    assert any(name.startswith(contract) for name in broken), done.stdout
    assert reported in done.stdout


def test_an_ignored_import_that_is_gone_fails_so_the_list_only_shrinks(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    project = copy / "pyproject.toml"
    text = project.read_text()
    stale = '"vantax_provider.sensors.vantax -> vantax_provider.hooks._wire",  # gone'
    assert (
        "from vantax_provider.hooks._wire import"
        not in (copy / "vantax_provider/sensors/vantax.py").read_text()
    )
    # An ignore line for an import that does not exist, as one left behind after a clean-up would be.
    marker = 'packages_with_private_modules = ["vantax_provider"]\n'
    assert marker in text
    with_ignores = (
        "ignore_imports = [" in text.split(marker, 1)[1].split("[[tool.importlinter.contracts]]", 1)[0]
    )
    if with_ignores:
        text = text.replace(
            marker + "ignore_imports = [\n", marker + "ignore_imports = [\n    " + stale + "\n", 1
        )
    else:
        text = text.replace(marker, marker + "ignore_imports = [\n    " + stale + "\n]\n", 1)
    project.write_text(text)

    done = _lint(copy)

    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "No matches for ignored import vantax_provider.sensors.vantax -> vantax_provider.hooks._wire"
        in " ".join(done.stdout.split())
    )
