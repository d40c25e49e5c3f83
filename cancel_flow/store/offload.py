"""The store's calls from the event loop run in a small pool of threads: a slow or locked database then
holds only the requests that need it, never `/healthz`, static files or pages that don't touch it."""

import functools

import anyio
import anyio.to_thread


class Offloaded:
    """`await offloaded.method(...)` runs `target.method(...)` in a bounded thread pool."""

    def __init__(self, target, threads: int):
        self._target = target
        self._limiter = anyio.CapacityLimiter(threads)

    def __getattr__(self, name: str):
        method = getattr(self._target, name)

        async def call(*args, **kwargs):
            return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs), limiter=self._limiter)

        call.__name__ = name
        return call
