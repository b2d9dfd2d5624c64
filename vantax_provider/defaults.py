"""
The provider's own defaults that several modules share, each written once.

Not facts about the API (those are in ``contract.py``): values users can override per task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

#: Seconds between two status reads while waiting (operators, sensor's trigger, triggers, hook).
DEFAULT_POLL_INTERVAL: Final = 5.0
#: How long an operator waits for delivery by default.
DEFAULT_DELIVERY_TIMEOUT: Final = timedelta(hours=1)
#: Sends in flight at once in a bulk send (the bulk operator's and the hook's ``max_concurrency``).
DEFAULT_SEND_CONCURRENCY: Final = 32
#: Status reads in flight at once while the many-message trigger polls (its ``max_concurrency``).
DEFAULT_READ_CONCURRENCY: Final = 20
#: What a retry does with a message an earlier try may have sent (``on_uncertain``); the first is the default.
ON_UNCERTAIN: Final = ("resend", "skip")
