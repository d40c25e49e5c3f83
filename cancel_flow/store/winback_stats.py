"""Win-back's figures for the dashboard, `/api/stats` and the CSV: computed by the database from the rows (the win-back
emails sent, the comeback pages opened, the clients back and their monthly amounts), by reason and by step."""

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.models import BillingEmail, CancelSession, WinbackClient, WinbackStep
from cancel_flow.store.stats import DateRange

emails = BillingEmail.__table__
clients = WinbackClient.__table__
steps = WinbackStep.__table__
sessions = CancelSession.__table__
UNKNOWN = "unknown"  # a client whose reason was never given


def _blank() -> dict:
    return {"emails_sent": 0, "pages_opened": 0, "won_back": 0, "mrr_won_back": {}}


def _add_mrr(into: dict, currency: str | None, amount) -> None:
    if currency and amount:
        into["mrr_won_back"][currency] = into["mrr_won_back"].get(currency, 0) + int(amount)


def _money(figures: dict) -> dict:
    return {**figures, "mrr_won_back": [{"currency": c, "amount": a} for c, a in sorted(figures["mrr_won_back"].items())]}


def winback_stats(engine: Engine, period: DateRange) -> dict:
    """Everything in `period` (start inclusive, end exclusive), each figure by when it happened:

        {"emails_sent": 5,          # comeback emails sent
         "pages_opened": 3,         # comeback pages opened (the first view of each step's page)
         "won_back": 1,             # clients back through a comeback checkout
         "mrr_won_back": [{"currency": "usd", "amount": 4900}],   # their monthly amounts, at the regular price
         "by_reason": [{"reason": "too_expensive", …the same four…}],   # the reason they had left for
         "by_step": [{"step": 1, …the same four…}],
         "changed_mind": {"emails_sent": 2, "kept": 1}}   # "changed your mind?" emails, and keeps after one

    The keeps are saves (outcome saved_keep), counted in the save rate like any other."""
    total, by_reason, by_step = _blank(), {}, {}

    def tally(reason, step, field: str, count, currency=None, amount=None) -> None:
        for figures in (total, by_reason.setdefault(reason or UNKNOWN, _blank()),
                        *((by_step.setdefault(int(step), _blank()),) if step is not None else ())):
            figures[field] += int(count or 0)
            if field == "won_back":
                _add_mrr(figures, currency, amount)

    with engine.connect() as connection:
        for reason, step, count in connection.execute(
                sa.select(clients.c.reason, emails.c.step, sa.func.count())
                .select_from(emails.outerjoin(clients, clients.c.subscription_id == emails.c.subscription_id))
                .where(emails.c.kind == "winback", emails.c.status == "sent", period.contains(emails.c.sent_at))
                .group_by(clients.c.reason, emails.c.step)):
            tally(reason, step, "emails_sent", count)
        for reason, step, count in connection.execute(
                sa.select(clients.c.reason, steps.c.step, sa.func.count())
                .select_from(steps.join(clients, clients.c.subscription_id == steps.c.subscription_id))
                .where(period.contains(steps.c.opened_at)).group_by(clients.c.reason, steps.c.step)):
            tally(reason, step, "pages_opened", count)
        for reason, step, currency, count, amount in connection.execute(
                sa.select(clients.c.reason, clients.c.won_back_step, clients.c.won_back_currency, sa.func.count(),
                          sa.func.sum(clients.c.mrr_won_back))
                .where(period.contains(clients.c.won_back_at))
                .group_by(clients.c.reason, clients.c.won_back_step, clients.c.won_back_currency)):
            tally(reason, step, "won_back", count, currency, amount)
        changed_mind = connection.execute(sa.select(sa.func.count()).where(
            emails.c.kind == "changed_mind", emails.c.status == "sent", period.contains(emails.c.sent_at))).scalar_one()
        reminded = sa.exists(sa.select(emails.c.id).where(
            emails.c.kind == "changed_mind", emails.c.status == "sent", emails.c.subscription_id == sessions.c.subscription_id,
            emails.c.sent_at <= sessions.c.kept_at))
        kept = connection.execute(sa.select(sa.func.count()).where(
            sessions.c.outcome == "saved_keep", period.contains(sessions.c.kept_at), reminded)).scalar_one()
    return {**_money(total),
            "by_reason": [{"reason": reason, **_money(figures)} for reason, figures in sorted(by_reason.items())],
            "by_step": [{"step": step, **_money(figures)} for step, figures in sorted(by_step.items())],
            "changed_mind": {"emails_sent": int(changed_mind), "kept": int(kept)}}


def winback_by_subscription(engine: Engine, subscription_ids: list[str]) -> dict[str, dict]:
    """For the CSV: per ended subscription, the comeback emails sent, pages opened, and the return."""
    found: dict[str, dict] = {}
    if not subscription_ids:
        return found
    with engine.connect() as connection:
        for first in range(0, len(subscription_ids), 500):
            chunk = subscription_ids[first:first + 500]
            for sub, count in connection.execute(
                    sa.select(emails.c.subscription_id, sa.func.count()).where(
                        emails.c.kind == "winback", emails.c.status == "sent", emails.c.subscription_id.in_(chunk))
                    .group_by(emails.c.subscription_id)):
                found.setdefault(sub, {})["emails_sent"] = int(count)
            for sub, count in connection.execute(
                    sa.select(steps.c.subscription_id, sa.func.count()).where(
                        steps.c.opened_at.is_not(None), steps.c.subscription_id.in_(chunk)).group_by(steps.c.subscription_id)):
                found.setdefault(sub, {})["pages_opened"] = int(count)
            for row in connection.execute(sa.select(clients.c.subscription_id, clients.c.won_back_step,
                                                    clients.c.mrr_won_back).where(clients.c.subscription_id.in_(chunk))):
                found.setdefault(row.subscription_id, {}).update(won_back_step=row.won_back_step,
                                                                 mrr_won_back=row.mrr_won_back)
    return found
