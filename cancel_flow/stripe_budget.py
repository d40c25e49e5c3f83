"""How fast this deployment lets itself call Stripe: `STRIPE_RATE_LIMIT` requests in any one second,
every worker of the host together.

Stripe limits an account to 25 requests/s in test mode and 100 in live mode
(https://docs.stripe.com/rate-limits); requests above answer 429. The budget keeps us below that
ourselves, so a burst of subscribers waits a moment here (never past the request's deadline) instead
of being refused by Stripe.

The budget is a sliding log: the moments of the last N requests (N = a tenth of the limit), and a
request may go at the earliest a tenth of a second after the N-th request before it. Any tenth of a
second therefore holds at most N requests and any second at most the limit; a burst of up to N goes
at once; a request that would have to wait past its deadline is refused at once ("busy") without
taking a place; a request woken late for its place takes a new one (see the gateway). Stripe counts
requests as they arrive, after the way there: with whole-second windows, a burst of the full limit
followed by the next one a second later arrived as 27 requests in one second for a limit of 20.

The workers of one `serve` share the log through a small memory-mapped file of the deployment
(beside a SQLite database; else in the temporary directory, named after the database and key),
locked with `flock` for the microseconds a reservation takes. A counter row in the database would
cost a write transaction per Stripe call (an upsert and commit measured ~250 k instructions on
SQLite, 3 % of a first view, and it queues behind the flow's own writes) and cannot keep a sliding
log cheaply. Replicas on other hosts do not see this file: give each host its share of the limit.
"""

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from cancel_flow.errors import StripeUnavailable
from cancel_flow.i18n import N_
from cancel_flow.logs import log_event

MAGIC = b"cfbudg01"
HEADER = struct.Struct("<8sQdQ")  # magic, slots, window seconds, next slot index
SLOT = struct.Struct("<d")
WINDOWS = 10  # windows a second
MAX_SLOTS = 10_000  # above 10,000 requests/s the window shrinks instead (the exact count no longer matters)
STALE = 3600.0  # a reservation this far ahead can only be a clock stepped back: the log starts anew


class StripeBusy(StripeUnavailable):
    """Stripe's request budget (ours or Stripe's 429) had no room before the request's deadline; nothing was sent
    that could have changed anything."""

    title = N_("We're busy right now")


def now() -> float:
    """Wall-clock seconds shared by every process of the host; read directly so frozen test clocks don't stop it."""
    return time.clock_gettime(time.CLOCK_REALTIME)


def shape(rate: float) -> tuple[int, float]:
    """(N, window): at most N requests in any `window` seconds, so never more than `rate` in any one second.
    Ten windows a second: a burst goes at once up to a tenth of the rate, so that Stripe, which counts
    requests as they arrive, sees few more in a second when some of them were delayed on the way."""
    if rate < 1:
        return 1, 1.0 / rate
    per_second = min(WINDOWS, int(rate))
    slots = int(rate / per_second)
    if slots > MAX_SLOTS:
        return MAX_SLOTS, MAX_SLOTS / rate
    return slots, 1.0 / per_second


class _MemoryLog:
    """The log in this process only (when no shared file can be used)."""

    def __init__(self, slots: int, window: float):
        self.window, self.times, self.next = window, [float("-inf")] * slots, 0

    def reserve(self, at: float, latest: float) -> float | None:
        moment = max(at, self.times[self.next] + self.window)
        if moment > latest:
            return None
        self.times[self.next] = moment
        self.next = (self.next + 1) % len(self.times)
        return moment


class _SharedLog:
    """The log in a memory-mapped file, locked with flock while a reservation reads and writes it."""

    def __init__(self, path: Path, slots: int, window: float):
        self.slots, self.window = slots, window
        self.size = HEADER.size + slots * SLOT.size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self.fd).st_size < self.size:
                os.ftruncate(self.fd, self.size)  # only ever grown: a worker mapping the old size keeps working
            self.map = mmap.mmap(self.fd, self.size)
            self._check()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _check(self) -> int:
        magic, slots, window, index = HEADER.unpack_from(self.map, 0)
        if magic != MAGIC or slots != self.slots or window != self.window or index >= slots:
            self.map[HEADER.size:self.size] = SLOT.pack(float("-inf")) * self.slots
            HEADER.pack_into(self.map, 0, MAGIC, self.slots, self.window, 0)
            return 0
        return index

    def reserve(self, at: float, latest: float) -> float | None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            index = self._check()
            offset = HEADER.size + index * SLOT.size
            (oldest,) = SLOT.unpack_from(self.map, offset)
            if oldest > at + STALE:
                HEADER.pack_into(self.map, 0, b"\0" * 8, 0, 0.0, 0)
                index = self._check()
                offset, oldest = HEADER.size, float("-inf")
            moment = max(at, oldest + self.window)
            if moment > latest:
                return None
            SLOT.pack_into(self.map, offset, moment)
            HEADER.pack_into(self.map, 0, MAGIC, self.slots, self.window, (index + 1) % self.slots)
            return moment
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


class StripeBudget:
    """`reserve(within)`: seconds to wait before sending one request, or None when no place is free within
    `within` seconds (the caller fails fast; nothing is reserved)."""

    def __init__(self, rate: float, path: Path | None = None):
        self.rate, self.path = rate, path
        self._log, self._pid = None, None

    def _open(self):
        """The log of this process: opened in the worker itself (a descriptor inherited through fork would
        share its flock with the parent, which would then not exclude it)."""
        slots, window = shape(self.rate)
        self._log, self._pid = None, os.getpid()
        if self.path is not None:
            try:
                self._log = _SharedLog(self.path, slots, window)
            except (OSError, ValueError) as error:
                log_event("stripe.budget_unshared", level=30, reason=type(error).__name__,
                          detail="the Stripe request budget applies to this worker alone")
        if self._log is None:
            self._log = _MemoryLog(slots, window)
        return self._log

    @classmethod
    def for_deployment(cls, rate: float, database_url: str, api_key: str | None) -> "StripeBudget":
        """The budget every worker using this database shares: a file beside a SQLite database, else in the
        temporary directory, named after the database and the Stripe key (hashed)."""
        if database_url.startswith("sqlite"):
            database = make_url(database_url).database
            if not database or database == ":memory:" or database.startswith("file:"):
                return cls(rate, None)
            return cls(rate, Path(f"{Path(database).resolve()}-stripe-budget"))  # beside its -wal and -shm
        name = hashlib.sha256(f"{database_url}\0{api_key or ''}".encode()).hexdigest()[:24]
        return cls(rate, Path(tempfile.gettempdir()) / f"cancel-flow-stripe-budget-{os.getuid()}-{name}")

    def reserve(self, within: float) -> float | None:
        log = self._log if self._pid == os.getpid() else self._open()
        at = now()
        moment = log.reserve(at, at + within)
        return None if moment is None else moment - at

    def close(self) -> None:
        log, self._log, self._pid = self._log, None, None
        if isinstance(log, _SharedLog) and log.fd >= 0:
            log.map.close()
            os.close(log.fd)
            log.fd = -1
