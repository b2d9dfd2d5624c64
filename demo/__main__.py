"""
``python -m demo``: start the emulator, run every example DAG with ``dag.test()`` in a throw-away
Airflow home (SQLite), print the messages the emulator received, and stop everything.

``python -m demo --run FILE [--conf JSON]`` is the child that runs one DAG file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from demo import REPO, airflow_env

EXAMPLES = REPO / "example_dags"
RESULT = "DEMO_RESULT "

#: (file, conf, expected final state of the run); any other example file found is run with no conf.
PLAN: list[tuple[str, dict[str, Any], str]] = [
    ("example_vantax_scheduled_notification.py", {}, "success"),
    ("example_vantax_pipeline_alert.py", {}, "success"),
    ("example_vantax_pipeline_alert.py", {"fail": True}, "failed"),  # shows the failure alert
    ("example_vantax_outreach.py", {}, "success"),
]
#: Examples dag.test() cannot run: Airflow's own dag.test() fails on a DAG that declares a deadline
#: (3.1 to 3.3), and nothing but a scheduler notices a missed deadline (docs/deadline-alerts.md).
NEEDS_A_SCHEDULER = {"example_vantax_deadline_alert.py"}


def run_plan(plan: list[tuple[str, dict[str, Any]]]) -> None:
    """Child: import each DAG file from the DAGs folder and run it once; one result line per run."""
    import importlib.util
    import traceback

    for index, (path, conf) in enumerate(plan):
        try:
            spec = importlib.util.spec_from_file_location(f"demo_dag_{index}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            state = str(module.dag.test(run_conf=conf or None).state)
        except Exception as exc:  # one broken example must not hide the others' results
            traceback.print_exc()
            state = f"crashed ({type(exc).__name__})"
        print(RESULT + json.dumps({"index": index, "state": state}), flush=True)


def _plan() -> list[tuple[str, dict[str, Any], str | None]]:
    planned = {name for name, _, _ in PLAN}
    others = sorted(
        p.name for p in EXAMPLES.glob("example_*.py") if p.name not in planned | NEEDS_A_SCHEDULER
    )
    return [*PLAN, *((name, {}, None) for name in others)]


def _wait_for_final_statuses(emu: Any, limit: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit
    while True:
        messages: list[dict[str, Any]] = emu.messages()
        if all(m["status"] not in ("queued", "sent") for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.2)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> int:
    from vantax_provider.emulator.testing import running_emulator

    started = time.monotonic()
    failures = 0
    runs: list[list[str]] = []
    with (
        tempfile.TemporaryDirectory(prefix="vantax-demo-") as tmp,
        running_emulator(queued_seconds=0.2, sent_seconds=0.3) as emu,
    ):
        home = Path(tmp)
        shutil.copytree(EXAMPLES, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
        env = airflow_env(home, emu.airflow_env())
        print(f"Vantax emulator at {emu.url}; Airflow home {home} (SQLite).", flush=True)
        print("Migrating the Airflow database ...", flush=True)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        plan = _plan()
        print(f"Running {len(plan)} example DAG runs with dag.test() ...", flush=True)
        for name in sorted(NEEDS_A_SCHEDULER):
            print(f"(Not run here: {name}, a deadline alert, needs a scheduler and a triggerer.)", flush=True)
        log = home / "dag-runs.log"
        with log.open("w") as out:
            child_plan = json.dumps([[str(home / "dags" / name), conf] for name, conf, _ in plan])
            command = [sys.executable, "-m", "demo", "--run-plan", child_plan]
            code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
        text = log.read_text(errors="replace")
        states = {}
        for line in text.splitlines():
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT) :])
                states[result["index"]] = result["state"]
        for index, (name, conf, expected) in enumerate(plan):
            label = name.removesuffix(".py") + (f" {json.dumps(conf)}" if conf else "")
            state = states.get(index, f"not run (child exit {code})")
            ok = state == (expected or "success")
            failures += not ok
            runs.append([label, state, "yes" if ok else "NO"])
        if failures:
            print(
                "Some runs did not end as expected; the end of their log:\n"
                + "\n".join(text.splitlines()[-40:])
            )
        messages = _wait_for_final_statuses(emu)
        print()
        print(_table(runs, ["DAG run", "state", "as expected"]))
        print()
        rows = [[m["id"], m["channel"], m["conversation_id"], m["status"]] for m in messages]
        print(_table(rows, ["message id", "channel", "conversation", "final status"]))
        print(f"\n{len(messages)} messages sent in {time.monotonic() - started:.0f}s; emulator stopped.")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--run-plan", help="internal: JSON list of [dag file, conf] to run in this process")
    args = parser.parse_args()
    if args.run_plan:
        run_plan(json.loads(args.run_plan))
        sys.exit(0)
    sys.exit(main())
