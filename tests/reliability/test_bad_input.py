"""
Bad input, property-based: whatever is wrong with a message, the client refuses it before any
request (the emulator's request counter stays at 0) with one error that names every wrong field.
And the awkward-but-valid input — huge, unicode and emoji content, line breaks, ids with slashes,
dots, percent signs and spaces — reaches the server exactly as given and reads back unchanged.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability._support import figures
from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import VantaxValidationError
from vantax_provider.hooks.vantax import VantaxHook

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FIELDS = {"conversation_id", "channel", "content", "subject", "html", "from_phone_number_id", "media_url"}

BASE: dict[str, dict[str, Any]] = {
    "sms": {"channel": "sms", "content": "hi", "from_phone_number_id": "pn_1"},
    "whatsapp": {"channel": "whatsapp", "content": "hi", "from_phone_number_id": "pn_1"},
    "facebook": {"channel": "facebook", "content": "hi"},
    "instagram": {"channel": "instagram", "content": "hi"},
    "email": {"channel": "email", "content": "hi", "subject": "Hello"},
}

# Control characters other than the line breaks and tab that content may hold.
CONTROL = st.sampled_from([chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127, *range(0x80, 0xA0)]])


def _with(text: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A string with at least one ``bad`` character somewhere in ``text``."""
    return st.tuples(text, bad, text).map(lambda t: t[0] + t[1] + t[2])


SHORT = st.text(max_size=20)
BAD_ID = st.one_of(
    st.sampled_from(["", " ", "\t \u3000"]),
    st.text(min_size=257, max_size=400).filter(str.strip),
    _with(SHORT, CONTROL),
)
# Field -> (channels it applies to, strategy of bad values).
INVALID: dict[str, tuple[tuple[str, ...], st.SearchStrategy[Any]]] = {
    "conversation_id": (tuple(BASE), BAD_ID),
    "content": (
        tuple(BASE),
        st.one_of(
            st.just(""),
            st.text(min_size=4001, max_size=4100),
            _with(SHORT, CONTROL.filter(lambda c: c not in "\n\r\t")),
            st.integers(),
            st.none(),
        ),
    ),
    "subject": (
        ("email",),
        st.one_of(
            st.just(""),
            st.none(),
            st.text(min_size=256, max_size=300),
            _with(SHORT, st.sampled_from("\n\r\x00\x1b")),
        ),
    ),
    "from_phone_number_id": (("sms", "whatsapp"), st.one_of(st.none(), BAD_ID)),
    "media_url": (
        ("sms", "whatsapp", "facebook", "instagram"),
        st.one_of(
            st.lists(
                st.sampled_from(
                    [
                        "ftp://x.io/a.png",
                        "/relative.png",
                        "x.io/a.png",
                        "https://",
                        "javascript:alert(1)",
                        "https://x.io/a b.png",
                        "https://x.io/" + "a" * 2100,
                    ]
                ),
                min_size=1,
                max_size=3,
            ),
            st.integers(),
        ),
    ),
    "channel": (
        tuple(BASE),
        st.one_of(
            st.text(max_size=12).filter(lambda s: s.strip().lower() not in BASE), st.none(), st.integers()
        ),
    ),
}


