"""Coach passwords, stored with scrypt (memory-hard, from the standard library).

Each check costs ~16 MB and ~50 ms of one core, so sign-ins check passwords in a small pool of
their own: a flood of logins waits in a short queue or is turned away, instead of filling the
shared threadpool, the memory and every other request's latency."""

import asyncio
import base64
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

MIN_LENGTH = 10
_N, _R, _P = 2**14, 8, 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


# Checked against when an email is unknown, so the answer takes as long as for a real account.
DECOY_HASH = hash_password(secrets.token_urlsafe(16))


class HashingBusy(Exception):
    """Every slot of the password pool and its queue is taken: answer "busy" at once."""


class HashingPool:
    """At most `workers` password checks at a time in this process, and at most `queue` waiting."""

    def __init__(self, workers: int = 2, queue: int = 8):
        self.workers, self.limit = workers, workers + queue
        self.in_flight = 0
        self._executor: ThreadPoolExecutor | None = None

    async def verify(self, password: str, stored: str) -> bool:
        if self.in_flight >= self.limit:
            raise HashingBusy
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="password-check")
        self.in_flight += 1
        try:
            # A cancelled wait (client gone) also cancels the queued check; at most `workers` ever run.
            return await asyncio.get_running_loop().run_in_executor(self._executor, verify_password, password, stored)
        finally:
            self.in_flight -= 1


PASSWORD_CHECKS = HashingPool()
