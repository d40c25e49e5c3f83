"""Signed, expiring links: a cancel link names a customer and subscription; a billing link, a customer; a
"keep my plan" link a customer and the subscription set to cancel; a comeback link a customer and a win-back step."""

import binascii
import functools
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from cancel_flow.clock import utc_now
from cancel_flow.errors import ExpiredLink, InvalidLink
from cancel_flow.i18n import N_

_STRIPE_ID = re.compile(r"^[A-Za-z0-9_]{3,255}$")
MAX_TOKEN_LENGTH = 1024
LONGEST_MAX_AGE = 366 * 86400
# A comeback link works for 30 days: long enough to think it over, short enough that an old email's offer ends.
COMEBACK_MAX_AGE = 30 * 86400
NOT_VALID = N_("This link is not valid. Ask for a new one.")
# Cancel links whose signature was checked, kept per process: every page of a link checks it again, and the check
# (HMAC, base64, JSON) costs more than the rest of a repeat view's own work. Expiry is checked on every read.
CHECKED_LINKS_KEPT = 4096


@dataclass(frozen=True)
class CancelLink:
    customer: str
    subscription: str
    nonce: str


@dataclass(frozen=True)
class BillingLink:
    customer: str


@dataclass(frozen=True)
class ComebackLink:
    customer: str
    step: int


class LinkSigner:
    def __init__(self, secret_key: str, cancel_max_age: int, billing_max_age: int):
        self._cancel = _Serializer(secret_key, salt="cancel-flow.cancel-link")
        self._billing = _Serializer(secret_key, salt="cancel-flow.billing-link")
        self._keep = _Serializer(secret_key, salt="cancel-flow.keep-link")
        self._comeback = _Serializer(secret_key, salt="cancel-flow.comeback-link")
        self._declaration = _Serializer(secret_key, salt="cancel-flow.declaration-undo")
        self.cancel_max_age, self.billing_max_age = cancel_max_age, billing_max_age
        # token -> (the link, when it was signed, the seconds it is valid): only links that were valid when checked
        self._checked: OrderedDict[str, tuple[CancelLink, datetime, int]] = OrderedDict()

    def cancel_token(self, customer: str, subscription: str, max_age: int | None = None) -> tuple[str, datetime]:
        """A fresh cancel link; `max_age` (seconds, up to a year) overrides the setting for this link."""
        payload = {"c": customer, "s": subscription, "n": secrets.token_urlsafe(16)}
        if max_age is not None:
            payload["m"] = min(int(max_age), LONGEST_MAX_AGE)
        return self._cancel.dumps(payload), utc_now() + timedelta(seconds=payload.get("m", self.cancel_max_age))

    def billing_token(self, customer: str) -> tuple[str, datetime]:
        return self._billing.dumps({"c": customer}), utc_now() + timedelta(seconds=self.billing_max_age)

    def declaration_token(self, declaration_id: int, max_age: int) -> str:
        """The "This wasn't me" link of a cancel-button declaration, valid `max_age` seconds (up to a year)."""
        return self._declaration.dumps({"d": int(declaration_id), "m": max(60, min(int(max_age), LONGEST_MAX_AGE))})

    def read_declaration(self, token: str) -> int:
        payload = _load(self._declaration, token, LONGEST_MAX_AGE)
        declaration = payload.get("d") if isinstance(payload, dict) else None
        if isinstance(declaration, bool) or not isinstance(declaration, int) or declaration < 1:
            raise InvalidLink(N_("This link is not valid."))
        return declaration

    def read_cancel(self, token: str) -> CancelLink:
        checked = self._checked.get(token)
        if checked is not None:
            link, signed_at, allowed = checked
            # the same test as a first check: the signer's own limit (by its clock), then the link's
            age = int(time.time()) - int(signed_at.timestamp())
            if age > LONGEST_MAX_AGE or age < 0 or (utc_now() - signed_at).total_seconds() > allowed:
                self._checked.pop(token, None)
                raise _expired()
            return link
        payload, signed_at, allowed = _load_timed(self._cancel, token, self.cancel_max_age)
        fields = (payload.get("c"), payload.get("s"), payload.get("n")) if isinstance(payload, dict) else ()
        if len(fields) != 3 or not all(isinstance(f, str) and _STRIPE_ID.match(f.replace("-", "_")) for f in fields):
            raise InvalidLink(NOT_VALID)
        link = CancelLink(*fields)
        self._checked[token] = (link, signed_at, allowed)
        while len(self._checked) > CHECKED_LINKS_KEPT:
            try:
                self._checked.popitem(last=False)
            except KeyError:  # emptied meanwhile by another thread
                break
        return link

    def read_billing(self, token: str) -> BillingLink:
        payload = _load(self._billing, token, self.billing_max_age)
        customer = payload.get("c") if isinstance(payload, dict) else None
        if not isinstance(customer, str) or not _STRIPE_ID.match(customer):
            raise InvalidLink(NOT_VALID)
        return BillingLink(customer)


    def keep_token(self, customer: str, subscription: str, max_age: int) -> str:
        """A "keep my plan" link for a subscription set to cancel, valid `max_age` seconds (until it ends)."""
        return self._keep.dumps({"c": customer, "s": subscription, "n": secrets.token_urlsafe(16),
                                 "m": min(int(max_age), LONGEST_MAX_AGE)})

    def read_keep(self, token: str) -> CancelLink:
        """The link as a CancelLink: its nonce names the session a keep through it is recorded in, when the
        subscription has no session to record it in yet."""
        payload = _load(self._keep, token, self.cancel_max_age)
        fields = (payload.get("c"), payload.get("s"), payload.get("n")) if isinstance(payload, dict) else ()
        if len(fields) != 3 or not all(isinstance(f, str) and _STRIPE_ID.match(f.replace("-", "_")) for f in fields):
            raise InvalidLink(NOT_VALID)
        return CancelLink(*fields)

    def comeback_token(self, customer: str, step: int) -> str:
        """A comeback link: only the customer and the win-back step; it works for 30 days."""
        return self._comeback.dumps({"c": customer, "s": int(step)})

    def read_comeback(self, token: str) -> ComebackLink:
        payload = _load(self._comeback, token, COMEBACK_MAX_AGE)
        customer, step = (payload.get("c"), payload.get("s")) if isinstance(payload, dict) else (None, None)
        if not isinstance(customer, str) or not _STRIPE_ID.match(customer) or isinstance(step, bool) \
                or not isinstance(step, int) or not 1 <= step <= 1000 or "m" in payload:
            raise InvalidLink(NOT_VALID)
        return ComebackLink(customer, step)


