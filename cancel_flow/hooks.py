"""Outgoing events: what they carry, how they are signed (Standard Webhooks), and the coach's alerts.

Signing follows https://www.standardwebhooks.com/ (the `standardwebhooks` verifier accepts it):
`webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`,
keyed with the base64 bytes after `whsec_`. Pure functions: the outbox stores and sends what they build.
"""

import base64
import hashlib
import hmac
import html
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from cancel_flow.clock import unix_now, utc_now
from cancel_flow.money import format_money
from cancel_flow.reasons import REASONS

EVENTS = {
    "session.saved": "a subscriber accepted an offer and stays",
    "session.canceled": "a cancellation was confirmed by Stripe",
    "session.deflected": "a subscriber left the flow but is still subscribed a day later",
    "contact.requested": "a subscriber asked to talk to the coach before canceling",
    "payment.failed": "a subscription payment failed",
    "payment.recovered": "a payment went through after a failure",
}
MAX_URL = 2048


# Signing ---------------------------------------------------------------------------------------

def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt: same id on every retry, the attempt's own time."""
    timestamp = unix_now() if timestamp is None else timestamp
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, message_id, timestamp, body)}


def event_body(event_id: str, event_type: str, data: dict, at: datetime | None = None) -> str:
    """The JSON sent for an event, built once: every retry sends these exact bytes."""
    at = at or utc_now()
    return json.dumps({"id": event_id, "type": event_type,
                       "timestamp": at.isoformat(timespec="seconds").replace("+00:00", "Z"), "data": data},
                      separators=(",", ":"))


# Payloads --------------------------------------------------------------------------------------

def is_test_mode(api_key: str | None) -> bool:
    return bool(api_key) and api_key.startswith(("sk_test_", "rk_test_"))


def stripe_customer_url(customer_id: str, test_mode: bool) -> str:
    return f"https://dashboard.stripe.com/{'test/' if test_mode else ''}customers/{customer_id}"


def event_data(*, customer_id: str, test_mode: bool, customer_email: str | None = None,
               customer_name: str | None = None, subscription_id: str | None = None, plan: str | None = None,
               monthly_amount: int | None = None, currency: str | None = None, reason: str | None = None,
               comment: str | None = None, **extra) -> dict:
    """The fields every event carries; `extra` adds the event's own (offer, invoice, session…)."""
    return {
        "customer": {"id": customer_id, "email": customer_email, "name": customer_name,
                     "stripe_url": stripe_customer_url(customer_id, test_mode)},
        "subscription": subscription_id,
        "plan": plan,
        "monthly_amount": monthly_amount,
        "currency": currency,
        "monthly_amount_text": format_money(monthly_amount, currency) if monthly_amount is not None and currency else None,
        "reason": reason,
        "reason_text": REASONS.get(reason) if reason else None,
        "comment": comment,
        **extra,
    }


def _iso(moment) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds") if moment.tzinfo else moment.isoformat(timespec="seconds") + "+00:00"


def session_data(session, *, test_mode: bool, customer_name: str | None = None, offer_title: str | None = None,
                 **extra) -> dict:
    """Event data from a cancel session row (a CancelSession or a row with its columns).

    The accepted offer's terms are the words the subscriber was shown (`promise`), when the row has them."""
    offer = None
    if getattr(session, "chosen_offer", None):
        offer = {"id": session.chosen_offer, "kind": getattr(session, "offer_kind", None), "title": offer_title,
                 "terms": getattr(session, "promise", None)}
    return event_data(
        customer_id=session.customer_id, test_mode=test_mode, customer_email=session.customer_email,
        customer_name=customer_name, subscription_id=session.subscription_id, plan=session.plan_name,
        monthly_amount=session.monthly_amount, currency=session.currency, reason=session.reason,
        comment=session.comment, offer=offer,
        session={"id": session.id, "outcome": session.outcome, "started_at": _iso(session.created_at)},
        **extra)


def invoice_fields(invoice_id: str, amount: int, currency: str, failure_message: str | None = None) -> dict:
    """The `invoice` of payment.failed / payment.recovered: pass as `event_data(..., invoice=…)`."""
    return {"id": invoice_id, "amount": amount, "currency": currency, "amount_text": format_money(amount, currency),
            "failure_message": failure_message}


def sample_data(event_type: str) -> dict:
    """Realistic data for an event, for Zapier's and Make's set-up screens."""
    session_events = {"session.saved", "session.canceled", "session.deflected", "contact.requested"}
    offers = {
        "session.saved": {"id": "half-off-3-payments", "kind": "discount", "title": "Stay for half price",
                          "terms": "50% off your next 3 payments: $24.50 instead of $49.00"},
        "contact.requested": {"id": "talk", "kind": "contact", "title": "Talk to your coach first", "terms": None},
    }
    outcomes = {"session.saved": "saved_discount", "session.canceled": "canceled", "session.deflected": "deflected",
                "contact.requested": "contact_requested"}
    extra = {}
    if event_type in session_events:
        extra["offer"] = offers.get(event_type)
        extra["session"] = {"id": 1042, "outcome": outcomes[event_type], "started_at": "2026-11-24T09:30:00+00:00"}
    else:
        extra["invoice"] = invoice_fields("in_1SampleInvoice", 4900, "usd",
                                          "Your card was declined." if event_type == "payment.failed" else None)
    return event_data(
        customer_id="cus_SampleCustomer", test_mode=True, customer_email="casey@example.com",
        customer_name="Casey Client", subscription_id="sub_SampleSubscription", plan="Coaching Plan",
        monthly_amount=4900, currency="usd",
        reason="too_expensive" if event_type in session_events else None,
        comment="Money is tight this quarter." if event_type in session_events else None, **extra)


