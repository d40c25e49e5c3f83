"""The dashboard's numbers, every one computed by the database (GROUP BY and SUM, no loops over rows)."""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.models import (SAVED_OUTCOMES, CancelSession, InvoiceRecord, OutsideCancellation, SessionOffer,
                                StatsDay, StatsDayOffer, StatsWatermark)

sessions = CancelSession.__table__
session_offers = SessionOffer.__table__
invoices = InvoiceRecord.__table__
# The dashboard counts subscriptions, not links: a session a later one of the same subscription replaced
# (see Store._supersede_others) is left out of every number.
_COUNTED = sessions.c.superseded.is_(False)
stats_days = StatsDay.__table__
stats_day_offers = StatsDayOffer.__table__
watermark = StatsWatermark.__table__
# Written exactly as the partial index's condition, so both databases use that index.
_NOT_ROLLED_UP = sa.text("NOT rolled_up")
_ROLLUP_LOCK = 0x726F6C6C  # PostgreSQL advisory lock id held while refreshing roll-ups
DURABILITY_DAYS = (30, 60, 90)
_later = sessions.alias("later")
# The dashboard counts subscriptions, not links: an undecided session (open, deflected) of a subscription
# that has a later session steps aside. Done here, for the subscriptions whose sessions changed, rather
# than on the subscriber's first view.
_STEPS_ASIDE = [sessions.c.superseded.is_(False), sessions.c.outcome.in_(("open", "deflected")),
                sa.exists(sa.select(_later.c.id).where(_later.c.subscription_id == sessions.c.subscription_id,
                                                       _later.c.id > sessions.c.id))]
_STEP_ASIDE = sa.update(sessions).where(
    sessions.c.subscription_id.in_(sa.bindparam("subscriptions", expanding=True)), *_STEPS_ASIDE,
).values(superseded=True).returning(sessions.c.created_at)


def _step_aside(connection, subscriptions) -> list:
    """Mark the replaced sessions of these subscriptions; their days, to rebuild."""
    subscriptions, moved = sorted(set(subscriptions)), []
    for first in range(0, len(subscriptions), 500):
        moved += connection.execute(_STEP_ASIDE, {"subscriptions": subscriptions[first:first + 500]}).scalars().all()
    return moved
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
    # Everything an accepted offer cost (discount amounts, skipped or free payments, price differences), per currency.
    offer_cost: list[tuple[str, int]] = field(default_factory=list)
    # Per offer kind: the same figures as `offers`, added up over the offers of that kind.
    offer_kinds: list[dict] = field(default_factory=list)
    # The previous period of the same length: sessions, saved, canceled, save_rate, mrr_saved.
    previous: dict = field(default_factory=dict)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _days_between(dialect: str, later, earlier):
    if dialect == "postgresql":
        return sa.func.extract("epoch", later - earlier) / 86400.0
    return sa.func.julianday(later) - sa.func.julianday(earlier)


def _discount_cost():
    """What a discount costs: the discount amounts of the invoices it covers. While the subscription lives,
    the promise's total (billed so far and still to come, as the billing model computes it and the
    emulator's invoices confirm); once it is canceled, what the invoices since the decision billed."""
    billed = sa.select(sa.func.coalesce(sa.func.sum(invoices.c.total_discount), 0)).where(
        invoices.c.subscription_id == sessions.c.subscription_id, invoices.c.created >= sessions.c.decided_at,
        invoices.c.status.in_(("open", "paid"))).scalar_subquery()
    return sa.case((sessions.c.offer_cost.is_(None), _estimated_discount_cost()),
                   (sessions.c.canceled_at.is_(None), sessions.c.offer_cost), else_=billed)


def _estimated_discount_cost():
    """Sessions decided before costs were recorded: price × percent × the invoices the coupon covers."""
    interval_months = sa.case((sessions.c.interval == "year", 12 * sessions.c.interval_count),
                              (sessions.c.interval == "month", sessions.c.interval_count), else_=None)
    invoices = (sessions.c.discount_months + interval_months - 1) // interval_months
    per_interval = sessions.c.price_amount * sessions.c.discount_percent / 100.0 * invoices
    per_month = sessions.c.monthly_amount * sessions.c.discount_percent / 100.0 * sessions.c.discount_months
    return sa.case((interval_months.is_(None), per_month), else_=per_interval)


def _offer_cost():
    """What an accepted offer costs: discounts as `_discount_cost` says; a pause, a free period or a switch
    what the promise counted (the skipped or free payments, the price difference); a conversation nothing."""
    outcome = sessions.c.outcome
    return sa.case((outcome == "saved_discount", _discount_cost()),
                   (outcome.in_(("saved_pause", "saved_switch", "saved_free_period")),
                    sa.func.coalesce(sessions.c.offer_cost, 0)), else_=0.0)


