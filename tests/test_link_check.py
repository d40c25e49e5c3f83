"""A link's check takes a short way for the tokens itsdangerous accepts: it must accept exactly those, with the
same payload and the same signing time, and leave every other token to itsdangerous and its errors."""

import base64
import json
import zlib
from datetime import timedelta

import pytest
from freezegun import freeze_time
from itsdangerous import URLSafeTimedSerializer

from cancel_flow.errors import ExpiredLink, InvalidLink
from cancel_flow.links import LONGEST_MAX_AGE, LinkSigner

SECRET = "test-secret-key-for-the-link-check-0123456789"


def _outcome(call):
    try:
        return ("ok", call())
    except (InvalidLink, ExpiredLink) as error:
        return (type(error).__name__, str(error))


def _itsdangerous(token: str, salt: str):
    """What the serializer alone says of a token."""
    try:
        return ("ok", URLSafeTimedSerializer(SECRET, salt=salt).loads(token, max_age=LONGEST_MAX_AGE,
                                                                       return_timestamp=True))
    except Exception as error:  # noqa: BLE001 - the kind of refusal is what is compared
        return ("refused", type(error).__name__)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _tokens(signer: LinkSigner) -> list[str]:
    good, _ = signer.cancel_token("cus_ABC123", "sub_DEF456")
    value, signature = good.rsplit(".", 1)
    payload, stamp = value.rsplit(".", 1)
    other_secret = LinkSigner("another-secret-key-0123456789abcdef", 86400, 86400).cancel_token("cus_ABC123", "sub_DEF456")[0]
    wrong_salt, _ = signer.billing_token("cus_ABC123")
    serializer = URLSafeTimedSerializer(SECRET, salt="cancel-flow.cancel-link")
    # a payload long enough that itsdangerous compresses it (a "." before the payload)
    compressed = serializer.dumps({"c": "cus_ABC123", "s": "sub_DEF456", "n": "x" * 400})
    signer_of = serializer.make_signer()
    unsigned_stamp = lambda stamp_bytes: signer_of.sign(f"{payload}.{_b64(stamp_bytes)}".encode()).decode()
    return [
        good,
        compressed,
        other_secret,
        wrong_salt,
        f"{payload}.{stamp}.{signature[:-1]}A" if not signature.endswith("A") else f"{payload}.{stamp}.{signature[:-1]}B",
        f"{payload[:-1]}x.{stamp}.{signature}",
        f"{payload}.{stamp}.{signature}==",            # padding itsdangerous adds or ignores
        f"{payload}.{stamp}.{signature[:5]}!{signature[5:]}",  # a character base64 skips
        f"{payload}.{stamp}",
        f"{payload}{stamp}{signature}",
        "",
        "é" + good,
        good + ".",
        unsigned_stamp(b"\x00" * 9 + b"\x01"),         # a timestamp longer than 8 bytes, signed
        unsigned_stamp((2 ** 62).to_bytes(8, "big")),  # far in the future
        unsigned_stamp((1).to_bytes(8, "big")),        # 1970: older than any link may be
        signer_of.sign(f"{_b64(b'not json')}.{stamp}".encode()).decode(),
        signer_of.sign(f"{_b64(json.dumps([1, 2]).encode())}.{stamp}".encode()).decode(),
        signer_of.sign(f".{_b64(zlib.compress(b'{}'))}.{stamp}".encode()).decode(),
        signer_of.sign(f"{_b64(b'{}')}.{stamp}".encode()).decode(),
    ]


def test_the_short_way_accepts_exactly_what_itsdangerous_accepts_with_the_same_payload_and_time():
    signer = LinkSigner(SECRET, 86400, 86400)
    tokens = _tokens(signer)
    accepted = 0
    for token in tokens:
        expected = _itsdangerous(token, "cancel-flow.cancel-link")
        short = signer._cancel.sound.read(token, LONGEST_MAX_AGE)
        if expected[0] == "ok":
            accepted += 1
            # the short way may leave a token it doesn't handle (compressed) to itsdangerous, never read it otherwise
            assert short is None or short == expected[1], token
        else:
            assert short is None, token
    assert accepted >= 4  # good, compressed and the re-signed payloads: the comparison covers accepted tokens
    assert signer._cancel.sound.read(tokens[0], LONGEST_MAX_AGE) is not None  # and the short way is taken


def test_a_link_reads_the_same_whichever_way_is_taken():
    """`read_cancel` of every token gives what it gave with itsdangerous alone: the link, or the same error."""
    signer = LinkSigner(SECRET, 86400, 86400)
    slow = LinkSigner(SECRET, 86400, 86400)
    slow._cancel.sound.key = None  # itsdangerous alone
    for token in _tokens(signer):
        assert _outcome(lambda: signer.read_cancel(token)) == _outcome(lambda: slow.read_cancel(token)), token


def test_an_expired_or_not_yet_valid_link_is_refused_on_the_short_way_too():
    signer = LinkSigner(SECRET, 3600, 86400)
    with freeze_time("2026-12-01 12:00:00"):
        token, _ = signer.cancel_token("cus_ABC123", "sub_DEF456")
        fresh_signer = LinkSigner(SECRET, 3600, 86400)
        assert fresh_signer.read_cancel(token).customer == "cus_ABC123"
    with freeze_time("2026-12-01 13:00:01"):
        with pytest.raises(ExpiredLink):
            LinkSigner(SECRET, 3600, 86400).read_cancel(token)
    with freeze_time("2026-12-01 11:59:00"):  # signed "in the future" by this clock
        with pytest.raises(ExpiredLink):
            LinkSigner(SECRET, 3600, 86400).read_cancel(token)
    with freeze_time("2026-12-01 12:00:00") as clock:
        token, _ = signer.cancel_token("cus_ABC123", "sub_DEF456", max_age=60)
        clock.tick(timedelta(seconds=61))
        with pytest.raises(ExpiredLink):
            LinkSigner(SECRET, 3600, 86400).read_cancel(token)
