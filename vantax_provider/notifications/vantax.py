"""A notifier that sends a Vantax message from a DAG or task callback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

from vantax_provider.contract import DEFAULT_CONN_ID, MESSAGE_FIELDS, omit_blank
from vantax_provider.idempotency import derive_idempotency_key

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions.context import Context

    from vantax_provider.hooks.vantax import VantaxHook
    from vantax_provider.models import Channel, SendMessageRequest


class VantaxNotifier(BaseNotifier):
    """
    Send a Vantax message as ``on_failure_callback``, ``on_success_callback`` or a DAG-level callback.

    Templated like :class:`~vantax_provider.operators.vantax.VantaxSendMessageOperator`, with the
    callback's context, e.g. ``content="{{ dag.dag_id }} failed on {{ ds }}"``.

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
    template_ext: Sequence[str] = (".txt", ".html", ".j2")

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
        dag = context.get("dag")
        if jinja_env is None and dag is not None and not hasattr(dag, "get_template_env"):
            # dag.test() hands DAG-level callbacks a serialized DAG, which cannot make a Jinja environment.
            jinja_env = self.get_template_env()
        super().render_template_fields(context, jinja_env)

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
        ti = ctx.get("ti") or ctx.get("task_instance")
        dag_run = ctx.get("dag_run")
        dag = ctx.get("dag")
        dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None)
        run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None) or ctx.get("run_id")
        if not dag_id or not run_id:
            return None  # e.g. a deadline alert without a run: no identity to derive from
        if ti is not None:
            who = f"{ti.task_id}#notify-try{getattr(ti, 'try_number', '')}"
            map_index = getattr(ti, "map_index", None)
        else:
            # A DAG-level callback: a cleared and re-run DAG run starts anew and alerts again.
            who = f"#dag-notify-{getattr(dag_run, 'start_date', '')}"
            map_index = None
        return derive_idempotency_key(
            dag_id=dag_id, task_id=who, run_id=run_id, map_index=map_index,
            conversation_id=request.conversation_id, body=request.to_body(),
        )  # fmt: skip


send_vantax_notification = VantaxNotifier