def offer_kind_of(outcome: str) -> str:
    """The kind of the offer a session chose, from its outcome: a saved_* outcome names it; a chosen offer
    that is no save (contact_requested, then deflected or canceled) was a conversation."""
    return outcome[len("saved_"):] if outcome.startswith("saved_") else "contact"


def _day(dialect: str, column):
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)
    return sa.func.date(column)


class StatsQueries:
    """Reads the daily roll-ups, after bringing up to date the days whose sessions changed."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name

    def any_session(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sessions.c.id).limit(1)).first() is not None

    # roll-ups ---------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the roll-ups of the days that have a session not yet counted as it now is.
        Every write to a session clears its `rolled_up` flag; this sets the flags and rebuilds those
        days in one transaction, so a write that lands meanwhile is counted next time."""
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ROLLUP_LOCK})
            built = connection.execute(sa.select(watermark.c.refreshed_until)).scalar() is not None
            if not built:
                connection.execute(sa.update(sessions).where(*_STEPS_ASIDE).values(superseded=True))
                connection.execute(sa.update(sessions).where(_NOT_ROLLED_UP).values(rolled_up=True))
                connection.execute(sa.delete(stats_days))
                connection.execute(sa.delete(stats_day_offers))
                self._build(connection, None)
                connection.execute(sa.insert(watermark).values(id=1, refreshed_until=utc_now()))
                self._restat(connection)
                return
            marked = connection.execute(sa.update(sessions).where(_NOT_ROLLED_UP).values(rolled_up=True)
                                        .returning(sessions.c.created_at, sessions.c.subscription_id)).all()
            if not marked:
                return
            moved = _step_aside(connection, [row.subscription_id for row in marked])
            marked = [row.created_at for row in marked] + moved
            dirty = sorted({as_utc(moment).date() for moment in marked})
            connection.execute(sa.delete(stats_days).where(stats_days.c.day.in_(dirty)))
            connection.execute(sa.delete(stats_day_offers).where(stats_day_offers.c.day.in_(dirty)))
            for first in range(0, len(dirty), 200):
                self._build(connection, dirty[first:first + 200])
            connection.execute(sa.update(watermark).values(refreshed_until=utc_now()))
            if len(marked) > 10_000:
                self._restat(connection)

    def _restat(self, connection) -> None:
        """After many sessions were marked at once, PostgreSQL's planner must learn that few are left
        unmarked, or it keeps scanning the whole table instead of the partial index."""
        if self.dialect == "postgresql":
            connection.execute(sa.text("ANALYZE cancel_session"))

    def _build(self, connection, days: list[date] | None) -> None:
        day = _day(self.dialect, sessions.c.created_at)
        where = sa.true() if days is None else sa.or_(*[
            DateRange(day_start(d), day_start(d + timedelta(days=1))).contains(sessions.c.created_at) for d in days])
        lasted = _days_between(self.dialect, sessions.c.canceled_at, sessions.c.decided_at)
        measures = [sa.func.sum(sa.case((sa.or_(sessions.c.canceled_at.is_(None), lasted > n), 1), else_=0))
                    for n in DURABILITY_DAYS]
        grouping = [day, sessions.c.outcome, sessions.c.reason, sessions.c.currency, sessions.c.chosen_offer]
        # Grouped by the monthly amount as well (not stored: a row's monthly amount ÷ its sessions is each
        # one's), so revenue kept = monthly amount × months still active is exact. `discount_cost` holds the
        # cost of whatever offer the row's outcome says was accepted (see _offer_cost).
        connection.execute(sa.insert(stats_days).from_select(
            ["day", "outcome", "reason", "currency", "chosen_offer", "sessions", "monthly_amount", "discount_cost",
             "lasted_30", "lasted_60", "lasted_90"],
            sa.select(*grouping, sa.func.count(), sa.func.sum(sessions.c.monthly_amount),
                      sa.func.sum(_offer_cost()), *measures)
            .where(where, _COUNTED).group_by(*grouping, sessions.c.monthly_amount)))
        connection.execute(sa.insert(stats_day_offers).from_select(
            ["day", "offer_id", "shown"],
            sa.select(day, session_offers.c.offer_id, sa.func.count())
            .select_from(session_offers.join(sessions, sessions.c.id == session_offers.c.session_id))
            .where(where, _COUNTED).group_by(day, session_offers.c.offer_id)))

    # the numbers -----------------------------------------------------------------------------------
    def stats(self, period: DateRange, kinds: dict[str, str] | None = None) -> Stats:
        """`kinds`: offer id → kind from the offers file, for offers shown but never accepted in the range."""
        self.refresh()
        days = stats_days.c
        in_range = sa.and_(days.day >= period.start.date(), days.day < period.end.date())
        # Few passes over the range's roll-ups, each summed by the database into a handful of groups
        # that the numbers are folded from. A GROUP BY sorts every row of the range, so an all-time
        # view costs what its groupings cost: narrow ones, and days (already in index order).
        # Durability: still active N days on, counted over sessions whose day is more than N days ago.
        today = utc_now().date()
        durability = []
        for n, lasted in zip(DURABILITY_DAYS, (days.lasted_30, days.lasted_60, days.lasted_90)):
            old_enough = days.day < today - timedelta(days=n)
            durability += [sa.func.sum(sa.case((old_enough, days.sessions), else_=0)),
                           sa.func.sum(sa.case((old_enough, lasted), else_=0))]
        # Revenue kept in the 90 days after the decision: a month's amount for each 30 days the subscription
        # stayed (each row's sessions share one monthly amount), over sessions old enough; and their offers' cost.
        settled = days.day < today - timedelta(days=DURABILITY_DAYS[-1])
        kept = sa.func.sum(sa.case((settled, days.monthly_amount * 1.0 / days.sessions
                                    * (days.lasted_30 + days.lasted_60 + days.lasted_90)), else_=0))
        settled_cost = sa.func.sum(sa.case((settled, days.discount_cost), else_=0))
        offers = stats_day_offers.c
        with self.engine.connect() as connection:
            by_reason = connection.execute(sa.select(days.outcome, days.reason, sa.func.sum(days.sessions))
                                           .where(in_range).group_by(days.outcome, days.reason)).all()
            saves = connection.execute(sa.select(days.currency, days.chosen_offer, days.outcome, sa.func.sum(days.sessions),
                                                 sa.func.sum(days.monthly_amount), sa.func.sum(days.discount_cost),
                                                 kept, settled_cost, *durability)
                                       .where(in_range, sa.or_(days.outcome.in_(SAVED_OUTCOMES), days.chosen_offer.is_not(None)))
                                       .group_by(days.currency, days.chosen_offer, days.outcome)).all()
            shown = {offer: int(count) for offer, count in connection.execute(
                sa.select(offers.offer_id, sa.func.sum(offers.shown))
                .where(offers.day >= period.start.date(), offers.day < period.end.date()).group_by(offers.offer_id)).all()}
            by_day = connection.execute(sa.select(
                days.day, sa.func.sum(days.sessions),
                sa.func.sum(sa.case((days.outcome.in_(SAVED_OUTCOMES), days.sessions), else_=0)),
                sa.func.sum(sa.case((days.outcome == "canceled", days.sessions), else_=0)),
            ).where(in_range).group_by(days.day)).all()
            length = period.end - period.start
            before = sa.and_(days.day >= (period.start - length).date(), days.day < period.start.date())
            previous = connection.execute(sa.select(days.outcome, days.currency, sa.func.sum(days.sessions),
                                                    sa.func.sum(days.monthly_amount))
                                          .where(before).group_by(days.outcome, days.currency)).all()
        result = _fold(by_reason, saves, shown, kinds or {})
        result.weekly = _weeks(period, by_day)
        result.previous = _previous(previous)
        return result

    def _filtered(self, period: DateRange, outcome: str | None, reason: str | None):
        conditions = [period.contains(sessions.c.created_at), _COUNTED]
        if outcome:
            conditions.append(sessions.c.outcome == outcome)
        if reason:
            conditions.append(sessions.c.reason == reason)
        return conditions

    def recent(self, period: DateRange, outcome: str | None, reason: str | None, page: int) -> tuple[list, int]:
        conditions = self._filtered(period, outcome, reason)
        self.refresh()
        days = stats_days.c
        counted = [days.day >= period.start.date(), days.day < period.end.date()]
        if outcome:
            counted.append(days.outcome == outcome)
        if reason:
            counted.append(days.reason == reason)
        with self.engine.connect() as connection:
            total = int(connection.execute(sa.select(sa.func.coalesce(sa.func.sum(days.sessions), 0)).where(*counted)).scalar_one())
            rows = connection.execute(sa.select(sessions).where(*conditions)
                                      .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
                                      .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
        return rows, total

    def export_rows(self, period: DateRange, outcome: str | None, reason: str | None):
        """Every session of the range, newest first like the dashboard's list, streamed from the database."""
        query = sa.select(sessions).where(*self._filtered(period, outcome, reason)) \
            .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
        with self.engine.connect() as connection:
            for row in connection.execution_options(stream_results=True, yield_per=500).execute(query):
                yield row


def _fold(by_reason, saves, shown: dict[str, int], kinds: dict[str, str]) -> Stats:
    """The dashboard's numbers from the range's groups: (outcome, reason, sessions) for all sessions, and
    (currency, offer, outcome, sessions, monthly amount, offer cost, revenue kept at 90 days, its offers' cost,
    durability sums) for saved sessions and those that chose an offer."""
    result = Stats()
    outcomes, reasons = {}, {}
    for outcome, reason, count in by_reason:
        count = int(count or 0)
        outcomes[outcome] = outcomes.get(outcome, 0) + count
        if reason is not None:
            tally = reasons.setdefault(reason, [0, 0, 0])
            tally[0] += count
            tally[1] += count if outcome in SAVED_OUTCOMES else 0
            tally[2] += count if outcome == "canceled" else 0
    money = {}
    durable = [0] * (2 * len(DURABILITY_DAYS))
    per_offer: dict[str, dict] = {}
    for currency, offer, outcome, count, mrr, cost, kept, kept_cost, *lasting in saves:
        count, mrr, cost = int(count or 0), int(mrr or 0), float(cost or 0)
        if outcome in SAVED_OUTCOMES:
            tally = money.setdefault(currency, [0, 0.0, 0.0])
            tally[0] += mrr
            tally[1] += cost if outcome == "saved_discount" else 0.0
            tally[2] += cost
            durable = [total + int(value or 0) for total, value in zip(durable, lasting)]
        if offer is None:
            continue
        entry = per_offer.setdefault(offer, {"kind": offer_kind_of(outcome), "accepted": 0,
                                             "lasting": [0] * (2 * len(DURABILITY_DAYS)), "money": {}})
        entry["accepted"] += count
        entry["lasting"] = [total + int(value or 0) for total, value in zip(entry["lasting"], lasting)]
        figures = entry["money"].setdefault(currency, [0, 0.0, 0.0, 0.0])
        figures[0] += mrr
        figures[1] += cost
        figures[2] += float(kept or 0)
        figures[3] += float(kept_cost or 0)
    result.outcomes = dict(sorted(outcomes.items()))
    result.sessions = sum(outcomes.values())
    result.saved = sum(outcomes.get(o, 0) for o in SAVED_OUTCOMES)
    result.canceled = outcomes.get("canceled", 0)
    result.save_rate = _rate(result.saved, result.saved + result.canceled)
    result.mrr_saved = [(currency, mrr) for currency, (mrr, _, _) in sorted(money.items())]
    result.discount_cost = [(currency, round(cost)) for currency, (_, cost, _) in sorted(money.items()) if cost]
    result.offer_cost = [(currency, round(cost)) for currency, (_, _, cost) in sorted(money.items()) if cost]
    result.reasons = [{"reason": reason, "sessions": count, "saved": won, "canceled": lost, "save_rate": _rate(won, won + lost)}
                      for reason, (count, won, lost) in sorted(reasons.items(), key=lambda item: (-item[1][0], item[0]))]
    result.durability = _durability(durable)
    offers = []
    for offer in sorted(set(shown) | set(per_offer)):
        entry = per_offer.setdefault(offer, {"kind": kinds.get(offer), "accepted": 0,
                                             "lasting": [0] * (2 * len(DURABILITY_DAYS)), "money": {}})
        offers.append(_offer_figures({"offer": offer, "kind": entry["kind"]}, shown.get(offer, 0), entry))
    result.offers = offers
    result.offer_kinds = _by_kind(offers, per_offer)
    return result


def _durability(lasting: list[int]) -> list[dict]:
    return [{"days": n, "saves": lasting[2 * i], "still_active": lasting[2 * i + 1],
             "share": _rate(lasting[2 * i + 1], lasting[2 * i])} for i, n in enumerate(DURABILITY_DAYS)]


def _offer_figures(head: dict, shown: int, entry: dict) -> dict:
    """Shown, accepted, still active after 30/60/90 days, and per currency: MRR kept, what the offers cost,
    and the revenue kept in the 90 days after accepting net of the cost (over acceptances 90+ days old)."""
    accepted = entry["accepted"]
    known = entry["lasting"][-2] > 0  # some acceptances are 90+ days old
    return {**head, "shown": shown, "accepted": accepted, "rate": _rate(accepted, shown),
            "durability": _durability(entry["lasting"]),
            "money": [{"currency": currency, "mrr": mrr, "cost": round(cost),
                       "revenue_kept_90": round(kept) if known else None,
                       "net_revenue_kept_90": round(kept - kept_cost) if known else None}
                      for currency, (mrr, cost, kept, kept_cost) in sorted(entry["money"].items())]}


def _by_kind(offers: list[dict], per_offer: dict) -> list[dict]:
    kinds: dict[str, dict] = {}
    shown_by_kind: dict[str, int] = {}
    for row in offers:
        if row["kind"] is None:
            continue
        kind = kinds.setdefault(row["kind"], {"accepted": 0, "lasting": [0] * (2 * len(DURABILITY_DAYS)), "money": {}})
        shown_by_kind[row["kind"]] = shown_by_kind.get(row["kind"], 0) + row["shown"]
        entry = per_offer[row["offer"]]
        kind["accepted"] += entry["accepted"]
        kind["lasting"] = [a + b for a, b in zip(kind["lasting"], entry["lasting"])]
        for currency, figures in entry["money"].items():
            into = kind["money"].setdefault(currency, [0, 0.0, 0.0, 0.0])
            for i, value in enumerate(figures):
                into[i] += value
    return [_offer_figures({"kind": kind}, shown_by_kind[kind], kinds[kind]) for kind in sorted(kinds)]


def _previous(groups) -> dict:
    """The summary of the period before: sessions, saved, canceled, save rate, MRR saved per currency."""
    sessions_count = saved = canceled = 0
    mrr: dict[str, int] = {}
    for outcome, currency, count, monthly in groups:
        count = int(count or 0)
        sessions_count += count
        if outcome in SAVED_OUTCOMES:
            saved += count
            mrr[currency] = mrr.get(currency, 0) + int(monthly or 0)
        elif outcome == "canceled":
            canceled += count
    return {"sessions": sessions_count, "saved": saved, "canceled": canceled,
            "save_rate": _rate(saved, saved + canceled), "mrr_saved": sorted(mrr.items())}


def _weeks(period: DateRange, by_day) -> list[dict]:
    """Every week (from Monday) of the range, with the day sums of its days added up, and how many of its
    days are inside the range (below 7: a partial week at either end)."""
    found: dict[date, list[int]] = {}
    for value, count, saves, cancels in by_day:
        day = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        week = found.setdefault(day - timedelta(days=day.weekday()), [0, 0, 0])
        week[0] += int(count or 0)
        week[1] += int(saves or 0)
        week[2] += int(cancels or 0)
    first = period.start.date() - timedelta(days=period.start.weekday())
    last = (period.end - timedelta(microseconds=1)).date()
    weeks = []
    monday = first
    while monday <= last:
        count, saves, cancels = found.get(monday, (0, 0, 0))
        inside = (min(monday + timedelta(days=6), last) - max(monday, period.start.date())).days + 1
        weeks.append({"week": monday, "sessions": count, "saves": saves, "cancels": cancels, "days": inside})
        monday += timedelta(days=7)
    return weeks


def outside_cancellations(engine: Engine, period: DateRange) -> dict:
    """Cancellations in `period` that didn't go through the flow, grouped by Stripe's `cancellation_details`:

        {"count": 3, "monthly_amount": {"usd": 14700},
         "by_reason": [{"reason": "cancellation_requested", "feedback": "too_expensive", "count": 2,
                        "monthly_amount": {"usd": 9800}}, …]}   # most first

    `reason` is Stripe's (cancellation_requested: the client in a portal or the coach; payment_failed: retries ran out;
    canceled_by_retention_policy: Stripe's test-mode clean-up), `feedback` what the client chose there, if asked."""
    table = OutsideCancellation.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.reason, table.c.feedback, table.c.currency, sa.func.count(), sa.func.sum(table.c.monthly_amount))
            .where(period.contains(table.c.canceled_at))
            .group_by(table.c.reason, table.c.feedback, table.c.currency)).all()
    groups: dict[tuple, dict] = {}
    total: dict[str, int] = {}
    for reason, feedback, currency, count, amount in rows:
        group = groups.setdefault((reason, feedback), {"reason": reason, "feedback": feedback, "count": 0,
                                                       "monthly_amount": {}})
        group["count"] += int(count)
        group["monthly_amount"][currency] = group["monthly_amount"].get(currency, 0) + int(amount or 0)
        total[currency] = total.get(currency, 0) + int(amount or 0)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["reason"] or "", g["feedback"] or ""))
    return {"count": sum(g["count"] for g in ordered), "monthly_amount": total, "by_reason": ordered}


def day_start(day: date) -> datetime:
    return as_utc(datetime(day.year, day.month, day.day))
