"""A local emulator of the Vantax messaging API, for tests, the demo, benchmarks and users' DAG tests.

Start it with ``python -m vantax_provider.emulator`` (or the ``vantax-emulator`` console script),
or from Python with :func:`vantax_provider.emulator.testing.running_emulator`.

The emulator checks requests by its own reading of the vendor reference (``rules.py``); it must
never import from the rest of ``vantax_provider``, so a mistake in the client is caught here
rather than shared.
"""

from __future__ import annotations

import secrets

#: Where the emulator reads its API key from when ``--api-key`` is not given (kept out of argv).
API_KEY_ENV = "VANTAX_EMULATOR_API_KEY"

__all__ = ["API_KEY_ENV", "new_api_key"]


def new_api_key() -> str:
    """A fresh random test key, so no fixed key ships in the package."""
    return "vx_test_" + secrets.token_hex(16)
