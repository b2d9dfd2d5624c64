"""What a bulk try sends: each recipient checked, rendered, validated and keyed, lazily."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vantax_provider.bulk.journal import identity
from vantax_provider.bulk.render import Renderer, RenderError, recipient_problem
from vantax_provider.bulk.types import BulkItem
from vantax_provider.exceptions import VantaxValidationError
from vantax_provider.idempotency import derive_key, map_index_part

if TYPE_CHECKING:
    from vantax_provider.bulk.outcomes import Batch
    from vantax_provider.hooks.vantax import VantaxHook


def bulk_items(
    recipients: Sequence[Any],
    renderer: Renderer,
    hook: VantaxHook,
    task: dict[str, Any],
    batch: Batch,
    *,
    own_key_field: str | None,
    skip_uncertain: bool,
) -> Iterator[BulkItem]:
    """
    Check, render, validate and key each recipient lazily, as the senders ask for the next one.

    Invalid and duplicate rows, and rows an earlier try sent (or may have sent, with
    ``skip_uncertain``), go to ``batch`` and are not yielded.
    """
    journal = batch.journal
    seen: dict[int, int] = {}  # identity -> first row
    messages: dict[int, int] = {}  # own keys only: identity -> identity of the derived key
    for index, recipient in enumerate(recipients):
        problem = recipient_problem(recipient)
        if problem is not None:
            batch.invalid(index, None, problem)
            continue
        try:
            fields = renderer.render(recipient)
            request = hook.build_request(**fields)
        except RenderError as exc:
            batch.invalid(index, exc.conversation_id, str(exc))
            continue
        except VantaxValidationError as exc:
            batch.invalid(index, fields.get("conversation_id"), "; ".join(str(e) for e in exc.errors))
            continue
        cid = request.conversation_id
        derived = bulk_key(**task, conversation_id=cid, body=request.to_body())
        key = derived
        if own_key_field is not None:
            key, problem = own_key(recipient, own_key_field)
            if problem is not None:
                batch.invalid(index, cid, problem)
                continue
        ident = identity(key)
        message = ident if key is derived else identity(derived)
        if ident in seen:
            first = seen[ident]
            if messages.get(ident, ident) != message:
                batch.invalid(
                    index, cid, f"{own_key_field}: the same key as recipient #{first}, "
                    "for a different message",
                )  # fmt: skip
            else:
                batch.duplicate(index, cid, first)
            continue
        seen[ident] = index
        if message != ident:
            messages[ident] = message
        earlier = journal.prior(ident)
        if earlier == "done":
            batch.skipped(index, cid, journal.prior_message(ident))
            continue
        if earlier == "maybe" and skip_uncertain:
            batch.maybe_sent(index, cid, "an earlier try may have sent it (its outcome is unknown)")
            continue
        yield BulkItem(index, request, key, ident)


def bulk_key(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int | None,
    conversation_id: str,
    body: dict[str, Any],
) -> str:
    """
    The key of one message of a bulk send: the task instance and the message, not its position.

    Two rows of one list that render to the same conversation and body share a key (the bulk
    operator sends them once); a row that moves in a changed list keeps its key.
    """
    return derive_key(["bulk", dag_id, task_id, run_id, map_index_part(map_index), conversation_id, body])


def own_key(recipient: Mapping[str, Any], field: str) -> tuple[str, str | None]:
    """The recipient's own Idempotency-Key, or the reason it cannot be used."""
    value = recipient.get(field)
    if not isinstance(value, str) or not value:
        return "", f"{field}: the recipient's Idempotency-Key is missing (got {type(value).__name__})"
    if not (len(value) <= 255 and value.isascii() and value.isprintable()):
        return "", f"{field}: an Idempotency-Key must be 1 to 255 printable ASCII characters"
    return value, None