def sample_event(event_type: str) -> dict:
    return json.loads(event_body("evt_sample000000000000000000", event_type, sample_data(event_type),
                                 datetime.fromisoformat("2026-11-24T09:35:00+00:00")))


# URLs ------------------------------------------------------------------------------------------

def url_problem(url: object) -> str | None:
    """Why this can't be a webhook or Slack address (its form only; addresses are checked when sending)."""
    if not isinstance(url, str) or not url.strip():
        return "the URL must be a non-empty string"
    if len(url) > MAX_URL:
        return f"the URL must be at most {MAX_URL} characters"
    if any(ch.isspace() for ch in url) or any(ord(ch) < 32 for ch in url):
        return "the URL must not contain spaces"
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        return "the URL is not valid"
    if parts.scheme not in ("http", "https"):
        return "the URL must start with https:// (or http://)"
    if not parts.hostname:
        return "the URL needs a host name"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry a user name or password"
    return None


# Alerts ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertText:
    headline: str
    lines: tuple[tuple[str, str], ...]  # (label, value)
    link: str | None


def _who(customer: dict) -> str:
    name, email = customer.get("name"), customer.get("email")
    if name and email:
        return f"{name} ({email})"
    return name or email or customer.get("id") or "A subscriber"


def _clip(text: str | None, limit: int = 1000) -> str | None:
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def alert_text(event_type: str, data: dict) -> AlertText:
    """What happened, in words a coach reads on a phone: who, plan, reason, comment, choice, link."""
    customer = data.get("customer") or {}
    who = _who(customer)
    plan = data.get("plan") or "their plan"
    offer = data.get("offer") or {}
    invoice = data.get("invoice") or {}
    amount = invoice.get("amount_text") or (
        format_money(invoice["amount"], invoice["currency"]) if invoice.get("amount") is not None and invoice.get("currency") else None)
    headlines = {
        "session.saved": f"{who} stays on {plan}",
        "session.canceled": f"{who} canceled {plan}",
        "session.deflected": f"{who} went to cancel {plan} but is still subscribed",
        "contact.requested": f"{who} wants to talk before canceling {plan}",
        "payment.failed": f"{who}: a payment{' of ' + amount if amount else ''} for {plan} failed",
        "payment.recovered": f"{who}: the payment{' of ' + amount if amount else ''} for {plan} went through",
    }
    choices = {
        "session.saved": "Accepted " + (f"“{offer.get('title')}”" if offer.get("title") else (offer.get("id") or "an offer"))
                         + (f": {offer['terms']}" if offer.get("terms") else ""),
        "session.canceled": "Canceled",
        "session.deflected": "Left without canceling",
        "contact.requested": "Asked to talk to you",
    }
    lines = []
    if data.get("monthly_amount_text"):
        lines.append(("Plan", f"{plan}, {data['monthly_amount_text']} a month"))
    elif data.get("plan"):
        lines.append(("Plan", plan))
    if data.get("reason_text"):
        lines.append(("Reason", data["reason_text"]))
    comment = _clip(data.get("comment"))
    if comment:
        lines.append(("Comment", f"“{comment}”"))
    if event_type in choices:
        lines.append(("Chose", choices[event_type]))
    if invoice.get("failure_message"):
        lines.append(("Why", _clip(invoice["failure_message"], 300)))
    return AlertText(headline=headlines.get(event_type, f"{who}: {event_type}"), lines=tuple(lines),
                     link=customer.get("stripe_url"))


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(event_type: str, data: dict) -> dict:
    """A Slack incoming-webhook body: `text` for notifications, one mrkdwn section for the message."""
    alert = alert_text(event_type, data)
    body = [f"*{_slack_escape(alert.headline)}*"]
    body += [f"{label}: {_slack_escape(value)}" for label, value in alert.lines]
    if alert.link:
        body.append(f"<{alert.link}|Open the customer in Stripe>")
    return {"text": alert.headline, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(body)}}]}


def email_message(event_type: str, data: dict) -> dict:
    """Subject, plain text and HTML of the coach's email alert."""
    alert = alert_text(event_type, data)
    text = [alert.headline, ""] + [f"{label}: {value}" for label, value in alert.lines]
    rows = "".join(f"<tr><th align=\"left\" style=\"padding-right:12px\">{html.escape(label)}</th>"
                   f"<td>{html.escape(value)}</td></tr>" for label, value in alert.lines)
    link_html = ""
    if alert.link:
        text += ["", "Open the customer in Stripe:", alert.link]
        link_html = f'<p><a href="{html.escape(alert.link)}">Open the customer in Stripe</a></p>'
    return {"subject": alert.headline[:200], "text": "\n".join(text) + "\n",
            "html": f"<p><strong>{html.escape(alert.headline)}</strong></p><table>{rows}</table>{link_html}"}


def endpoint_disabled_message(url: str, failing_since: datetime) -> dict:
    """The coach's email when an endpoint is switched off after failing for days."""
    since = failing_since.strftime("%d %B %Y %H:%M UTC")
    text = (f"cancel-flow stopped sending events to {url}: every delivery has failed since {since}.\n\n"
            "Undelivered events are listed on the dashboard's deliveries page (/dashboard/deliveries), where you can "
            "resend them once the receiver works again; a successful resend switches the endpoint back on.\n")
    return {"subject": "Webhook endpoint switched off after failing for 3 days", "text": text,
            "html": "".join(f"<p>{html.escape(paragraph)}</p>" for paragraph in text.strip().split("\n\n"))}
