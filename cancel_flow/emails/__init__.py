"""Billing emails: failed payments (dunning), renewal and discount-ending reminders, confirmations.

    kinds.py      the kinds of billing email (their schedule is the configuration's `[emails]`)
    compose.py    each email's words and its text and HTML (templates/)
    scheduler.py  what is due (`Mailroom.plan`): our invoice records and sessions, Stripe's subscriptions
    records.py    one row per email key, written with its outbox delivery; the send guard; unsubscribes
    sending.py    the outbox dispatcher with the send guard (`GuardedDispatcher`)
    run.py        a pass on demand (`cancel-flow send-due-emails`), in `serve`, and in the demo
"""
