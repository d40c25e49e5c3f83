"""How often each offer was shown and accepted over the last days, for the offers settings page: the
dashboard's own daily roll-ups (store/stats.py), so the numbers equal its "Last 90 days" per-offer table."""

from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import StatsDay, StatsDayOffer
from cancel_flow.store.stats import StatsQueries

days = StatsDay.__table__
offers_shown = StatsDayOffer.__table__


@dataclass(frozen=True)
class OfferCount:
    shown: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float | None:
        return self.accepted / self.shown if self.shown else None


def offer_counts(engine: Engine, last_days: int = 90, today: date | None = None) -> dict[str, OfferCount]:
    """Offer id → times shown and accepted in the `last_days` days up to today (days in UTC, today
    included), counted per subscription as the dashboard counts them."""
    StatsQueries(engine).refresh()
    today = today or utc_now().date()
    first = today - timedelta(days=last_days - 1)
    with engine.connect() as connection:
        shown = dict(connection.execute(
            sa.select(offers_shown.c.offer_id, sa.func.sum(offers_shown.c.shown))
            .where(offers_shown.c.day >= first, offers_shown.c.day <= today)
            .group_by(offers_shown.c.offer_id)).all())
        accepted = dict(connection.execute(
            sa.select(days.c.chosen_offer, sa.func.sum(days.c.sessions))
            .where(days.c.day >= first, days.c.day <= today, days.c.chosen_offer.is_not(None))
            .group_by(days.c.chosen_offer)).all())
    return {offer_id: OfferCount(int(shown.get(offer_id) or 0), int(accepted.get(offer_id) or 0))
            for offer_id in set(shown) | set(accepted)}
