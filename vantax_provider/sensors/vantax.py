"""Sensors that wait for a Vantax message's delivery status."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from vantax_provider._arguments import finite_number
from vantax_provider._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    default_deferrable,
)
from vantax_provider.contract import DEFAULT_CONN_ID
from vantax_provider.status import (
    TRANSIENT_ERRORS,
    Outcome,
    check_status_sets,
    event_outcome,
    outcome_error,
    settle_until,
    status_set,
)

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

    from vantax_provider.hooks.vantax import VantaxHook


class VantaxMessageStatusSensor(BaseSensorOperator):
    """
    Wait until a Vantax message is delivered; fail when it failed or reached an unknown status.

    Works in poke, reschedule and deferrable modes.  Transient API errors (5xx, 429, transport)
    while polling are logged and the next poke tries again; a refused key or an unknown message
    fails.  The XCom ``return_value`` is ``{"id", "conversation_id", "status"}`` (never the content).

    :param conversation_id: the message's conversation. (templated)
    :param message_id: the message to watch, usually pulled from the send task's XCom. (templated)
    :param vantax_conn_id: the Airflow connection. (templated)
    :param success_statuses: statuses that count as delivered, besides ``delivered``.
    :param failure_statuses: statuses that count as failed, besides ``failed``; any other status that
        is not ``queued`` or ``sent`` fails closed unless it is listed in one of the two.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
        ``poke_interval`` is the trigger's poll interval and ``timeout`` its deadline.
    """

    template_fields: Sequence[str] = ("conversation_id", "message_id", "vantax_conn_id")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        conversation_id: str,
        message_id: str,
        vantax_conn_id: str = DEFAULT_CONN_ID,
        success_statuses: Iterable[str] | str | None = None,
        failure_statuses: Iterable[str] | str | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        for name in ("poke_interval", "timeout"):  # Airflow's own check lets NaN through, inf overflows
            if name in kwargs and not isinstance(kwargs[name], timedelta):
                finite_number(kwargs[name], name, minimum=0)
        super().__init__(**kwargs)
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.vantax_conn_id = vantax_conn_id
        self.success_statuses = sorted(status_set(success_statuses))
        self.failure_statuses = sorted(status_set(failure_statuses))
        check_status_sets(frozenset(self.success_statuses), frozenset(self.failure_statuses))
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        if self.deferrable and float(self.poke_interval) <= 0:
            raise ValueError(
                f"poke_interval must be positive with deferrable=True (it is the trigger's poll "
                f"interval), got {self.poke_interval!r}."
            )

    @cached_property
    def hook(self) -> VantaxHook:
        from vantax_provider.hooks.vantax import VantaxHook

        return VantaxHook(self.vantax_conn_id)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from vantax_provider.exceptions import VantaxNotFoundError, VantaxValidationError

        try:
            check = self.hook.check_message_status(
                *self._ids(), success_statuses=self.success_statuses, failure_statuses=self.failure_statuses
            )
        except (VantaxValidationError, VantaxNotFoundError) as exc:
            raise AirflowFailException(str(exc)) from exc  # the same ids fail the same way on retry
        except TRANSIENT_ERRORS as exc:
            self.log.warning("Reading Vantax message %s failed; poking again later: %s", self.message_id, exc)
            return False
        self.log.info("Vantax message %s: status %s.", self.message_id, check.status)
        if check.outcome is Outcome.PENDING:
            return False
        error = outcome_error(check.outcome, check.text)
        if error is not None:
            raise error
        message = check.message
        assert message is not None  # a reading always carries the message it read
        summary = {"id": message.id, "conversation_id": message.conversation_id, "status": message.status}
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def _ids(self) -> tuple[str, str]:
        """The rendered ids, refused with a VantaxValidationError unless both are strings."""
        from vantax_provider.exceptions import FieldError, VantaxValidationError

        errors = [
            FieldError(name, f"must be a string, got {type(value).__name__}")  # never the value
            for name, value in (("conversation_id", self.conversation_id), ("message_id", self.message_id))
            if not isinstance(value, str)
        ]
        if errors:
            raise VantaxValidationError(errors)
        return self.conversation_id, self.message_id

    def _first_poke(self, context: Context) -> bool | PokeReturnValue:
        """The deferrable mode's check in the worker, with the base sensor's soft_fail/never_fail rules."""
        try:
            return self.poke(context)
        except AirflowSkipException:
            raise
        except (AirflowFailException, AirflowSensorTimeout) as exc:
            raise self._give_up(exc) from exc
        except Exception as exc:
            if getattr(self, "silent_fail", False):
                self.log.error("Sensor poke failed: %s", exc)
                return False
            if self.never_fail:
                raise AirflowSkipException(f"Skipping due to never_fail is set to True: {exc}") from exc
            raise

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self._first_poke(context)
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        from vantax_provider.triggers.vantax import VantaxMessageStatusTrigger

        self.defer(
            trigger=VantaxMessageStatusTrigger(
                self.conversation_id, self.message_id, vantax_conn_id=self.vantax_conn_id,
                end_time=time.time() + float(self.timeout), poll_interval=float(self.poke_interval),
                success_statuses=self.success_statuses or None,
                failure_statuses=self.failure_statuses or None,
                not_before=settle_until(),  # Airflow's defer race: see docs/reliability.md
            ),
            method_name="execute_complete",
        )  # fmt: skip

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: the message's summary on delivery, a failure otherwise."""
        event, error = event_outcome(event, timeout_error=AirflowSensorTimeout)
        if error is not None:
            raise self._give_up(error)
        self.log.info("%s", event.get("message", ""))
        return {
            "id": event["message_id"],
            "conversation_id": event.get("conversation_id"),
            "status": event.get("delivery_status"),
        }

    def _give_up(self, exc: Exception) -> Exception:
        """A skip instead of ``exc`` under soft_fail or never_fail (Airflow 3.1 skips only on soft_fail)."""
        if self.soft_fail or self.never_fail:
            flag = "soft_fail" if self.soft_fail else "never_fail"
            skip = AirflowSkipException(f"Skipping due to {flag} is set to True: {exc}")
            skip.__cause__ = exc
            return skip
        return exc
