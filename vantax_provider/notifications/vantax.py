"""A notifier that sends a Vantax message from a DAG or task callback."""

from __future__ import annotations

import copy
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

from vantax_provider._compat import template_dag
from vantax_provider.contract import DEFAULT_CONN_ID, MESSAGE_FIELDS, omit_blank
from vantax_provider.idempotency import derive_idempotency_key
from vantax_provider.templating import TemplateFiles

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions.context import Context

    from vantax_provider.hooks.vantax import VantaxHook
    from vantax_provider.models import Channel, SendMessageRequest


class VantaxNotifier(TemplateFiles, BaseNotifier):
    """
    Send a Vantax message as ``on_failure_callback``, ``on_success_callback`` or a DAG-level callback.

    Templated like :class:`~vantax_provider.operators.vantax.VantaxSendMessageOperator`, with the
    callback's context, e.g. ``content="{{ dag.dag_id }} failed, run {{ run_id }}"`` (not ``{{ ds }}``: a run
    triggered by hand may have no logical date).  As a deadline alert's callback
    (``AsyncCallback(VantaxNotifier, kwargs={...})``) it runs in the triggerer, and its context
    is ``dag_run`` (the run as the REST API shows it) and ``deadline``.

    :param conversation_id: the conversation to post into. (templated)
    :param channel: sms, whatsapp, facebook, instagram or email. (templated)
    :param content: the text; required. (templated)
    :param subject: email only, required there. (templated)
    :param html: email only. (templated)
    :param from_phone_number_id: the sending number for sms and whatsapp; defaults to the
        connection's ``default_from_phone_number_id``. (templated)
    :param media_url: URLs to attach. (templated)
    :param vantax_conn_id: the Airflow connection. (templated)
    :param idempotency_key: None (default) derives one from the run, the task try and the message, so
        a repeated callback for the same try is not sent twice while a new try alerts again; ``""``
        sends no key; a string is sent as given. (templated)
    """

    template_fields: Sequence[str] = (*MESSAGE_FIELDS, "idempotency_key", "vantax_conn_id")

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

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        if jinja_env is None:  # the DAG's environment (search path, macros, StrictUndefined)
            dag = template_dag(context.get("dag"))
            jinja_env = None if dag is None else dag.get_template_env()
        super().render_template_fields(context, jinja_env)

    def __call__(self, *args: Any) -> None:
        # Render into a copy: a notifier shared through default_args, or called twice, renders each
        # call from its templates, not from the text of the first call.
        super(VantaxNotifier, copy.copy(self)).__call__(*args)

    def __await__(self) -> Generator[Any, None, None]:
        return super(VantaxNotifier, copy.copy(self)).__await__()

    def _hook(self) -> VantaxHook:
        from vantax_provider.hooks.vantax import VantaxHook

        return VantaxHook(self.vantax_conn_id)

    def _fields(self) -> dict[str, Any]:
        return omit_blank({name: getattr(self, name) for name in MESSAGE_FIELDS})

    def notify(self, context: Context) -> None:
        """Send the message (sync: callbacks run in the task runner or the DAG processor)."""
        hook = self._hook()
        try:
            request = hook.build_request(**self._fields())
            hook.send_request(request, idempotency_key=self._key(context, request))
        finally:
            hook.close()

    async def async_notify(self, context: Context) -> None:
        """Send the message (async: e.g. deadline alerts in the triggerer)."""
        hook = self._hook()
        try:
            await hook.aget_settings()  # cached, so build_request below does no sync connection lookup
            request = hook.build_request(**self._fields())
            await hook.asend_request(request, idempotency_key=self._key(context, request))
        finally:
            await hook.aclose()

    def _key(self, context: Context | Mapping[str, Any], request: SendMessageRequest) -> str | None:
        if self.idempotency_key is not None:
            return self.idempotency_key or None
        ctx: Mapping[str, Any] = context
        deadline, dag_run = ctx.get("deadline"), ctx.get("dag_run")
        if isinstance(deadline, Mapping) and isinstance(dag_run, Mapping):
            return self._deadline_key(deadline, dag_run, request)
        ti = ctx.get("ti") or ctx.get("task_instance")
        dag = ctx.get("dag")
        dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None)
        run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None) or ctx.get("run_id")
        if not dag_id or not run_id:
            return None  # no run to derive an identity from
        if "reason" in ctx or ti is None:
            # A DAG-level callback (its context has "reason", and may carry the last task instance):
            # keyed by the DAG run, so it is never taken for a replay of that task's own alert. A
            # cleared and re-run DAG run starts anew and alerts again.
            who = f"#dag-notify-{ctx.get('reason', '')}-{getattr(dag_run, 'start_date', '')}"
            map_index = None
        else:
            who = f"{ti.task_id}#notify-try{getattr(ti, 'try_number', '')}"
            map_index = getattr(ti, "map_index", None)
        return derive_idempotency_key(
            dag_id=dag_id, task_id=who, run_id=run_id, map_index=map_index,
            conversation_id=request.conversation_id, body=request.to_body(),
        )  # fmt: skip

    @staticmethod
    def _deadline_key(
        deadline: Mapping[str, Any], dag_run: Mapping[str, Any], request: SendMessageRequest
    ) -> str | None:
        # A deadline alert's context holds the run as the REST API shows it (a dict) and the
        # deadline: keyed by the deadline, so a callback the triggerer runs again (it restarted
        # mid-send) is a replay, while each missed deadline alerts once.
        dag_id, run_id, deadline_id = dag_run.get("dag_id"), dag_run.get("dag_run_id"), deadline.get("id")
        if not dag_id or not run_id or not deadline_id:
            return None
        return derive_idempotency_key(
            dag_id=str(dag_id), task_id=f"#deadline-{deadline_id}", run_id=str(run_id), map_index=None,
            conversation_id=request.conversation_id, body=request.to_body(),
        )  # fmt: skip


send_vantax_notification = VantaxNotifier
