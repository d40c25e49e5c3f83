"""Signed, expiring links: a cancel link names a customer and subscription; a billing link, a customer."""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from cancel_flow.clock import utc_now
from cancel_flow.errors import ExpiredLink, InvalidLink
from cancel_flow.i18n import N_

_STRIPE_ID = re.compile(r"^[A-Za-z0-9_]{3,255}$")
MAX_TOKEN_LENGTH = 1024
LONGEST_MAX_AGE = 366 * 86400
NOT_VALID = N_("This link is not valid. Ask for a new one.")


@dataclass(frozen=True)
class CancelLink:
    customer: str
    subscription: str
    nonce: str


@dataclass(frozen=True)
class BillingLink:
    customer: str


class LinkSigner:
    def __init__(self, secret_key: str, cancel_max_age: int, billing_max_age: int):
        self._cancel = URLSafeTimedSerializer(secret_key, salt="cancel-flow.cancel-link")
        self._billing = URLSafeTimedSerializer(secret_key, salt="cancel-flow.billing-link")
        self.cancel_max_age, self.billing_max_age = cancel_max_age, billing_max_age

    def cancel_token(self, customer: str, subscription: str, max_age: int | None = None) -> tuple[str, datetime]:
        """A fresh cancel link; `max_age` (seconds, up to a year) overrides the setting for this link."""
        payload = {"c": customer, "s": subscription, "n": secrets.token_urlsafe(16)}
        if max_age is not None:
            payload["m"] = min(int(max_age), LONGEST_MAX_AGE)
        return self._cancel.dumps(payload), utc_now() + timedelta(seconds=payload.get("m", self.cancel_max_age))

    def billing_token(self, customer: str) -> tuple[str, datetime]:
        return self._billing.dumps({"c": customer}), utc_now() + timedelta(seconds=self.billing_max_age)

    def read_cancel(self, token: str) -> CancelLink:
        payload = _load(self._cancel, token, self.cancel_max_age)
        fields = (payload.get("c"), payload.get("s"), payload.get("n")) if isinstance(payload, dict) else ()
        if len(fields) != 3 or not all(isinstance(f, str) and _STRIPE_ID.match(f.replace("-", "_")) for f in fields):
            raise InvalidLink(NOT_VALID)
        return CancelLink(*fields)

    def read_billing(self, token: str) -> BillingLink:
        payload = _load(self._billing, token, self.billing_max_age)
        customer = payload.get("c") if isinstance(payload, dict) else None
        if not isinstance(customer, str) or not _STRIPE_ID.match(customer):
            raise InvalidLink(NOT_VALID)
        return BillingLink(customer)


def _load(serializer: URLSafeTimedSerializer, token: str, max_age: int):
    """The signed payload; a link may carry its own max age (`m`), else the setting applies."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidLink(NOT_VALID)
    try:
        payload, signed_at = serializer.loads(token, max_age=LONGEST_MAX_AGE, return_timestamp=True)
    except SignatureExpired:
        raise _expired() from None
    except (BadSignature, UnicodeError, ValueError):
        raise InvalidLink(NOT_VALID) from None
    allowed = payload.get("m", max_age) if isinstance(payload, dict) else max_age
    if not isinstance(allowed, int) or (utc_now() - signed_at).total_seconds() > allowed:
        raise _expired()
    return payload


def _expired() -> ExpiredLink:
    return ExpiredLink(N_("This link has expired. Links stay valid for a limited time, so that nobody else can use them."))
