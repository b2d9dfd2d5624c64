"""``[core] hostname_callable`` for the Celery e2e deployment: each worker reports its own name."""

from __future__ import annotations

import os
import socket


def worker_name() -> str:
    """The worker's name from ``VANTAX_E2E_WORKER`` (set per Celery worker), else this host's FQDN."""
    return os.environ.get("VANTAX_E2E_WORKER") or socket.getfqdn()
