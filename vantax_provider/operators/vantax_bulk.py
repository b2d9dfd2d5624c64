"""The bulk send operator: thousands of personalised messages from one task, concurrently, never twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from vantax_provider._compat import AirflowException, AirflowFailException, default_deferrable
from vantax_provider.bulk import report as reports
from vantax_provider.bulk.arguments import check_arguments
from vantax_provider.bulk.outcomes import EXAMPLE_ERRORS
from vantax_provider.bulk.render import Renderer, recipient_list, renders_as_itself
from vantax_provider.bulk.report import read_report as read_report  # re-exported
from vantax_provider.bulk.send import Options, key_refused, send_try
from vantax_provider.contract import DEFAULT_CONN_ID
from vantax_provider.defaults import (
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SEND_CONCURRENCY,
)
from vantax_provider.status import check_status_sets, settle_until, status_set, to_seconds
from vantax_provider.templating import XComValuesAsData, check_render_step, values_from_xcom

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

    from vantax_provider.hooks.vantax import VantaxHook
    from vantax_provider.models import Channel

#: XCom key of the result when the task fails by the failure policy (``return_value`` is not pushed then).
FAILED_RESULT_XCOM_KEY = "vantax_bulk_result"
WAIT_MESSAGES_XCOM_KEY = "vantax_bulk_wait_messages"  # deferred wait: the [conversation, message] pairs
WAIT_RESULT_XCOM_KEY = "vantax_bulk_wait_result"  # deferred wait: the result, read back on resume
check_render_step(BaseOperator)  # the operator overrides Airflow's rendering step: fail here if it changed


class VantaxBulkSendMessageOperator(XComValuesAsData, BaseOperator):
    """
    Send one personalised Vantax message to each of many recipients, concurrently, from one task.

    The message fields are literals or Jinja templates rendered once per recipient (with
    ``recipient`` and the task context) and validated before any request; a retry sends nobody
    twice.  Values that arrive from an XCom (recipients, or a message field), in any mapping form,
    are data: sent as they are, never rendered as templates.  Returns the counts, the failed,
    invalid and maybe_sent recipients (up to ``max_listed_outcomes``) and the URI of a JSON Lines
    report with every recipient's outcome (never a body); see docs/operators/bulk-send.md for the
    templates, the result, the report, the failure policy and how retries and crashes are handled.

    :param recipients: list of dicts, one per message. (templated)
    :param conversation_id: conversation to post into; literal or per-recipient template.
    :param channel: sms, whatsapp, facebook, instagram or email; literal or per-recipient template.
    :param content: the text; literal or per-recipient template.
    :param subject: email subject; literal or per-recipient template.
    :param html: email rich body; literal or per-recipient template.
    :param from_phone_number_id: sending number for sms/whatsapp (defaults to the connection's).
    :param media_url: URLs to attach; a list whose items may be per-recipient templates.
    :param vantax_conn_id: the Airflow connection. (templated)
    :param max_concurrency: most requests in flight at once.
    :param max_uncertain: most messages whose outcome may be unknown after a crash of the task
        (Airflow >= 3.3): those in flight and those already listed in the journal to go next.
        None (default) is ``max_concurrency``, the fewest possible; a larger value, up to 4096,
        lists the next messages while earlier ones are in flight, so that requests do not wait
        for the state store's writes (faster where a write takes about as long as an answer).
    :param rate_limit: most messages started per second; None for no limit.
    :param max_failure_ratio: None (default) fails the task when any recipient failed or was
        invalid; a ratio in [0, 1] fails it only when (failed + invalid) / total exceeds it.
    :param checkpoint_interval: seconds between two journal writes when no request waits for
        one (Airflow >= 3.3); a request never starts before the write that records it.
    :param on_uncertain: ``"resend"`` (default) re-sends, under the same keys, messages whose
        outcome an earlier try or a failure left unknown; ``"skip"`` never sends them again (nor
        repeats a request that may have created its message) and reports them as ``maybe_sent``.
    :param idempotency_key_field: the recipient dict key holding that recipient's own
        Idempotency-Key (1-255 printable ASCII characters); None derives the keys.
    :param progress_interval: seconds between two progress log lines.
    :param wait_for_delivery: after sending, wait until every message of the task instance is
        final (this try's and, on Airflow >= 3.3, those earlier tries created); messages not
        delivered then count as failures for ``max_failure_ratio``.
    :param deferrable: wait in the triggerer (``VantaxMessagesStatusTrigger``) instead of a worker
        slot; defaults to ``[operators] default_deferrable``.  Non-deferrable waits run the same
        trigger inside the worker.
    :param poll_interval: seconds between two polling rounds while waiting.
    :param delivery_timeout: how long to wait (seconds or timedelta); None waits without limit.
    :param success_statuses: statuses that count as delivered, besides ``delivered``.
    :param failure_statuses: statuses that count as failed, besides ``failed``.
    :param report_path: folder of the per-recipient JSON Lines report (templated): a URI
        (``s3://bucket/prefix``, ``file:///abs``) or a local path, relative paths under
        ``AIRFLOW_HOME``; ``vantax_reports`` by default; None or False writes no report.
    :param report_conn_id: the Airflow connection of the report's object store. (templated)
    :param max_listed_outcomes: most failed, invalid and maybe_sent recipients listed in the XCom
        result (and undelivered messages under ``delivery``); the report lists them all.
    """

    template_fields: Sequence[str] = ("recipients", "vantax_conn_id", "report_path", "report_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"recipients": "json"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        recipients: Sequence[Mapping[str, Any]] | Any,
        conversation_id: str,
        channel: Channel | str,
        content: str,
        subject: str | None = None,
        html: str | None = None,
        from_phone_number_id: str | None = None,
        media_url: list[str] | str | None = None,
        vantax_conn_id: str = DEFAULT_CONN_ID,
        max_concurrency: int = DEFAULT_SEND_CONCURRENCY,
        max_uncertain: int | None = None,
        rate_limit: float | None = None,
        max_failure_ratio: float | None = None,
        checkpoint_interval: float = 1.0,
        on_uncertain: str = "resend",
        idempotency_key_field: str | None = None,
        progress_interval: float = 10.0,
        wait_for_delivery: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        delivery_timeout: float | timedelta | None = DEFAULT_DELIVERY_TIMEOUT,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        report_path: str | bool | None = reports.DEFAULT_REPORT_PATH,
        report_conn_id: str | None = None,
        max_listed_outcomes: int = reports.DEFAULT_MAX_LISTED,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recipients = recipients
        self.message_fields: dict[str, Any] = {
            "conversation_id": conversation_id, "channel": channel, "content": content, "subject": subject,
            "html": html, "from_phone_number_id": from_phone_number_id, "media_url": media_url,
        }  # fmt: skip
        self.xcom_message_fields: frozenset[str] = frozenset()  # set when rendering: sent as they are
        self.vantax_conn_id = vantax_conn_id
        check_arguments(
            max_concurrency=max_concurrency, max_uncertain=max_uncertain, rate_limit=rate_limit,
            max_failure_ratio=max_failure_ratio, on_uncertain=on_uncertain,
            idempotency_key_field=idempotency_key_field, max_listed_outcomes=max_listed_outcomes,
            intervals={"checkpoint_interval": checkpoint_interval, "progress_interval": progress_interval,
                       "poll_interval": poll_interval},
        )  # fmt: skip
        self.on_uncertain = on_uncertain
        self.idempotency_key_field = idempotency_key_field
        self.max_concurrency = int(max_concurrency)
        self.max_uncertain = self.max_concurrency if max_uncertain is None else max_uncertain
        self.rate_limit = rate_limit
        self.max_failure_ratio = max_failure_ratio
        self.checkpoint_interval = float(checkpoint_interval)
        self.progress_interval = float(progress_interval)
        self.wait_for_delivery = wait_for_delivery
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.delivery_timeout = to_seconds(delivery_timeout, "delivery_timeout")
        self.success_statuses = sorted(status_set(success_statuses))
        self.failure_statuses = sorted(status_set(failure_statuses))
        check_status_sets(frozenset(self.success_statuses), frozenset(self.failure_statuses))
        self.report_path = report_path
        self.report_conn_id = report_conn_id
        self.max_listed_outcomes = max_listed_outcomes

    def found_xcom_values(self, context: Context) -> None:
        # A message field that came from an XCom is data too: sent as it is, not rendered per recipient.
        self.xcom_message_fields = frozenset(values_from_xcom(self, context, self.message_fields))

    def render_template(
        self, content: Any, context: Context, jinja_env: Any = None, seen_oids: set[int] | None = None
    ) -> Any:
        # A literal recipient list holds thousands of plain strings, and Airflow compiles each one
        # as a template (about 0.26 ms a string); one that would render as itself is kept as it is.
        if (
            isinstance(content, str)
            and jinja_env is not None
            and not getattr(self, "render_template_as_native_obj", None)  # (3.3) "12" would become 12
            and not content.endswith(tuple(self.template_ext))
            and renders_as_itself(content, jinja_env)
        ):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)

    def _make_hook(self) -> VantaxHook:
        from vantax_provider.hooks.vantax import VantaxHook

        return VantaxHook(
            self.vantax_conn_id, rate_limit=self.rate_limit, max_connections=max(100, self.max_concurrency)
        )

    # -- execution ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        recipients = recipient_list(self.recipients)
        # Template syntax errors fail here, before sending; fields from an XCom are not templates.
        renderer = Renderer(self.message_fields, context, literal=self.xcom_message_fields)
        hook = self._make_hook()
        _ = hook.settings  # read the connection now, outside the event loop, and fail early if unusable
        options = Options(
            max_concurrency=self.max_concurrency, max_uncertain=self.max_uncertain,
            checkpoint_interval=self.checkpoint_interval, progress_interval=self.progress_interval,
            skip_uncertain=self.on_uncertain == "skip", idempotency_key_field=self.idempotency_key_field,
            keep_messages=self.wait_for_delivery, report_path=self.report_path,
            report_conn_id=self.report_conn_id, max_listed_outcomes=self.max_listed_outcomes,
        )  # fmt: skip
        done = send_try(recipients, renderer, hook, context, options, self.log)
        result = done.result
        if done.refused is not None:  # every other recipient would be refused too, now and on a retry
            context["ti"].xcom_push(key=FAILED_RESULT_XCOM_KEY, value=result)
            raise key_refused(result, done.refused, FAILED_RESULT_XCOM_KEY)
        self._apply_policy(context, result, result["failed"] + result["invalid"], done.examples)
        if self.wait_for_delivery:
            return self._wait(context, result, done.pairs(self.log))
        return result

    def _apply_policy(
        self,
        context: Context,
        result: dict[str, Any],
        failures: int,
        examples: list[str] | None = None,
    ) -> None:
        total = result["total"]
        if failures == 0 or total == 0:
            return
        ratio = failures / total
        limit = self.max_failure_ratio
        if limit is not None and ratio <= limit:
            self.log.warning(
                "%d of %d recipients failed (%.1f%%), within max_failure_ratio.", failures, total, 100 * ratio
            )
            return
        context["ti"].xcom_push(key=FAILED_RESULT_XCOM_KEY, value=result)
        # The first errors in full (the XCom lists them cut to a few hundred characters).
        if examples is None:
            examples = [f"#{o['index']}: {o['error']}" for o in result["outcomes"] if o.get("error")]
        examples = examples[:EXAMPLE_ERRORS]
        allowed = "none allowed" if limit is None else f"max_failure_ratio={limit:g}"
        # Only invalid recipients (bad input): a retry would render and refuse them the same way.
        kind = AirflowFailException if failures == result["invalid"] else AirflowException
        raise kind(
            f"{failures} of {total} Vantax recipients failed ({100 * ratio:.1f}%, {allowed}); the "
            f"result is in XCom {FAILED_RESULT_XCOM_KEY!r}. First errors: "
            + " | ".join(examples)
            + f" (every recipient: {result.get('report')})"
        )

    # -- delivery -------------------------------------------------------------------------------

    def _trigger(self, pairs: list[list[str]], messages_xcom: dict[str, Any] | None = None) -> Any:
        from vantax_provider.triggers.vantax import VantaxMessagesStatusTrigger

        end_time = None if self.delivery_timeout is None else time.time() + self.delivery_timeout
        given: dict[str, Any] = (
            {"messages": pairs} if messages_xcom is None else {"messages_xcom": messages_xcom}
        )
        return VantaxMessagesStatusTrigger(
            **given, vantax_conn_id=self.vantax_conn_id, end_time=end_time, poll_interval=self.poll_interval,
            success_statuses=self.success_statuses or None, failure_statuses=self.failure_statuses or None,
            max_concurrency=self.max_concurrency,
        )  # fmt: skip

    def _wait(self, context: Context, result: dict[str, Any], pairs: list[list[str]]) -> dict[str, Any]:
        if not pairs:
            return result
        if self.deferrable:
            # The ids and the result wait in XCom, so the trigger's kwargs and the next kwargs stay small
            # whatever the batch size (docs/operators/bulk-send.md).  XComs survive the deferral.
            ti = context["ti"]
            ti.xcom_push(key=WAIT_MESSAGES_XCOM_KEY, value=pairs)
            ti.xcom_push(key=WAIT_RESULT_XCOM_KEY, value=result)
            reference = {
                "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index,
                "key": WAIT_MESSAGES_XCOM_KEY,
            }  # fmt: skip
            trigger = self._trigger(pairs, reference)
            trigger.not_before = settle_until()  # Airflow's defer race: see docs/reliability.md
            self.defer(trigger=trigger, method_name="execute_complete")
        trigger = self._trigger(pairs)

        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AirflowException("The Vantax delivery trigger ended without an event.")

        return self.execute_complete(context, asyncio.run(first_event()), result=result, pairs=pairs)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        pairs: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        """Add the delivery counts (and the undelivered messages, capped) to the result; apply the policy."""
        ti = context["ti"]
        if result is None:  # resumed from a deferral: the result waited in XCom
            result = ti.xcom_pull(task_ids=ti.task_id, key=WAIT_RESULT_XCOM_KEY, map_indexes=ti.map_index)
        if isinstance(event, dict) and event.get("status") == "error" and "statuses" not in event:
            raise AirflowException(str(event.get("message"))[:500])  # the ids could not be read
        if not isinstance(event, dict) or not isinstance(event.get("statuses"), dict) or not result:
            raise AirflowException(f"Unexpected event from the Vantax trigger: {str(event)[:500]}")
        if pairs is None:  # the ids waited in XCom too
            pairs = ti.xcom_pull(task_ids=ti.task_id, key=WAIT_MESSAGES_XCOM_KEY, map_indexes=ti.map_index)
        pairs = [list(p) for p in pairs or ()]
        counts = dict(event.get("counts") or {})
        listed, listed_total = reports.undelivered(
            pairs, event, self.max_listed_outcomes,
            frozenset(self.success_statuses), frozenset(self.failure_statuses),
        )  # fmt: skip
        result["delivery"] = {
            "status": event.get("status"), "counts": counts, "success_status": event.get("success_status"),
            "undelivered": listed,
            "truncated": listed_total > len(listed) or bool(event.get("statuses_omitted")),
            "report": reports.write_delivery_report(
                result.get("report"), self.report_conn_id, pairs, event, self.log
            ),
        }  # fmt: skip
        self.log.info("Vantax delivery: %s", event.get("message"))
        undelivered = sum(int(counts.get(k, 0)) for k in ("failure", "unknown", "error", "pending"))
        self._apply_policy(context, result, result["failed"] + result["invalid"] + undelivered)
        return result
