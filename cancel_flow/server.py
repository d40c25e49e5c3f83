"""`cancel-flow serve`: validate settings, migrate once, then run uvicorn with its workers."""

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager

import uvicorn

from cancel_flow.logs import configure_logging
from cancel_flow.config.live import open_live
from cancel_flow.settings import Settings
from cancel_flow.store import make_engine, migrate, wait_for_database

SWEEP_EVERY = 600  # seconds between deflection sweeps in each worker (the UPDATE is idempotent)


def app_factory():
    """Each uvicorn worker builds its own app (its own database pool and Stripe client)."""
    from cancel_flow.web.app import create_app

    configure_logging()
    return create_app(sweep_every=SWEEP_EVERY)


@contextmanager
def _sigterm_stops():
    """SIGTERM stops the wait at once: as a container's first process, Python would otherwise ignore it
    (uvicorn installs its own handlers once it runs)."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(settings: Settings, host: str, port: int, workers: int = 1, forwarded_allow_ips: str = "127.0.0.1") -> None:
    settings.require_stripe()
    configure_logging()
    engine = make_engine(settings.database_url)
    try:
        with _sigterm_stops():
            wait_for_database(engine)  # started beside the database (compose): it may not answer yet
        migrate(engine)  # replicas starting together: an advisory lock lets one migrate, the others find it done
        open_live(engine, settings)  # first start: the offers file seeds version 1, or a mistake in it stops here
    finally:
        engine.dispose()
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="cancel-flow-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("cancel_flow.server:app_factory", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=30,
                    proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
