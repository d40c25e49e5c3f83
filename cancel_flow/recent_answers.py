"""Stripe's answers of the last few seconds, per worker, for reloads of one link.

A link holder who reloads a page over and over must not spend the deployment's Stripe budget: a reload
within `seconds` gets the answer the first request got, and reloads that arrive while that answer is
still on its way wait for it instead of asking Stripe again. Only what is safe to repeat is kept: a
portal URL for a few seconds of its short life (https://docs.stripe.com/api/customer_portal/sessions/object:
"sessions are short-lived and will expire if the customer does not visit the URL"), and the fact that
a subscription has ended. A failure is never kept: the next reload asks again.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class RecentAnswers:
    def __init__(self, seconds: float, size: int = 10_000):
        self.seconds, self.size = seconds, size
        self._kept: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()  # key: (fresh until, answer)
        self._coming: dict[Hashable, asyncio.Future] = {}

    def kept(self, key: Hashable):
        """The answer kept for `key` while it is fresh, else None."""
        entry = self._kept.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._kept[key]
            return None
        return entry[1]

    def keep(self, key: Hashable, answer: object, seconds: float | None = None) -> None:
        """Keep `answer` for `key`, for `seconds` (default: the instance's)."""
        self._kept[key] = (time.monotonic() + (self.seconds if seconds is None else seconds), answer)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]],
                  keep_for: Callable[[T], float | None] | None = None) -> T:
        """The kept answer for `key`, the one on its way, or a new one from `fetch`, kept for `keep_for(answer)`
        seconds (None: only shared with the requests waiting for it; default: `seconds`)."""
        while True:
            answer = self.kept(key)
            if answer is not None:
                return answer
            coming = self._coming.get(key)
            if coming is None:
                break
            try:
                return await asyncio.shield(coming)
            except asyncio.CancelledError:
                if not coming.cancelled() or asyncio.current_task().cancelling():
                    raise  # this request itself was cancelled
                # the request fetching it was cancelled (its client left): look again
        coming = asyncio.get_running_loop().create_future()
        self._coming[key] = coming
        try:
            answer = await fetch()
        except asyncio.CancelledError:
            coming.cancel()
            raise
        except Exception as error:
            coming.set_exception(error)
            coming.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            coming.set_result(answer)
            seconds = self.seconds if keep_for is None else keep_for(answer)
            if seconds is not None:
                self.keep(key, answer, seconds)
            return answer
        finally:
            if self._coming.get(key) is coming:
                del self._coming[key]
