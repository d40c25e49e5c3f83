"""An experiment's sessions as the statistics read them: per subscription its last decision (sessions a
later one replaced are left out, as everywhere on the dashboard), its arm, whether it was saved, and what
it kept at 30/60/90 days."""

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.experiments import SessionResult
from cancel_flow.models import SAVED_OUTCOMES, CancelSession

sessions = CancelSession.__table__
VALUE_DAYS = 60
RECENT_WEEKS = 4


def experiment_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(
            sa.select(sessions.c.experiment_id).where(sessions.c.experiment_id.is_not(None)).distinct())]


def session_results(engine: Engine, experiment_id: str, now: datetime | None = None) -> tuple[list[SessionResult], dict[str, float]]:
    """The experiment's counted sessions, and each arm's new sessions per week over the last four weeks."""
    now = now or utc_now()
    query = sa.select(sessions.c.experiment_arm, sessions.c.outcome, sessions.c.created_at, sessions.c.canceled_at,
                      sessions.c.monthly_amount, sessions.c.schedule).where(
        sessions.c.experiment_id == experiment_id, sessions.c.experiment_arm.is_not(None),
        sessions.c.superseded.is_(False))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    results, recent = [], {}
    for row in rows:
        created = as_utc(row.created_at)
        canceled = as_utc(row.canceled_at) if row.canceled_at else None
        results.append(SessionResult(arm=row.experiment_arm, saved=_saved(row.outcome),
                                     value=_value(row, created, canceled, now),
                                     **{f"active_{days}": _active(created, canceled, now, days) for days in (30, 60, 90)}))
        if created >= now - timedelta(weeks=RECENT_WEEKS):
            recent[row.experiment_arm] = recent.get(row.experiment_arm, 0) + 1
    return results, {arm: count / RECENT_WEEKS for arm, count in recent.items()}


def _saved(outcome: str) -> bool | None:
    if outcome in SAVED_OUTCOMES:
        return True
    if outcome == "canceled":
        return False
    return None  # no decision yet (open, at the portal, talking to the coach, deflected)


def _active(created: datetime, canceled: datetime | None, now: datetime, days: int) -> bool | None:
    if now < created + timedelta(days=days):
        return None
    return canceled is None or canceled > created + timedelta(days=days)


def _value(row, created: datetime, canceled: datetime | None, now: datetime) -> float | None:
    """Revenue kept in the 60 days after the session, net of what the accepted offer cost in them
    (the promised payments below their regular amount), in minor units; None until 60 days have passed."""
    horizon = created + timedelta(days=VALUE_DAYS)
    if now < horizon:
        return None
    if row.outcome == "canceled" or (canceled is not None and canceled <= created):
        return 0.0
    kept_days = VALUE_DAYS if canceled is None or canceled >= horizon else (canceled - created).days
    cost = sum(regular - amount for at, amount, regular in row.schedule or []
               if datetime.fromisoformat(at) <= horizon)
    return row.monthly_amount * kept_days / 30 - cost
