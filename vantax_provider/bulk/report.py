"""
The bulk send's per-recipient report and the bounded result that points to it.

Every recipient's outcome goes to a JSON Lines file written through Airflow's
``ObjectStoragePath`` (local by default, any fsspec store with a connection); the XCom result
keeps exact counts, the recipients that need attention up to a cap, and the report's URI, so it
stays the same size whatever the batch.  Design notes are in docs/operators/bulk-send.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from vantax_provider._compat import AirflowException, airflow_home, object_storage_path
from vantax_provider.status import Outcome, classify

#: The default ``report_path``: a relative path is a folder under ``AIRFLOW_HOME``.
DEFAULT_REPORT_PATH = "vantax_reports"
#: Most recipients listed one by one in the XCom result (``outcomes``) and under ``delivery``.
DEFAULT_MAX_LISTED = 1000
#: Outcomes listed in the XCom result: the ones that need attention.
LISTED_OUTCOMES = ("failed", "invalid", "maybe_sent")
#: Longest error text kept per listed recipient in the XCom (the report keeps it whole).
LISTED_ERROR_CHARS = 300
OUTCOMES = ("sent", "failed", "invalid", "skipped_already_sent", "duplicate", "maybe_sent")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _segment(value: Any) -> str:
    """A file-name-safe form of an id; ids that needed changing get a hash of the original."""
    text = str(value)
    safe = _UNSAFE.sub("_", text)
    if safe != text or safe in ("", ".", ".."):
        safe = f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return safe


def base_uri(report_path: Any) -> str | None:
    """
    The report folder as a URI, or None when reports are off (``None``, ``False`` or ``""``).

    A URI (``s3://bucket/prefix``, ``file:///abs``) is used as given; a local absolute path
    becomes ``file://``; a relative path is a folder under ``AIRFLOW_HOME``.
    """
    if report_path is None or report_path is False or report_path == "":
        return None
    if not isinstance(report_path, (str, os.PathLike)):
        raise AirflowException(
            f"report_path must be a folder (a path or a URI such as s3://bucket/prefix), None or False; "
            f"got {type(report_path).__name__}."
        )
    text = os.fspath(report_path).strip()
    if _SCHEME.match(text):
        return text.rstrip("/")
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        path = os.path.join(airflow_home(), path)
    return "file://" + os.path.normpath(path)


def report_uri(base: str, ti: Any) -> str:
    """
    ``<base>/<dag_id>/<run_id>/<task_id>[.map-<n>].try-<t>.jsonl``: one file per try of a task instance.

    A retry (a new try number) writes a new file and never overwrites an earlier try's report.
    """
    map_index = getattr(ti, "map_index", -1)
    mapped = "" if map_index is None or map_index < 0 else f".map-{int(map_index)}"
    try_number = getattr(ti, "try_number", None)
    name = f"{_segment(ti.task_id)}{mapped}.try-{_segment(try_number or 0)}.jsonl"
    return f"{base}/{_segment(ti.dag_id)}/{_segment(ti.run_id)}/{name}"


def delivery_uri(uri: str) -> str:
    """Where the delivery statuses of the messages in report ``uri`` go."""
    return uri.removesuffix(".jsonl") + ".delivery.jsonl"


def _path(uri: str, conn_id: str | None) -> Any:
    return object_storage_path(uri, conn_id=conn_id)


def _local(path: Any) -> bool:
    return str(getattr(path, "protocol", "") or "file") in ("file", "local")


def _create_private(target: str) -> None:
    """
    Create the local file ``target`` empty and owner-only (0600), and the folders it needs 0700:
    a report names conversations.  Folders that exist already are left as they are.
    """
    missing: list[str] = []
    folder = os.path.dirname(target)
    while folder and not os.path.isdir(folder) and folder != os.path.dirname(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # made meanwhile, e.g. by another mapped task: not ours to change
            continue
        os.chmod(folder, 0o700)  # exactly, whatever the umask
    handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(handle, 0o600)  # a file that was there keeps its mode through O_CREAT
    finally:
        os.close(handle)


#: Report lines gathered before each write: the rows do not pile up in memory, and a remote store
#: gets a few large writes instead of one per recipient.
FLUSH_LINES = 4096


class ReportWriter:
    """
    The report, written as the rows come: opened (created empty) before anything is sent, so an
    unwritable folder fails early; lines are written FLUSH_LINES at a time, and by :meth:`close`.

    :param uri: the report's URI.
    :param conn_id: the object store's Airflow connection (None for local files).
    """

    def __init__(self, uri: str, conn_id: str | None) -> None:
        self.uri = uri
        path = _path(uri, conn_id)
        if _local(path):
            _create_private(os.fspath(path.path))
        self._handle = path.open("w")
        self._buffer: list[str] = []
        self.lines = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._buffer.append(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
        self.lines += 1
        if len(self._buffer) >= FLUSH_LINES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            block = "\n".join(self._buffer) + "\n"
            self._buffer.clear()
            self._handle.write(block)
            self._handle.flush()  # a local report can be followed while the batch runs

    def close(self) -> None:
        """Write what is left and close the file (an object store uploads it now)."""
        try:
            self._flush()
        finally:
            self._buffer.clear()
            self._handle.close()


def write_lines(uri: str, conn_id: str | None, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write ``rows`` as JSON Lines to ``uri`` (replacing it); returns the number of lines."""
    writer = ReportWriter(uri, conn_id)
    try:
        for row in rows:
            writer.write(row)
    finally:
        writer.close()
    return writer.lines


def read_report(uri: str, conn_id: str | None = None) -> Iterator[dict[str, Any]]:
    """
    The rows of a bulk send's report (the ``report`` of its result), one dict per recipient.

    :param uri: the report's URI, e.g. ``result["report"]``.
    :param conn_id: the object store's Airflow connection, as given to the operator's ``report_conn_id``.
    """
    with _path(uri, conn_id).open("r") as handle:
        # readline, not iteration: Airflow 3.1 wraps the file in an object that cannot be iterated.
        for line in iter(handle.readline, ""):
            if line.strip():
                yield json.loads(line)


class Listing:
    """
    The first ``limit`` rows that need attention (XCom-sized, errors cut), fed in list order, and
    how many there are in all.

    :param limit: most rows kept.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: list[dict[str, Any]] = []
        self.total = 0

    def add(self, row: Mapping[str, Any]) -> None:
        if row.get("outcome") not in LISTED_OUTCOMES:
            return
        self.total += 1
        if len(self.rows) < self.limit:
            entry = dict(row)
            if isinstance(entry.get("error"), str):
                entry["error"] = entry["error"][:LISTED_ERROR_CHARS]
            self.rows.append(entry)


def summary(
    total: int,
    counts: Mapping[str, int],
    listing: Listing,
    *,
    report: str | None,
    report_error: str | None = None,
) -> dict[str, Any]:
    """The XCom result: exact counts, the listed recipients (capped), the report's URI."""
    result: dict[str, Any] = {"total": total, **{k: int(counts.get(k, 0)) for k in OUTCOMES}}
    result.update(
        outcomes=listing.rows,
        listed_total=listing.total,
        truncated=listing.total > len(listing.rows),
        report=report,
    )
    if report_error is not None:
        result["report_error"] = report_error
    return result


def write_delivery_report(
    report: Any, conn_id: str | None, pairs: Sequence[Sequence[str]], event: Mapping[str, Any], log: Any
) -> str | None:
    """Each waited message's last status, next to the send report ``report``; its URI, or None."""
    if not isinstance(report, str):
        return None
    uri = delivery_uri(report)
    try:
        lines = write_lines(uri, conn_id, delivery_rows(pairs, event))
    except Exception as exc:  # the delivery counts stay in the result
        log.error("Could not write the Vantax delivery report %s (%s: %s).", uri, type(exc).__name__,
                  str(exc)[:300])  # fmt: skip
        return None
    log.info("Vantax delivery report (%d messages): %s", lines, uri)
    return uri


def delivery_rows(pairs: Sequence[Sequence[str]], event: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per waited message: conversation, message and its last status (None when unknown)."""
    statuses: Mapping[str, Any] = event.get("statuses") or {}
    errors: Mapping[str, Any] = event.get("errors") or {}
    rest = event.get("success_status") if not event.get("statuses_omitted") else None
    for conversation_id, message_id in pairs:
        row: dict[str, Any] = {
            "conversation_id": conversation_id,
            "message_id": message_id,
            "delivery_status": statuses.get(message_id, rest),
        }
        if message_id in errors:
            row["error"] = str(errors[message_id])[:LISTED_ERROR_CHARS]
        yield row


def undelivered(
    pairs: Sequence[Sequence[str]],
    event: Mapping[str, Any],
    limit: int,
    success: frozenset[str] = frozenset(),
    failure: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], int]:
    """
    The messages the event lists whose last status is not a success, at most ``limit``, and how many
    it lists in all (the event itself lists at most 1,000; its ``counts`` stay exact).
    """
    statuses: Mapping[str, Any] = event.get("statuses") or {}
    bad = [
        (m, s) for m, s in statuses.items() if s is None or classify(s, success, failure) != Outcome.SUCCESS
    ]
    if not bad:
        return [], 0
    wanted = {m for m, _ in bad[:limit]}
    conversations = {m: c for c, m in pairs if m in wanted}
    rows = [
        {"conversation_id": conversations.get(m), "message_id": m, "delivery_status": s}
        for m, s in bad[:limit]
    ]
    return rows, len(bad)
