"""
The distribution as a user gets it: a wheel and an sdist whose metadata passes ``twine check``,
and the wheel, installed into a clean virtualenv with the pinned Airflow, registers the provider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "requirements" / "constraints.txt"


def _run(*cmd: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "uv", "build", "-q", "--out-dir", out)
    return out


@pytest.mark.single_env
def test_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    output = _run(sys.executable, "-m", "twine", "check", "--strict", wheels[0], sdists[0])
    assert output.count("PASSED") == 2, output
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "vantax_provider/py.typed" in names
    assert "vantax_provider/get_provider_info.py" in names
    assert not [n for n in names if n.startswith("tests/")], "tests must not ship in the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheels[0]).read(entry_points).decode()
    assert "[apache_airflow_provider]" in text
    assert "provider_info = vantax_provider.get_provider_info:get_provider_info" in text


@pytest.mark.single_env
def test_what_the_wheel_and_the_sdist_contain(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    info_dir = "airflow_provider_vantax-0.1.0.dist-info"
    assert top == {"vantax_provider", "airflow_provider_vantax", info_dir}, top
    # Only the docstring: Airflow 3.3 imports it to look for example DAGs (there are none).
    alias = [n for n in names if n.startswith("airflow_provider_vantax/")]
    assert alias == ["airflow_provider_vantax/__init__.py"]
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    dist_info = "airflow_provider_vantax-0.1.0.dist-info/"
    assert zipfile.ZipFile(wheel).read(dist_info + "licenses/LICENSE").decode() == license_text
    metadata = zipfile.ZipFile(wheel).read(dist_info + "METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    # What the wheel declares is what the test suite runs on: Python 3.11, Airflow 3.1.1 and up.
    pythons = {
        line.rsplit(" ", 1)[1]
        for line in metadata.splitlines()
        if line.startswith("Classifier: Programming Language :: Python :: 3.")
    }
    assert pythons == {"3.11"}
    assert not [n for n in names if n.endswith((".pyc", ".orig", ".rej"))]
    # Every module of the package ships, the emulator included.
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "vantax_provider").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))

    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "vantax_provider/__init__.py",
                   "example_dags/example_vantax_outreach.py", "example_dags/data/contacts.csv",
                   "docs/installation.md", "requirements/constraints.txt", "mkdocs.yml"):  # fmt: skip
        assert needed in members, needed
    assert modules <= members
    assert not [m for m in members if m.startswith((".venv", "site/", "dist/")) or "__pycache__" in m]


@pytest.mark.slow  # builds a virtualenv with Airflow in it: about a minute or more
@pytest.mark.single_env
def test_the_installed_wheel_registers_the_provider_with_airflow(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "uv", "venv", "-q", "-p", sys.executable, venv)
    python = venv / "bin" / "python"
    # The pinned versions come from uv's cache; the project itself only from the wheel.
    _run(sys.executable, "-m", "uv", "pip", "install", "-q", "-p", python, "-c", CONSTRAINTS, wheel)
    home = tmp_path / "airflow-home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    probe = (
        "import json, vantax_provider;"
        "from airflow.providers_manager import ProvidersManager;"
        "pm = ProvidersManager();"
        "info = pm.providers['airflow-provider-vantax'];"
        "hook = pm.hooks['vantax'];"
        "print(json.dumps({'version': info.version, 'file': vantax_provider.__file__,"
        " 'hook': hook.hook_class_name if hook else None}))"
    )
    found = json.loads(_run(python, "-c", probe, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert found["hook"] == "vantax_provider.hooks.vantax.VantaxHook"
    assert found["file"].startswith(str(venv)), "the provider must come from the installed wheel"
    listing = _run(venv / "bin" / "airflow", "providers", "list", "-o", "json", cwd=tmp_path, env=env)
    providers = {p["package_name"]: p for p in json.loads(listing[listing.index("[") :])}
    assert providers["airflow-provider-vantax"]["version"] == found["version"]
