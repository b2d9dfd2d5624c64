"""What ``airflow providers list`` prints for the provider is what the docs show (two pages)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "docs" / "getting-started.md", REPO / "docs" / "installation.md"]


def _cells(line: str) -> list[str]:
    """A table line's cells; the padding depends on the other providers installed."""
    return [cell.strip() for cell in line.split("|")]


@pytest.mark.timeout(300)
def test_the_docs_show_what_airflow_providers_list_prints() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list"],
        capture_output=True, text=True, timeout=240, env=os.environ.copy(),
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-2000:]
    [printed] = [line for line in listing.stdout.splitlines() if line.startswith("airflow-provider-vantax ")]
    assert "http" not in printed, printed
    for page in PAGES:
        text = page.read_text()
        shown = [line for line in text.splitlines() if line.startswith("airflow-provider-vantax |")]
        assert len(shown) == 1, page.name
        assert _cells(shown[0]) == _cells(printed), page.name
