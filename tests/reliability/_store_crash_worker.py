"""
One try of a bulk send whose process the test SIGKILLs: the operator runs against the emulator
named in AIRFLOW_CONN_VANTAX_DEFAULT with a state store kept in a folder (so the next try, in the
test's own process, reads what this one wrote), optionally with every ``set`` from a given call
on raising, as a state store that went down does.

Run as ``python -m tests.reliability._store_crash_worker FOLDER N ON_UNCERTAIN FAIL_SETS_FROM``
(``FAIL_SETS_FROM`` 0: the store never fails).
"""

from __future__ import annotations

import sys
from typing import Any


def operator(total: int, on_uncertain: str) -> Any:
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    return VantaxBulkSendMessageOperator(
        task_id="store_crash", recipients=[{"cid": f"conv_sc_{i:04d}", "n": i} for i in range(total)],
        conversation_id="{{ recipient.cid }}", channel="email", subject="s", content="Hi {{ recipient.n }}",
        max_concurrency=8, checkpoint_interval=0.05, on_uncertain=on_uncertain, max_failure_ratio=1.0,
    )  # fmt: skip


def main(folder: str, total: int, on_uncertain: str, fail_sets_from: int) -> None:
    from tests.reliability._support import FileStateStore, make_context

    class Store(FileStateStore):
        calls = 0

        def set(self, key: str, value: Any, *, retention: Any = None) -> None:
            Store.calls += 1
            if fail_sets_from and Store.calls >= fail_sets_from:
                raise ConnectionError("state store unavailable")
            super().set(key, value, retention=retention)

    operator(total, on_uncertain).execute(make_context("store_crash", store=Store(folder)))
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