@st.composite
def invalid_messages(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A message with one to three wrong fields, and the names of those fields."""
    channel = draw(st.sampled_from(sorted(BASE)))
    fields = {"conversation_id": "conv_ok", **BASE[channel]}
    usable = sorted(name for name, (channels, _) in INVALID.items() if channel in channels)
    # A wrong channel hides the channel's own rules, so it is only combined with channel-free fields.
    chosen = draw(st.lists(st.sampled_from(usable), min_size=1, max_size=3, unique=True))
    if "channel" in chosen:
        chosen = [c for c in chosen if c in ("channel", "conversation_id", "content")]
    for name in chosen:
        fields[name] = draw(INVALID[name][1])
    return fields, set(chosen)


def _texts(value: Any) -> list[str]:
    """The strings in a wrong value long enough not to match an error's own words by chance."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and len(v.strip()) >= 8]


@pytest.fixture
def hook(vantax_emulator: Emulator, fast_conn: Callable[..., str]) -> Iterator[VantaxHook]:
    fast_conn()
    h = VantaxHook()
    yield h
    h.close()


@SETTINGS
@given(case=invalid_messages())
def test_invalid_messages_never_reach_the_server_and_name_every_field(
    hook: VantaxHook, vantax_emulator: Emulator, case: tuple[dict[str, Any], set[str]]
) -> None:
    fields, wrong = case
    conversation_id = fields.pop("conversation_id", "")
    with pytest.raises(VantaxValidationError) as info:
        hook.send_message(conversation_id, **fields)
    err = info.value
    named = {f.split(".")[0] for f in err.fields}
    assert wrong <= named, f"{sorted(wrong)} wrong but only {sorted(named)} named: {err}"
    assert named <= FIELDS, err
    assert all(e.reason for e in err.errors)
    for name in wrong:
        assert f"{name}" in str(err)
        for value in _texts(fields.get(name) if name != "conversation_id" else conversation_id):
            # Named, never quoted: a value may be phone data or message content.
            assert value not in str(err) and repr(value)[1:-1] not in str(err), (name, err)
    f = figures("bad-input")
    f.cases += 1
    f.extra["invalid_refused"] = f.extra.get("invalid_refused", 0) + 1
    assert vantax_emulator.stats()["requests"] == 0  # nothing reached the server, this or any example


NOT_PRINTABLE_ASCII = st.characters(codec="utf-8").filter(lambda c: not (c.isascii() and c.isprintable()))
BAD_KEYS = st.one_of(
    st.just(""),
    st.text(min_size=256, max_size=300, alphabet=string.ascii_letters),
    _with(st.text(alphabet=string.ascii_letters, max_size=10), NOT_PRINTABLE_ASCII),
)


@SETTINGS
@given(key=BAD_KEYS)
def test_invalid_idempotency_keys_never_reach_the_server(
    hook: VantaxHook, vantax_emulator: Emulator, key: str
) -> None:
    with pytest.raises(VantaxValidationError) as info:
        hook.send_message("conv_ok", channel="facebook", content="hi", idempotency_key=key)
    assert info.value.fields == ("idempotency_key",)
    figures("bad-input").cases += 1
    assert vantax_emulator.stats()["requests"] == 0


@SETTINGS
@given(message_id=BAD_ID, conversation_id=st.one_of(st.just("conv_ok"), BAD_ID))
def test_invalid_ids_are_refused_before_a_read(
    hook: VantaxHook, vantax_emulator: Emulator, message_id: str, conversation_id: str
) -> None:
    with pytest.raises(VantaxValidationError) as info:
        hook.get_message(conversation_id, message_id)
    assert "message_id" in info.value.fields
    assert ("conversation_id" in info.value.fields) == (conversation_id != "conv_ok")
    figures("bad-input").cases += 1
    assert vantax_emulator.stats()["requests"] == 0


# -- awkward but valid: exact round trips -------------------------------------------------------

# Content: any text but control characters other than \n, \r and \t; surrogates cannot be encoded.
CONTENT_CHARS = st.one_of(st.characters(blacklist_categories=("Cs", "Cc")), st.sampled_from("\n\r\t"))
EMOJI = st.sampled_from(
    ["😀", "👩‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "👍🏽", "\u202e", "\u2028", "\u200d", "é", "é", "中文", "\U0001d518"]
)
CONTENT = st.one_of(
    st.text(CONTENT_CHARS, min_size=1, max_size=300).filter(str.strip),  # blank content is refused
    st.lists(EMOJI, min_size=1, max_size=60).map("".join).filter(lambda s: len(s) <= 4000 and s.strip()),
    st.integers(3990, 4000).map(lambda n: "😀" * n),
    st.text(st.sampled_from("ab\n\r\t 😀"), min_size=1, max_size=50).filter(str.strip),
)
ID_CHARS = st.one_of(st.sampled_from(list("/.% ?#&+=;:@~'\"\\[]{}<>|^`")), st.characters(
    blacklist_categories=("Cs", "Cc")))  # fmt: skip
ODD_IDS = [".", "..", "...", "a/b", "../x", "/", "%", "%2F", "%252F", "50% off", "a b", " lead", "trail "]
ODD_IDS += ["a.b.c", "?x=1#f", "ü/😀", "conv 1/2.3%4"]
IDS = st.one_of(st.sampled_from(ODD_IDS), st.text(ID_CHARS, min_size=1, max_size=40).filter(str.strip))


@SETTINGS
@given(content=CONTENT, conversation_id=IDS)
def test_unicode_huge_content_and_odd_ids_round_trip_exactly(
    hook: VantaxHook, vantax_emulator: Emulator, content: str, conversation_id: str
) -> None:
    vantax_emulator.reset()
    sent = hook.send_message(conversation_id, channel="facebook", content=content)
    [stored] = vantax_emulator.messages()
    assert stored["conversation_id"] == conversation_id
    assert stored["body"]["content"] == content
    assert sent.content == content and sent.conversation_id == conversation_id
    read = hook.get_message(conversation_id, sent.id)
    assert (read.id, read.conversation_id, read.content) == (sent.id, conversation_id, content)
    f = figures("bad-input")
    f.cases += 1
    f.extra["round_trips"] = f.extra.get("round_trips", 0) + 1


@SETTINGS
@given(
    # Blank subjects and line/paragraph separators (Zl, Zp) are refused like CR/LF.
    subject=st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=255
    ).filter(str.strip),
    phone=IDS,
)
def test_subjects_and_phone_ids_round_trip_exactly(
    hook: VantaxHook, vantax_emulator: Emulator, subject: str, phone: str
) -> None:
    vantax_emulator.reset()
    hook.send_message(
        "conv_email", channel="email", content="x", subject=subject, html="<b>" + subject + "</b>"
    )
    hook.send_message("conv_sms", channel="sms", content="x", from_phone_number_id=phone)
    email, sms = vantax_emulator.messages()
    assert email["body"]["subject"] == subject and email["body"]["html"] == "<b>" + subject + "</b>"
    assert sms["body"]["from_phone_number_id"] == phone
    figures("bad-input").cases += 1


def test_a_large_html_body_round_trips(hook: VantaxHook, vantax_emulator: Emulator) -> None:
    html = "<p>" + "ünïcødé 😀 " * 60_000 + "</p>"  # ~ 900 KB of UTF-8, under the 1 MiB body limit
    hook.send_message("conv_big", channel="email", content="x", subject="s", html=html)
    [stored] = vantax_emulator.messages()
    assert stored["body"]["html"] == html
    figures("bad-input").cases += 1


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b"])
def test_control_characters_in_content_are_refused_by_code_point(
    hook: VantaxHook, vantax_emulator: Emulator, char: str
) -> None:
    with pytest.raises(
        VantaxValidationError, match=rf"content: must not contain control character U\+{ord(char):04X}"
    ):
        hook.send_message("conv_ok", channel="facebook", content=f"a{char}b")
    assert vantax_emulator.stats()["requests"] == 0
    figures("bad-input").cases += 1


def test_line_breaks_and_tabs_in_content_round_trip(hook: VantaxHook, vantax_emulator: Emulator) -> None:
    content = "line 1\r\nline 2\n\ttabbed\u2028sep\u2029para"
    hook.send_message("conv_ok", channel="facebook", content=content)
    assert vantax_emulator.messages()[0]["body"]["content"] == content
    figures("bad-input").cases += 1


def test_invalid_input_through_the_operators_sends_nothing(
    vantax_emulator: Emulator, fast_conn: Callable[..., str]
) -> None:
    from tests.reliability._support import make_context
    from vantax_provider._compat import AirflowException, AirflowFailException
    from vantax_provider.operators.vantax import VantaxSendMessageOperator
    from vantax_provider.operators.vantax_bulk import VantaxBulkSendMessageOperator

    fast_conn()
    op = VantaxSendMessageOperator(task_id="t", conversation_id="c/1", channel="sms", content="x" * 4001)
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_context("t"))
    assert "content:" in str(info.value) and "from_phone_number_id:" in str(info.value)
    recipients = [{"c": "ok/1", "body": "fine"}, {"c": "bad\x00", "body": "x"}, {"c": "ok 2", "body": ""}]
    bulk = VantaxBulkSendMessageOperator(
        task_id="b", recipients=recipients, conversation_id="{{ recipient.c }}", channel="facebook",
        content="{{ recipient.body }}",
    )  # fmt: skip
    with pytest.raises(AirflowException) as binfo:
        bulk.execute(make_context("b"))
    assert "2 of 3" in str(binfo.value)
    assert "conversation_id: must not contain control character U+0000" in str(binfo.value)
    assert "content:" in str(binfo.value)
    assert [m["conversation_id"] for m in vantax_emulator.messages()] == ["ok/1"]
    assert vantax_emulator.stats()["requests"] == 1
    figures("bad-input").cases += 2
