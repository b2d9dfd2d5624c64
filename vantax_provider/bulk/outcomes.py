"""
The outcomes of one bulk try: the counters behind the progress log and the result, and every
recipient's row, passed on in list order to the report and to what the result keeps.

Rows finish out of order (sends run concurrently); a row waits only until the rows before it are
done, then goes to the report and is dropped, so memory does not grow with the batch.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from vantax_provider.bulk.report import OUTCOMES, Listing, ReportWriter

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from vantax_provider.bulk.journal import Journal
    from vantax_provider.bulk.types import BulkItem, BulkProgress, SendOutcome

#: Errors quoted in full in the exception of a task failed by its failure policy.
EXAMPLE_ERRORS = 5


class Batch:
    """
    Outcomes of one run, by position: counts, the rows in list order, the progress log.

    :param total: the number of recipients.
    :param journal: the try's write-ahead journal (what was sent, what may have been).
    :param log: the operator's logger.
    :param progress_interval: seconds between two progress lines.
    :param skip_uncertain: ``on_uncertain="skip"``: a send that may have created its message is
        ``maybe_sent``.
    :param report: the report to stream the rows to, or None.
    :param listed_limit: most rows that need attention kept for the result.
    :param keep_pairs: keep the ``[conversation_id, message_id]`` of each sent message (for the wait).
    """

    def __init__(
        self,
        total: int,
        journal: Journal,
        log: Any,  # the operator's logger (Airflow's own type differs between versions)
        *,
        progress_interval: float,
        skip_uncertain: bool,
        report: ReportWriter | None,
        listed_limit: int,
        keep_pairs: bool,
    ) -> None:
        self.total, self.journal, self.log = total, journal, log
        self.progress_interval = progress_interval
        self.skip_uncertain = skip_uncertain
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.listing = Listing(listed_limit)
        self.examples: list[str] = []
        self.pairs: list[list[str]] | None = [] if keep_pairs else None
        self.unknown_messages = 0  # recipients skipped as sent whose message id is not on record
        self.report = report
        self.report_error: str | None = None
        self._waiting: dict[int, dict[str, Any]] = {}  # rows done ahead of an earlier one
        self._next = 0
        self._last_log = time.monotonic()

    def admit(self, item: BulkItem) -> Awaitable[None] | None:
        """Write-ahead: the journal lists the item before its request starts."""
        return self.journal.admit(item.identity)

    def unsent(self, item: BulkItem) -> None:
        """An admitted message whose request never started (the batch stopped): known not sent."""
        self.journal.finished(item.identity, sent=False)

    def record(self, outcome: SendOutcome) -> None:
        entry: dict[str, Any] = {"index": outcome.index, "conversation_id": outcome.conversation_id}
        if outcome.ok:
            entry.update(outcome="sent", message_id=outcome.message_id, status=outcome.status)
            self.counts["sent"] += 1
        elif outcome.maybe_sent and self.skip_uncertain:
            entry.update(outcome="maybe_sent", error=outcome.error)
            self.counts["maybe_sent"] += 1
        else:
            entry.update(outcome="failed", error=outcome.error)
            if outcome.maybe_sent:
                entry["maybe_sent"] = True
            self.counts["failed"] += 1
        message = [outcome.conversation_id, outcome.message_id] if outcome.ok and outcome.message_id else None
        self.journal.finished(outcome.identity, sent=outcome.ok, maybe=outcome.maybe_sent, message=message)
        self._add(entry)

    def _set(self, index: int, conversation_id: Any, outcome: str, **extra: Any) -> None:
        cid = conversation_id if isinstance(conversation_id, str) else None
        self.counts[outcome] += 1
        self._add({"index": index, "conversation_id": cid, "outcome": outcome, **extra})

    def invalid(self, index: int, conversation_id: Any, reason: str) -> None:
        self._set(index, conversation_id, "invalid", error=reason)

    def skipped(self, index: int, conversation_id: str | None, message: list[str] | None = None) -> None:
        """Sent by an earlier try; ``message`` is its ``[conversation_id, message_id]`` when on record."""
        if message is None:
            self.unknown_messages += 1
            self._set(index, conversation_id, "skipped_already_sent")
        else:  # waited for like this try's messages
            self._set(index, message[0], "skipped_already_sent", message_id=message[1])

    def duplicate(self, index: int, conversation_id: str, first: int) -> None:
        self._set(index, conversation_id, "duplicate", duplicate_of=first)

    def maybe_sent(self, index: int, conversation_id: str, reason: str) -> None:
        self._set(index, conversation_id, "maybe_sent", error=reason)

    async def tick(self, progress: BulkProgress) -> None:
        now = time.monotonic()
        if progress.finished or now - self._last_log >= self.progress_interval:
            self._last_log = now
            c = self.counts
            self.log.info(
                "Vantax bulk send: %d sent, %d failed, %d invalid, %d skipped, %d remaining of %d (%.1f/s).",
                c["sent"], c["failed"], c["invalid"],
                c["skipped_already_sent"] + c["duplicate"] + c["maybe_sent"],
                self.total - sum(c.values()), self.total, progress.rate,
            )  # fmt: skip

    def log_summary(self) -> None:
        c = self.counts
        self.log.info(
            "Vantax bulk send finished: %d sent, %d failed, %d invalid, %d skipped (already sent), "
            "%d duplicate rows, %d maybe sent of %d.",
            c["sent"], c["failed"], c["invalid"], c["skipped_already_sent"], c["duplicate"],
            c["maybe_sent"], self.total,
        )  # fmt: skip
        if c["maybe_sent"]:
            self.log.warning(
                "%d messages may or may not have been sent (on_uncertain='skip'): they are listed as "
                "'maybe_sent' in the result; check them in Vantax.", c["maybe_sent"],
            )  # fmt: skip

    # -- rows, in list order -----------------------------------------------------------------------

    def _add(self, row: dict[str, Any]) -> None:
        index = row["index"]
        if index != self._next:
            self._waiting[index] = row
            return
        self._emit(row)
        self._next += 1
        while self._next in self._waiting:
            self._emit(self._waiting.pop(self._next))
            self._next += 1

    def _emit(self, row: dict[str, Any]) -> None:
        self.listing.add(row)
        error = row.get("error")
        if error and len(self.examples) < EXAMPLE_ERRORS:
            self.examples.append(f"#{row['index']}: {error}")
        if self.pairs is not None and row.get("message_id"):
            self.pairs.append([row["conversation_id"], row["message_id"]])
        if self.report is not None:
            try:
                self.report.write(row)
            except Exception as exc:  # the sends go on: a report is never worth a lost send
                self._report_failed(exc)

    def finish(self) -> None:
        """Pass on the rows still waiting (a batch cut short leaves gaps) and close the report."""
        for index in sorted(self._waiting):
            self._emit(self._waiting.pop(index))
        if self.report is not None:
            try:
                self.report.close()
            except Exception as exc:
                self._report_failed(exc)

    def _report_failed(self, exc: Exception) -> None:
        self.report_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        report, self.report = self.report, None
        if report is not None:
            with contextlib.suppress(Exception):  # already failed: the first error is the one reported
                report.close()
