"""The account's rate limit: the connection's ``rate_limit`` extra and the emulator's token bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from vantax_provider.emulator.testing import Emulator
from vantax_provider.exceptions import VantaxConfigurationError
from vantax_provider.hooks.vantax import VantaxHook


def test_rate_limit_extras_are_read(make_hook: Callable[..., VantaxHook]) -> None:
    settings = make_hook(rate_limit="50", rate_limit_share=0.25).settings
    assert (settings.rate_limit, settings.rate_limit_share) == (50.0, 0.25)
    assert make_hook().settings.rate_limit is None


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"rate_limit": -5}, "rate_limit"),
        ({"rate_limit": 10, "rate_limit_share": 0}, "rate_limit_share"),
        ({"rate_limit": 10, "rate_limit_share": 2}, "rate_limit_share"),
    ],
)
def test_bad_rate_limit_extras_name_the_extra(
    make_hook: Callable[..., VantaxHook], extra: dict[str, object], match: str
) -> None:
    with pytest.raises(VantaxConfigurationError, match=match):
        _ = make_hook(**extra).settings


def test_emulator_enforces_an_account_limit_with_retry_after(vantax_emulator: Emulator) -> None:
    vantax_emulator.configure(rate_limit=2, rate_burst=3)
    headers = {"Authorization": f"Bearer {vantax_emulator.api_key}"}
    with httpx.Client(base_url=vantax_emulator.url, headers=headers) as client:
        answers = [client.get("/v1/conversations/c/messages/m") for _ in range(6)]
    statuses = [a.status_code for a in answers]
    # The burst of 3 passes (404: the message does not exist), the rest is refused in the same instant.
    assert statuses[:3] == [404, 404, 404] and 429 in statuses[3:], statuses
    refused = [a for a in answers if a.status_code == 429]
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert vantax_emulator.stats()["rate_limited"] == len(refused)
    assert vantax_emulator.configure(rate_limit=0)["rate_limit"] == 0  # off again


def test_one_hook_adapts_to_the_account_limit(
    make_hook: Callable[..., VantaxHook], vantax_emulator: Emulator
) -> None:
    """Twice the limit asked for: the hook is cut back on the first 429s and every message lands once."""
    vantax_emulator.configure(rate_limit=20, deduplicate=False)
    hook = make_hook(rate_limit=40, max_retries=8, max_retry_time=120)  # a wrong limit: twice the real one

    async def run() -> None:
        try:
            await asyncio.gather(*(hook.asend_message(f"conv_{i}", channel="email", subject="s", content="c")
                                   for i in range(60)))  # fmt: skip
        finally:
            await hook.aclose()

    asyncio.run(run())
    assert hook.pacer.adaptive is not None and hook.pacer.adaptive.cuts >= 1
    assert hook.pacer.adaptive.rate < 40
    messages = vantax_emulator.messages()
    assert len(messages) == 60 and len({m["conversation_id"] for m in messages}) == 60
