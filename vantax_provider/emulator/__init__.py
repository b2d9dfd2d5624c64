"""A local emulator of the Vantax messaging API, for tests, the demo, benchmarks and users' DAG tests.

Start it with ``python -m vantax_provider.emulator`` (or the ``vantax-emulator`` console script),
or from Python with :func:`vantax_provider.emulator.testing.running_emulator`.

The emulator checks requests by its own reading of the vendor reference (``rules.py``); it must
never import from the rest of ``vantax_provider``, so a mistake in the client is caught here
rather than shared.
"""

from __future__ import annotations

__all__: list[str] = []
