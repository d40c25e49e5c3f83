"""The dashboard's numbers, every one computed by the database (GROUP BY and SUM, no loops over rows)."""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.models import SAVED_OUTCOMES, CancelSession, SessionOffer

sessions = CancelSession.__table__
session_offers = SessionOffer.__table__
DURABILITY_DAYS = (30, 60, 90)
PAGE_SIZE = 25


@dataclass(frozen=True)
class DateRange:
    start: datetime  # inclusive
    end: datetime  # exclusive

    def contains(self, column):
        return sa.and_(column >= self.start, column < self.end)


@dataclass
class Stats:
    sessions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    saved: int = 0
    canceled: int = 0
    save_rate: float | None = None
    mrr_saved: list[tuple[str, int]] = field(default_factory=list)
    discount_cost: list[tuple[str, int]] = field(default_factory=list)
    reasons: list[dict] = field(default_factory=list)
    offers: list[dict] = field(default_factory=list)
    durability: list[dict] = field(default_factory=list)
    weekly: list[dict] = field(default_factory=list)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _saved(column=sessions.c.outcome):
    return sa.case((column.in_(SAVED_OUTCOMES), 1), else_=0)


def _is(outcome: str):
    return sa.case((sessions.c.outcome == outcome, 1), else_=0)


def _days_between(dialect: str, later, earlier):
    if dialect == "postgresql":
        return sa.func.extract("epoch", later - earlier) / 86400.0
    return sa.func.julianday(later) - sa.func.julianday(earlier)


def _week_start(dialect: str, column):
    if dialect == "postgresql":
        return sa.cast(sa.func.date_trunc("week", sa.func.timezone("UTC", column)), sa.Date)
    return sa.func.date(column, "weekday 0", "-6 days")


def _discount_cost():
    """What a discount costs over its months: price × percent × the invoices it covers."""
    interval_months = sa.case((sessions.c.interval == "year", 12 * sessions.c.interval_count),
                              (sessions.c.interval == "month", sessions.c.interval_count), else_=None)
    invoices = (sessions.c.discount_months + interval_months - 1) // interval_months
    per_interval = sessions.c.price_amount * sessions.c.discount_percent / 100.0 * invoices
    per_month = sessions.c.monthly_amount * sessions.c.discount_percent / 100.0 * sessions.c.discount_months
    return sa.case((interval_months.is_(None), per_month), else_=per_interval)


