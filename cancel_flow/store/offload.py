"""The store's calls from the event loop never wait on a lock or a slow statement there.

Each call runs first on the event loop against a store whose connections give up at once on a lock
(SQLite busy timeout 0, PostgreSQL lock_timeout of a few milliseconds and a short statement_timeout):
that is what almost every call needs, and it costs nothing. When the database is locked or slow, the
statement fails without having changed anything (its transaction rolls back), and the call runs again
in a small pool of threads against the ordinary store, with the ordinary timeouts, so `/healthz`,
static files and pages that don't touch the locked rows keep answering. A hop to a thread costs
about as much as a first view's own work (BENCHMARKS.md), which is why it is only the slow path.
"""

import functools

import anyio
import anyio.to_thread
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolExhausted

# PostgreSQL: lock_not_available, query_canceled (statement_timeout); SQLite: "database is locked"
_WAITED = ("55P03", "57014")


def gave_up_waiting(error: OperationalError) -> bool:
    """A statement refused because it would have waited on a lock or run too long: nothing applied."""
    original = error.orig
    return getattr(original, "sqlstate", None) in _WAITED or "database is locked" in str(original)


class Offloaded:
    """`await offloaded.method(...)`: `quick.method(...)` on the event loop, or, when that would have to
    wait, `target.method(...)` in a bounded thread pool."""

    def __init__(self, target, threads: int, quick=None):
        self._target, self._quick = target, quick
        self._limiter = anyio.CapacityLimiter(threads)

    def __getattr__(self, name: str):
        method = getattr(self._target, name)
        quick = getattr(self._quick, name) if self._quick is not None else None

        async def call(*args, **kwargs):
            if quick is not None:
                try:
                    return quick(*args, **kwargs)
                except PoolExhausted:
                    pass  # every quick connection is busy: this one waits in a thread
                except OperationalError as error:
                    if not gave_up_waiting(error):
                        raise
            return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs), limiter=self._limiter)

        call.__name__ = name
        setattr(self, name, call)  # found directly from now on: no lookup and no new function per call
        return call