def _load(serializer: URLSafeTimedSerializer, token: str, max_age: int):
    """The signed payload; a link may carry its own max age (`m`), else the setting applies."""
    return _load_timed(serializer, token, max_age)[0]


class _SoundTokens:
    """`serializer.loads(token, max_age=LONGEST_MAX_AGE, return_timestamp=True)` for a token it would accept, in a
    few C calls: the same HMAC-SHA1 under the same derived key, the same base64 and JSON, the same age limits. What
    itsdangerous does in a hundred and more Python calls (a pure-Python HMAC among them, and the key derived anew
    each time) was most of the cost of a new link's check. Anything this doesn't accept as it is (a signature that
    doesn't verify, a compressed payload, a bad timestamp, an age out of bounds) is None, and the serializer itself
    reads the token and raises its own error."""

    def __init__(self, serializer: URLSafeTimedSerializer):
        signer = serializer.make_signer()
        # the simple case only: one secret key, itsdangerous's own key derivation and HMAC-SHA1
        self.key = signer.derive_key() if len(signer.secret_keys) == 1 and signer.key_derivation == "django-concat" \
            and signer.sep == b"." \
            and type(signer.algorithm).__name__ == "HMACAlgorithm" and signer.digest_method.__name__ == "_lazy_sha1" \
            else None
        # the key's HMAC set up once (OpenSSL looks the digest up anew in every `hmac.digest`): copied per token
        self.keyed = hmac.new(self.key, digestmod="sha1") if self.key is not None else None

    def read(self, token: str, max_age: int) -> tuple[object, datetime] | None:
        if self.key is None:
            return None
        try:
            signed = token.encode("ascii")
            value, _, signature = signed.rpartition(b".")
            mac = self.keyed.copy()
            mac.update(value)
            if not hmac.compare_digest(_base64(signature), mac.digest()):
                return None
            payload, dot, stamp = value.rpartition(b".")
            stamp = _base64(stamp)
            if not dot or payload[:1] == b"." or len(stamp) > 8:
                return None
            signed_at = int.from_bytes(stamp, "big")
            age = int(time.time()) - signed_at
            if age > max_age or age < 0:
                return None
            # orjson reads a subset of what json reads, the same way: a payload it refuses goes the long way
            return orjson.loads(_base64(payload)), datetime.fromtimestamp(signed_at, tz=timezone.utc)
        except (ValueError, TypeError, OverflowError, OSError):  # UnicodeError, binascii's and orjson's are ValueErrors
            return None


_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def _base64(text: bytes) -> bytes:
    """`base64.urlsafe_b64decode` of the text padded as itsdangerous pads it, in one C call."""
    return binascii.a2b_base64(text.translate(_URL_SAFE) + b"=" * (-len(text) % 4))


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous's serializer, with the short way for the tokens it accepts (`sound`)."""

    @functools.cached_property
    def sound(self) -> _SoundTokens:
        return _SoundTokens(self)


def _load_timed(serializer: URLSafeTimedSerializer, token: str, max_age: int) -> tuple[object, datetime, int]:
    """`_load`, with when the link was signed and the seconds it is valid."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidLink(NOT_VALID)
    read = serializer.sound.read(token, LONGEST_MAX_AGE) if isinstance(serializer, _Serializer) else None
    if read is not None:
        payload, signed_at = read
    else:
        try:
            payload, signed_at = serializer.loads(token, max_age=LONGEST_MAX_AGE, return_timestamp=True)
        except SignatureExpired:
            raise _expired() from None
        except (BadData, UnicodeError, ValueError):  # BadData: a bad signature, or a signed payload that isn't JSON
            raise InvalidLink(NOT_VALID) from None
    allowed = payload.get("m", max_age) if isinstance(payload, dict) else max_age
    if not isinstance(allowed, int) or (utc_now() - signed_at).total_seconds() > allowed:
        raise _expired()
    return payload, signed_at, allowed


def _expired() -> ExpiredLink:
    return ExpiredLink(N_("This link has expired. Links stay valid for a limited time, so that nobody else can use them."))