class StatsQueries:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name

    def any_session(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sessions.c.id).limit(1)).first() is not None

    def stats(self, period: DateRange) -> Stats:
        result = Stats()
        in_range = period.contains(sessions.c.created_at)
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(sessions.c.outcome, sa.func.count())
                                      .where(in_range).group_by(sessions.c.outcome)).all()
            result.outcomes = {outcome: count for outcome, count in rows}
            result.sessions = sum(result.outcomes.values())
            result.saved = sum(result.outcomes.get(o, 0) for o in SAVED_OUTCOMES)
            result.canceled = result.outcomes.get("canceled", 0)
            result.save_rate = _rate(result.saved, result.saved + result.canceled)

            money = connection.execute(sa.select(
                sessions.c.currency, sa.func.sum(sessions.c.monthly_amount),
                sa.func.sum(sa.case((sessions.c.outcome == "saved_discount", _discount_cost()), else_=0)),
            ).where(in_range, sessions.c.outcome.in_(SAVED_OUTCOMES)).group_by(sessions.c.currency)
             .order_by(sessions.c.currency)).all()
            result.mrr_saved = [(currency, int(mrr or 0)) for currency, mrr, _ in money]
            result.discount_cost = [(currency, round(cost or 0)) for currency, _, cost in money if cost]

            reasons = connection.execute(sa.select(
                sessions.c.reason, sa.func.count(), sa.func.sum(_saved()), sa.func.sum(_is("canceled")),
            ).where(in_range, sessions.c.reason.is_not(None)).group_by(sessions.c.reason)
             .order_by(sa.func.count().desc(), sessions.c.reason)).all()
            result.reasons = [{"reason": reason, "sessions": count, "saved": int(saved or 0), "canceled": int(canceled or 0),
                               "save_rate": _rate(int(saved or 0), int(saved or 0) + int(canceled or 0))}
                              for reason, count, saved, canceled in reasons]

            shown = dict(connection.execute(
                sa.select(session_offers.c.offer_id, sa.func.count())
                .select_from(session_offers.join(sessions, sessions.c.id == session_offers.c.session_id))
                .where(in_range).group_by(session_offers.c.offer_id)).all())
            accepted = dict(connection.execute(
                sa.select(sessions.c.chosen_offer, sa.func.count())
                .where(in_range, sessions.c.outcome.in_(SAVED_OUTCOMES), sessions.c.chosen_offer.is_not(None))
                .group_by(sessions.c.chosen_offer)).all())
            result.offers = [{"offer": offer, "shown": shown.get(offer, 0), "accepted": accepted.get(offer, 0),
                              "rate": _rate(accepted.get(offer, 0), shown.get(offer, 0))}
                             for offer in sorted(set(shown) | set(accepted))]

            result.durability = self._durability(connection, in_range)
            result.weekly = self._weekly(connection, period, in_range)
        return result

    def _durability(self, connection, in_range) -> list[dict]:
        now = utc_now()
        lasted = _days_between(self.dialect, sessions.c.canceled_at, sessions.c.decided_at)
        columns = []
        for days in DURABILITY_DAYS:
            old_enough = sessions.c.decided_at <= now - timedelta(days=days)
            still_active = sa.or_(sessions.c.canceled_at.is_(None), lasted > days)
            columns += [sa.func.sum(sa.case((old_enough, 1), else_=0)),
                        sa.func.sum(sa.case((sa.and_(old_enough, still_active), 1), else_=0))]
        row = connection.execute(sa.select(*columns).where(in_range, sessions.c.outcome.in_(SAVED_OUTCOMES))).one()
        return [{"days": days, "saves": int(row[2 * i] or 0), "still_active": int(row[2 * i + 1] or 0),
                 "share": _rate(int(row[2 * i + 1] or 0), int(row[2 * i] or 0))}
                for i, days in enumerate(DURABILITY_DAYS)]

    def _weekly(self, connection, period: DateRange, in_range) -> list[dict]:
        week = _week_start(self.dialect, sessions.c.created_at).label("week")
        rows = connection.execute(sa.select(week, sa.func.count(), sa.func.sum(_saved()), sa.func.sum(_is("canceled")))
                                  .where(in_range).group_by(week).order_by(week)).all()
        found = {(value if isinstance(value, date) else date.fromisoformat(str(value)[:10])): (count, saves, cancels)
                 for value, count, saves, cancels in rows}
        first = period.start.date() - timedelta(days=period.start.weekday())
        last = (period.end - timedelta(microseconds=1)).date()
        weeks = []
        monday = first
        while monday <= last:
            count, saves, cancels = found.get(monday, (0, 0, 0))
            weeks.append({"week": monday, "sessions": count, "saves": int(saves or 0), "cancels": int(cancels or 0)})
            monday += timedelta(days=7)
        return weeks

    def _filtered(self, period: DateRange, outcome: str | None, reason: str | None):
        conditions = [period.contains(sessions.c.created_at)]
        if outcome:
            conditions.append(sessions.c.outcome == outcome)
        if reason:
            conditions.append(sessions.c.reason == reason)
        return conditions

    def recent(self, period: DateRange, outcome: str | None, reason: str | None, page: int) -> tuple[list, int]:
        conditions = self._filtered(period, outcome, reason)
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(sessions).where(*conditions)).scalar_one()
            rows = connection.execute(sa.select(sessions).where(*conditions)
                                      .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
                                      .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
        return rows, total

    def export_rows(self, period: DateRange, outcome: str | None, reason: str | None):
        """Every session of the range, oldest first, streamed from the database."""
        query = sa.select(sessions).where(*self._filtered(period, outcome, reason)) \
            .order_by(sessions.c.created_at, sessions.c.id)
        with self.engine.connect() as connection:
            for row in connection.execution_options(stream_results=True, yield_per=500).execute(query):
                yield row


def day_start(day: date) -> datetime:
    return as_utc(datetime(day.year, day.month, day.day))
