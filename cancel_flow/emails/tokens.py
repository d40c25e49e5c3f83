"""The signed one-click unsubscribe link (no login): a customer and a kind of email, no expiry."""

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from cancel_flow.emails.kinds import UNSUBSCRIBABLE
from cancel_flow.errors import InvalidLink
from cancel_flow.i18n import N_

SALT = "cancel-flow.unsubscribe"


@dataclass(frozen=True)
class UnsubscribeLink:
    customer: str
    kind: str


def unsubscribe_token(secret_key: str, customer_id: str, kind: str) -> str:
    return URLSafeSerializer(secret_key, salt=SALT).dumps({"c": customer_id, "k": kind})


def read_unsubscribe(secret_key: str, token: str) -> UnsubscribeLink:
    payload = None
    if token and len(token) < 1024:
        try:
            payload = URLSafeSerializer(secret_key, salt=SALT).loads(token)
        except (BadSignature, UnicodeError, ValueError):
            payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), str) or payload.get("k") not in UNSUBSCRIBABLE:
        raise InvalidLink(N_("Check that the whole link was copied from the email."))
    return UnsubscribeLink(payload["c"], payload["k"])
