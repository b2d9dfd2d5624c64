"""Operators that send Vantax messages."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk import BaseOperator, BaseOperatorLink

from vantax_provider._arguments import finite_number
from vantax_provider._compat import AirflowFailException, default_deferrable
from vantax_provider.contract import DEFAULT_CONN_ID, MESSAGE_FIELDS, omit_blank
from vantax_provider.defaults import DEFAULT_DELIVERY_TIMEOUT, DEFAULT_POLL_INTERVAL, ON_UNCERTAIN
from vantax_provider.operators import _state
from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator
from vantax_provider.status import (
    Outcome,
    check_status_sets,
    event_outcome,
    outcome_error,
    settle_until,
    status_set,
    to_seconds,
)
from vantax_provider.templating import TemplateFiles, XComValuesAsData, check_render_step

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from airflow.sdk.types import TaskInstanceKey

    from vantax_provider.exceptions import VantaxValidationError
    from vantax_provider.hooks.vantax import VantaxHook
    from vantax_provider.models import Channel, Message, SendMessageRequest

__all__ = ["VantaxBulkSendMessageOperator", "VantaxConversationLink", "VantaxSendMessageOperator"]

#: A deferrable wait first looks this long in the worker: a message delivered at once never defers.
IN_WORKER_WAIT_SECONDS = 3.0
#: ... reading the status at most this often meanwhile.
IN_WORKER_POLL_SECONDS = 0.5


class VantaxConversationLink(BaseOperatorLink):
    """
    "Vantax conversation": the conversation in the Vantax dashboard.

    Set when the connection has a ``dashboard_url`` extra (``{conversation_id}`` is replaced);
    empty otherwise.  Read from the task's rendered ``conversation_id`` when the task finishes.
    """

    name = "Vantax conversation"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        conversation_id = getattr(operator, "conversation_id", None)
        if not isinstance(conversation_id, str) or not conversation_id or "{{" in conversation_id:
            return ""
        try:
            from vantax_provider.hooks.vantax import VantaxHook

            hook = VantaxHook(getattr(operator, "vantax_conn_id", VantaxHook.default_conn_name))
            return hook.conversation_url(conversation_id)
        except Exception:  # a link must never fail the task: no connection means no link
            return ""


check_render_step(BaseOperator)  # the send operator overrides it below: fail here if it changed


class VantaxSendMessageOperator(XComValuesAsData, TemplateFiles, BaseOperator):
    """
    Send one Vantax message, and optionally wait until it is delivered.

    Every message field is templated; ``content`` and ``html`` may name a template file
    (``.txt``, ``.html``, ``.j2``, no white space) in the DAG's template search path; any other
    value is text, e.g. a link ending in ``.html``.  Values that arrive from XCom or params are
    sent as they are: a name containing ``{{ ... }}`` is never rendered a second time.  The
    rendered message is validated before any request; bad input, and a closed messaging window
    (422), fail the task without Airflow retries.

    A retry of the task instance never sends a second message, also when a field renders
    differently on the retry: the default ``Idempotency-Key`` is derived from the task instance
    and the conversation (not the body), and on Airflow >= 3.3 the request is written to the
    task's ``task_state_store`` before it is sent and the message id after, so a retry re-sends
    the stored request or skips the send.  Clearing the task sends a new message.

    Returns the message as a JSON dict (XCom ``return_value``) and pushes ``message_id``.

    :param conversation_id: the conversation to post into. (templated)
    :param channel: sms, whatsapp, facebook, instagram or email. (templated)
    :param content: the text, 1 to 4000 characters; the plain-text fallback for email. (templated)
    :param subject: email only, required there. (templated)
    :param html: email only, an optional rich body. (templated)
    :param from_phone_number_id: the sending number for sms and whatsapp; defaults to the connection's
        ``default_from_phone_number_id``. (templated)  An optional field that renders to ``""`` counts as
        not given.
    :param media_url: URLs to attach (ignored by email). (templated)
    :param vantax_conn_id: the Airflow connection. (templated)
    :param idempotency_key: None (default) derives one from dag_id, task_id, run_id, map_index,
        the task's clear count and the conversation; a string is sent as given; ``""`` sends no key.
        (templated)
    :param on_uncertain: what a retry does when an earlier try stopped between sending and recording
        the answer (Airflow >= 3.3): ``"resend"`` (default) sends the stored request again under the
        stored key; ``"skip"`` does not send and fails the task, saying the message may have been sent.
    :param include_content_in_xcom: False keeps ``content``, ``subject`` and ``html`` out of the XCom
        ``return_value`` (ids, channel and status only) and out of the task state store, e.g. for
        one-time codes.
    :param wait_for_delivery: wait until the message is delivered or failed before succeeding.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between two status reads while waiting.
    :param delivery_timeout: how long to wait (seconds or timedelta); None waits without limit.
    :param success_statuses: statuses that count as delivered, besides ``delivered``.
    :param failure_statuses: statuses that count as failed, besides ``failed``.
    """

    template_fields: Sequence[str] = (*MESSAGE_FIELDS, "idempotency_key", "vantax_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"html": "html", "media_url": "json"}
    operator_extra_links = (VantaxConversationLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        conversation_id: str,
        channel: Channel | str,
        content: str,
        subject: str | None = None,
        html: str | None = None,
        from_phone_number_id: str | None = None,
        media_url: list[str] | str | None = None,
        vantax_conn_id: str = DEFAULT_CONN_ID,
        idempotency_key: str | None = None,
        on_uncertain: str = "resend",
        include_content_in_xcom: bool = True,
        wait_for_delivery: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        delivery_timeout: float | timedelta | None = DEFAULT_DELIVERY_TIMEOUT,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conversation_id = conversation_id
        self.channel = channel
        self.content = content
        self.subject = subject
        self.html = html
        self.from_phone_number_id = from_phone_number_id
        self.media_url = media_url
        self.vantax_conn_id = vantax_conn_id
        self.idempotency_key = idempotency_key
        if on_uncertain not in ON_UNCERTAIN:
            raise ValueError(f"on_uncertain must be 'resend' or 'skip', got {on_uncertain!r}.")
        self.on_uncertain = on_uncertain
        self.include_content_in_xcom = bool(include_content_in_xcom)
        self.wait_for_delivery = wait_for_delivery
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = finite_number(poll_interval, "poll_interval", positive=True)
        self.delivery_timeout = to_seconds(delivery_timeout, "delivery_timeout")
        self.success_statuses = sorted(status_set(success_statuses))
        self.failure_statuses = sorted(status_set(failure_statuses))
        check_status_sets(frozenset(self.success_statuses), frozenset(self.failure_statuses))

    def template_file_error(self, error: VantaxValidationError) -> Exception:
        return AirflowFailException(str(error))  # the same DAG files fail the same way on retry

    @cached_property
    def hook(self) -> VantaxHook:
        from vantax_provider.hooks.vantax import VantaxHook

        return VantaxHook(self.vantax_conn_id)

    # -- execution ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        conversation_id, message_id, message = self._send_once(context)
        context["ti"].xcom_push(key="message_id", value=message_id)

        if self.wait_for_delivery:
            started = time.time()
            timeout, interval = self.delivery_timeout, self.poll_interval
            if self.deferrable:
                # Deferring a message that is delivered at once races Airflow's scheduler (see
                # docs/reliability.md, "Deferred waits"): look in the worker first, briefly.
                timeout = IN_WORKER_WAIT_SECONDS if timeout is None else min(IN_WORKER_WAIT_SECONDS, timeout)
                interval = min(interval, IN_WORKER_POLL_SECONDS)
            check = self.hook.wait_for_message_status(
                conversation_id, message_id, success_statuses=self.success_statuses,
                failure_statuses=self.failure_statuses, timeout=timeout, poll_interval=interval,
            )  # fmt: skip
            if self.deferrable and check.outcome is Outcome.TIMEOUT:
                self._defer(conversation_id, message_id, started)
            error = outcome_error(check.outcome, check.text)
            if error is not None:
                raise error
            message = check.message
        elif message is None:
            message = self.hook.get_message(conversation_id, message_id)
        assert message is not None
        return self._output(message)

    def _output(self, message: Message) -> dict[str, Any]:
        """The XCom value: the whole message, or its ids and status when the content stays out."""
        return message.model_dump(mode="json") if self.include_content_in_xcom else message.summary()

    def _send_once(self, context: Context) -> tuple[str, str, Message | None]:
        """
        Send the message unless an earlier try of this run of the task instance did.

        The intent (key, conversation, body) is written to the task state store before the POST,
        and the message id after it; a retry that finds an intent without an id re-sends the
        stored request under the stored key (``on_uncertain="resend"``) or stops (``"skip"``).
        """
        record = _state.load_single(context, self.idempotency_key)
        if record is not None and record["state"] == _state.SENT:
            self.log.info(
                "Vantax message %s was sent by an earlier try of this task instance: not sending it again.",
                record["message_id"],
            )
            return str(record["conversation_id"]), str(record["message_id"]), None
        if record is not None:
            request, key = self._uncertain(record)
        else:
            request = self._build_request()
            key = _state.single_send_key(self.idempotency_key, context, request.conversation_id)
        base: dict[str, Any] = {
            "generation": _state.generation(context),
            "idempotency_key": key,
            "conversation_id": request.conversation_id,
        }
        body = request.to_body()
        if self.include_content_in_xcom:
            base["body"] = body
        else:
            base["fingerprint"] = _state.body_fingerprint(request.conversation_id, body)
        if record is None:
            _state.save_single(context, {**base, "state": _state.INTENT})
        message = self._send(context, request, key, derived=self.idempotency_key is None)
        _state.save_single(context, {**base, "state": _state.SENT, "message_id": message.id})
        return request.conversation_id, message.id, message

    def _uncertain(self, record: dict[str, Any]) -> tuple[SendMessageRequest, str | None]:
        """An earlier try wrote its intent but not the answer: it may have created the message."""
        key = record.get("idempotency_key")
        where = f"conversation {record.get('conversation_id')!r}"
        if self.on_uncertain == "skip":
            raise AirflowFailException(
                f"An earlier try of this task instance may have sent its Vantax message to {where}: it "
                "stopped between the request and recording the answer. on_uncertain='skip': not sending it "
                "again. Check the conversation; clear the task to send a new message."
            )
        body = record.get("body")
        if isinstance(body, dict):
            request = self._build_request({**body, "conversation_id": record.get("conversation_id")})
        else:  # the body was kept out of the store: only the same rendering may be sent again
            request = self._build_request()
            fingerprint = _state.body_fingerprint(request.conversation_id, request.to_body())
            if fingerprint != record.get("fingerprint"):
                raise AirflowFailException(
                    f"An earlier try of this task instance may have sent its Vantax message to {where}, "
                    "and the message rendered differently on this try; with include_content_in_xcom=False "
                    "the earlier one was not kept, so it cannot be re-sent unchanged: not sending a second "
                    "message. Check the conversation; clear the task to send a new message."
                )
        self.log.warning(
            "An earlier try of this task instance may have sent its Vantax message to %s; sending the same "
            "request again under the same Idempotency-Key (on_uncertain='resend').",
            where,
        )
        return request, key if isinstance(key, str) else None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: succeed on delivery, fail with the trigger's reason otherwise."""
        event, error = event_outcome(event)
        if error is not None:
            raise error
        conversation_id = str(event.get("conversation_id") or self.conversation_id)
        message = self.hook.get_message(conversation_id, str(event["message_id"]))
        context["ti"].xcom_push(key="message_id", value=message.id)
        return self._output(message)

    def _build_request(self, fields: dict[str, Any] | None = None) -> SendMessageRequest:
        from vantax_provider.exceptions import VantaxValidationError

        try:
            if fields is None:
                fields = omit_blank({name: getattr(self, name) for name in MESSAGE_FIELDS})
            return self.hook.build_request(**fields)
        except VantaxValidationError as exc:
            raise AirflowFailException(str(exc)) from exc

    def _send(
        self, context: Context, request: SendMessageRequest, idempotency_key: str | None, *, derived: bool
    ) -> Message:
        from vantax_provider.exceptions import (
            VantaxAuthenticationError,
            VantaxConflictError,
            VantaxInvalidRequestError,
            VantaxMessagingWindowError,
            VantaxRateLimitError,
            VantaxValidationError,
        )

        try:
            return self.hook.send_request(request, idempotency_key=idempotency_key)
        except (VantaxMessagingWindowError, VantaxValidationError, VantaxInvalidRequestError) as exc:
            _state.forget_single(context)  # refused: nothing was created
            raise AirflowFailException(str(exc)) from exc  # the same input fails the same way on retry
        except (VantaxAuthenticationError, VantaxRateLimitError):
            _state.forget_single(context)
            raise
        except VantaxConflictError as exc:
            if derived:
                raise AirflowFailException(
                    f"{exc} An earlier try of this task instance already sent a message to conversation "
                    f"{request.conversation_id!r} under this task's Idempotency-Key, with fields that "
                    "rendered differently then: not sending a second message. Clear the task to send a "
                    "new one."
                ) from exc
            raise AirflowFailException(
                f"{exc} The idempotency key was used before with another message: give each message its own."
            ) from exc

    def _defer(self, conversation_id: str, message_id: str, started: float) -> NoReturn:
        from vantax_provider.triggers.vantax import VantaxMessageStatusTrigger

        end_time = None if self.delivery_timeout is None else started + self.delivery_timeout
        self.defer(
            trigger=VantaxMessageStatusTrigger(
                conversation_id, message_id, vantax_conn_id=self.vantax_conn_id, end_time=end_time,
                poll_interval=self.poll_interval, success_statuses=self.success_statuses or None,
                failure_statuses=self.failure_statuses or None, not_before=settle_until(),
            ),
            method_name="execute_complete",
        )  # fmt: skip
