"""pytest fixtures for the emulator. Not an entry point: import them in a conftest.py::

    from vantax_provider.emulator.pytest_plugin import vantax_emulator, vantax_emulator_server  # noqa: F401

One emulator process serves the whole session; ``vantax_emulator`` resets it before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vantax_provider.emulator.testing import Emulator, running_emulator


@pytest.fixture(scope="session")
def vantax_emulator_server() -> Iterator[Emulator]:
    """The session's emulator process (not reset between tests: use ``vantax_emulator``)."""
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def vantax_emulator(vantax_emulator_server: Emulator) -> Emulator:
    """The session's emulator, reset: no messages, no log, no faults, start-up config."""
    vantax_emulator_server.reset()
    return vantax_emulator_server
