"""
One try of a bulk send, from the journal of earlier tries to the bounded result.

The operator turns its arguments into :class:`Options` and calls :func:`send_try`; what is left to
it is Airflow's part: rendering, the failure policy and the wait for delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vantax_provider import task_state
from vantax_provider._compat import AirflowException, AirflowFailException
from vantax_provider.bulk import report as reports
from vantax_provider.bulk.engine import send_many
from vantax_provider.bulk.items import bulk_items
from vantax_provider.bulk.journal import Journal
from vantax_provider.bulk.outcomes import Batch
from vantax_provider.exceptions import VantaxAuthenticationError

if TYPE_CHECKING:
    from vantax_provider.bulk.render import Renderer
    from vantax_provider.hooks.vantax import VantaxHook


@dataclass(frozen=True)
class Options:
    """
    How a try sends, checked by :func:`vantax_provider.bulk.arguments.check_arguments`.

    :param max_concurrency: most requests in flight at once.
    :param max_uncertain: most messages listed in the journal and not finished (>= max_concurrency).
    :param checkpoint_interval: seconds between two journal writes when no request waits for one.
    :param progress_interval: seconds between two progress log lines.
    :param skip_uncertain: ``on_uncertain="skip"``: never send again (nor repeat) what may have been sent.
    :param idempotency_key_field: the recipient dict key holding its own Idempotency-Key, or None.
    :param keep_messages: keep the ids of the sent messages, to wait for their delivery.
    :param report_path: the report folder (see ``report.base_uri``); None or False for no report.
    :param report_conn_id: the connection of the report's object store.
    :param max_listed_outcomes: most recipients that need attention listed in the result.
    """

    max_concurrency: int
    max_uncertain: int
    checkpoint_interval: float
    progress_interval: float
    skip_uncertain: bool
    idempotency_key_field: str | None
    keep_messages: bool
    report_path: str | bool | None
    report_conn_id: str | None
    max_listed_outcomes: int


@dataclass(frozen=True)
class TryResult:
    """
    What one try did.

    :param result: the bounded XCom result (counts, listed outcomes, the report's URI).
    :param batch: the try's outcomes.
    :param journal: the try's journal (what earlier tries sent).
    :param refused: Vantax refused the API key (401/403): the batch stopped at the first refusal.
    """

    result: dict[str, Any]
    batch: Batch
    journal: Journal
    refused: VantaxAuthenticationError | None = None

    @property
    def examples(self) -> list[str]:
        """The first errors in full, for the failure policy's exception."""
        return self.batch.examples

    def pairs(self, log: Any) -> list[list[str]]:
        """
        The ``[conversation_id, message_id]`` to wait for (with ``keep_messages``): this try's
        messages and every message an earlier try created.
        """
        return _pairs(self.batch, self.journal, log)


def send_try(
    recipients: Sequence[Any],
    renderer: Renderer,
    hook: VantaxHook,
    context: Mapping[str, Any],
    options: Options,
    log: Any,  # the operator's logger (Airflow's own type differs between versions)
) -> TryResult:
    """Send to every recipient an earlier try did not send to, journalled, and report each outcome."""
    journal = Journal(
        task_state.state_store(context), window=options.max_uncertain, interval=options.checkpoint_interval,
        keep_messages=options.keep_messages,
    )  # fmt: skip
    journal.load()  # a store that cannot be read fails the try here, before any request
    if journal.prior_done or journal.prior_maybe or journal.prior_uncertain:
        log.info(
            "An earlier try sent %d messages of this task; %d more may have been sent (on_uncertain=%r).",
            len(journal.prior_done), len(journal.prior_maybe | journal.prior_uncertain),
            "skip" if options.skip_uncertain else "resend",
        )  # fmt: skip
    writer = open_report(options, context)  # an unwritable folder fails here, before sending
    batch = Batch(
        len(recipients), journal, log, progress_interval=options.progress_interval,
        skip_uncertain=options.skip_uncertain, report=writer,
        listed_limit=options.max_listed_outcomes, keep_pairs=options.keep_messages,
    )  # fmt: skip
    items = bulk_items(
        recipients, renderer, hook, task_state.task_identity(context), batch,
        own_key_field=options.idempotency_key_field, skip_uncertain=options.skip_uncertain,
    )  # fmt: skip

    async def run() -> None:
        journal.start()
        try:
            await send_many(
                hook, items, batch, max_concurrency=options.max_concurrency,
                ahead=options.max_uncertain - options.max_concurrency,
                tick_interval=options.progress_interval, repeat_uncertain=not options.skip_uncertain,
            )  # fmt: skip
        finally:
            try:
                await journal.close()
            finally:
                await hook.aclose()

    refused: VantaxAuthenticationError | None = None
    try:
        asyncio.run(run())
    except VantaxAuthenticationError as exc:  # the batch stopped at the first refusal of the key
        refused = exc
    finally:
        batch.finish()  # the rows so far reach the report, also when sending stopped on an error
    result = _result(batch, writer, options.max_listed_outcomes, log)
    batch.log_summary()
    return TryResult(result, batch, journal, refused)


def key_refused(result: Mapping[str, Any], exc: Exception, xcom_key: str) -> AirflowFailException:
    """The task's failure when Vantax refused the API key (401/403) and the batch stopped there."""
    total = result["total"]
    not_sent = total - sum(int(result.get(k, 0)) for k in reports.OUTCOMES)
    return AirflowFailException(
        f"Vantax refused the API key: the bulk send stopped at the first refusal; {not_sent} of {total} "
        f"recipients were not sent ({result['sent']} sent, {result['failed']} failed), and a retry would "
        f"be refused the same way. The result is in XCom {xcom_key!r}. {exc}"
    )


def open_report(options: Options, context: Mapping[str, Any]) -> reports.ReportWriter | None:
    """This try's report, created empty now; None when reports are off."""
    base = reports.base_uri(options.report_path)
    if base is None:
        return None
    uri = reports.report_uri(base, context["ti"])
    try:
        return reports.ReportWriter(uri, options.report_conn_id)
    except Exception as exc:  # nothing was sent: fail now, naming the setting
        raise AirflowException(
            f"report_path: cannot write the bulk report {uri} ({type(exc).__name__}: {str(exc)[:300]}); "
            "nothing was sent. Fix the folder or its report_conn_id, or set report_path=None."
        ) from None


def _result(batch: Batch, writer: reports.ReportWriter | None, listed: int, log: Any) -> dict[str, Any]:
    """The bounded XCom result, pointing to the report (None when it could not be written)."""
    error = batch.report_error
    if writer is not None and error is not None:
        # The sends happened: keep their result, do not invite a re-send.
        log.error(
            "Could not write the Vantax bulk report %s (%s). The messages were sent; the XCom "
            "result keeps the counts and the first %d recipients that need attention.",
            writer.uri, error, listed,
        )  # fmt: skip
    elif writer is not None:
        log.info("Vantax bulk report (%d recipients): %s", writer.lines, writer.uri)
    report = None if writer is None or error is not None else writer.uri
    return reports.summary(batch.total, batch.counts, batch.listing, report=report, report_error=error)


def _pairs(batch: Batch, journal: Journal, log: Any) -> list[list[str]]:
    """What to wait for: this try's messages and every message an earlier try created."""
    if batch.unknown_messages:  # recorded by a provider version that kept no message ids
        log.warning("%d recipients an earlier try sent have no message id on record: their "
                    "delivery is not checked.", batch.unknown_messages)  # fmt: skip
    unlisted = list(journal.prior_messages.values())  # sent to recipients no longer in the list
    if unlisted:
        log.info("Also waiting for %d messages an earlier try sent.", len(unlisted))
    return (batch.pairs or []) + unlisted
