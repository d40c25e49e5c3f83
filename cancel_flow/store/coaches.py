"""Coach accounts, their session generations, and the login throttle's counters."""

import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import Coach, CoachToken, LoginAttempt
from cancel_flow.store.api_keys import digest, prune_windows, window_counter

coaches = Coach.__table__
attempts = LoginAttempt.__table__
tokens = CoachToken.__table__
ROLES = ("owner", "editor", "viewer")


def _lock_owners(connection) -> None:
    """PostgreSQL: hold the owners' rows, so two changes at once can't both take away the last two owners
    (SQLite runs one write at a time, and the conditional statement below decides alone)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(coaches.c.id).where(coaches.c.role == "owner").with_for_update())


def _another_owner_left():
    """The condition under which a coach may stop being an owner: they aren't one, or another one is left."""
    other = coaches.alias("other")
    others = sa.select(sa.func.count()).select_from(other).where(other.c.role == "owner")
    return sa.or_(coaches.c.role != "owner", others.scalar_subquery() > 1)


@dataclass(frozen=True)
class Throttle:
    """How many failed logins a window allows per (email, address) and per address."""

    per_pair: int
    per_address: int
    window: timedelta


def _keys(email: str, address: str) -> tuple[str, str]:
    return digest(f"pair|{email}|{address}"), digest(f"address|{address}")


@dataclass(frozen=True)
class Attempt:
    refused_by: str | None  # "pair" or "address" when the throttle refused it (nothing was counted then)
    coach: object | None  # the coach row for the email, if any (only looked up when not refused)


class CoachStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._count_failure = window_counter(engine, attempts, "failures")

    def add(self, email: str, password_hash: str, role: str = "owner", on_added=None) -> bool:
        """False when a coach with that email exists already. The session generation starts at a random
        number, so a cookie of a removed coach whose id SQLite gives to a new one does not match it.
        `on_added(connection)` runs in the same transaction (the audit row of the change)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        try:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(coaches).values(email=email, password_hash=password_hash,
                                                             created_at=utc_now(), role=role,
                                                             session_generation=secrets.randbelow(2**30)))
                if on_added is not None:
                    on_added(connection)
        except sa.exc.IntegrityError:
            return False
        return True

    def set_password(self, email: str, password_hash: str) -> bool:
        """The new password, and every session signed in with the old one ends; False for an unknown email."""
        with self.engine.begin() as connection:
            return connection.execute(sa.update(coaches).where(coaches.c.email == email).values(
                password_hash=password_hash, session_generation=coaches.c.session_generation + 1)).rowcount == 1

    def remove(self, email: str, on_removed=None) -> str:
        """"removed" (every session of that login ends with it), "missing", or "last_owner" (nothing changed:
        the account would be left without an owner). `on_removed(connection, row)` runs in the same transaction."""
        with self.engine.begin() as connection:
            _lock_owners(connection)
            row = connection.execute(sa.select(coaches).where(coaches.c.email == email)).first()
            if row is None:
                return "missing"
            removed = connection.execute(sa.delete(coaches).where(coaches.c.id == row.id, _another_owner_left())).rowcount
            if not removed:
                return "last_owner"
            if on_removed is not None:
                on_removed(connection, row)
            return "removed"

    def set_role(self, email: str, role: str, on_changed=None) -> str:
        """"changed", "unchanged", "missing", or "last_owner" (nothing changed: the last owner can't step
        down). `on_changed(connection, row)` runs in the same transaction, with the row as it was."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self.engine.begin() as connection:
            _lock_owners(connection)
            row = connection.execute(sa.select(coaches).where(coaches.c.email == email)).first()
            if row is None:
                return "missing"
            if row.role == role:
                return "unchanged"
            keeps_an_owner = _another_owner_left() if role != "owner" else sa.true()
            if not connection.execute(sa.update(coaches).where(coaches.c.id == row.id, keeps_an_owner)
                                      .values(role=role)).rowcount:
                return "last_owner"
            if on_changed is not None:
                on_changed(connection, row)
            return "changed"

    def all(self) -> list:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(coaches).order_by(coaches.c.created_at, coaches.c.id)).all())

    def add_first_owner(self, email: str, password_hash: str, on_added=None) -> bool:
        """The first login of a new deployment, an owner; False (nothing written) once any login exists."""
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":  # two first owners at once: one waits, then finds the other
                connection.execute(sa.text("LOCK TABLE coach IN SHARE ROW EXCLUSIVE MODE"))
            values = sa.select(sa.literal(email), sa.literal(password_hash), sa.literal(utc_now(), coaches.c.created_at.type),
                               sa.literal("owner"), sa.literal(secrets.randbelow(2**30))) \
                .where(~sa.exists(sa.select(coaches.c.id)))
            added = connection.execute(sa.insert(coaches).from_select(
                ["email", "password_hash", "created_at", "role", "session_generation"], values)
                .returning(coaches.c.id)).first() is not None
            if added and on_added is not None:
                on_added(connection)
            return added

    # single-use links: invitations and password resets ------------------------------------------
    def issue_token(self, kind: str, email: str, lifetime: timedelta, *, role: str | None = None,
                    created_by: str | None = None, on_issued=None) -> str:
        """A new single-use token of this kind for the email (the email's earlier unused ones of the kind stop
        working); only its hash is stored. `on_issued(connection)` runs in the same transaction."""
        raw = secrets.token_urlsafe(32)
        now = utc_now()
        with self.engine.begin() as connection:
            connection.execute(sa.delete(tokens).where(tokens.c.kind == kind, tokens.c.email == email,
                                                       tokens.c.used_at.is_(None)))
            connection.execute(sa.insert(tokens).values(token_hash=digest(f"coach-token|{raw}"), kind=kind, email=email,
                                                        role=role, created_by=created_by, created_at=now,
                                                        expires_at=now + lifetime))
            if on_issued is not None:
                on_issued(connection)
        return raw

    def valid_token(self, kind: str, raw: str):
        """The token's row while it is unused and unexpired, else None."""
        if not raw or len(raw) > 100:
            return None
        with self.engine.connect() as connection:
            return connection.execute(sa.select(tokens).where(
                tokens.c.token_hash == digest(f"coach-token|{raw}"), tokens.c.kind == kind, tokens.c.used_at.is_(None),
                tokens.c.expires_at > utc_now())).first()

    def _use(self, connection, kind: str, raw: str):
        """Mark the token used, in one conditional UPDATE: of two requests with it, one gets its row."""
        if not raw or len(raw) > 100:
            return None
        return connection.execute(sa.update(tokens).where(
            tokens.c.token_hash == digest(f"coach-token|{raw}"), tokens.c.kind == kind, tokens.c.used_at.is_(None),
            tokens.c.expires_at > utc_now()).values(used_at=utc_now()).returning(tokens.c.email, tokens.c.role)).first()

    def accept_invite(self, raw: str, password_hash: str, on_joined=None) -> tuple[str, object | None]:
        """("joined", coach row), or ("invalid", None) for an unknown, used or expired invitation, or ("taken", None)
        when a login with that email exists already (the invitation stays unused). `on_joined(connection, row)`
        runs in the same transaction."""
        try:
            with self.engine.begin() as connection:
                invited = self._use(connection, "invite", raw)
                if invited is None:
                    return "invalid", None
                connection.execute(sa.insert(coaches).values(
                    email=invited.email, password_hash=password_hash, created_at=utc_now(),
                    role=invited.role or "viewer", session_generation=secrets.randbelow(2**30)))
                row = connection.execute(sa.select(coaches).where(coaches.c.email == invited.email)).first()
                if on_joined is not None:
                    on_joined(connection, row)
                return "joined", row
        except sa.exc.IntegrityError:  # the whole transaction rolled back: the invitation is still unused
            return "taken", None

    def reset_password(self, raw: str, password_hash: str, on_reset=None):
        """The coach row with its new password (every earlier session of it ended), or None for an unknown, used or
        expired link, or a login removed since. `on_reset(connection, row)` runs in the same transaction."""
        with self.engine.begin() as connection:
            used = self._use(connection, "reset", raw)
            if used is None:
                return None
            row = connection.execute(sa.update(coaches).where(coaches.c.email == used.email).values(
                password_hash=password_hash, session_generation=coaches.c.session_generation + 1)
                .returning(*coaches.c)).first()
            if row is None:
                return None
            connection.execute(sa.delete(tokens).where(tokens.c.kind == "reset", tokens.c.email == used.email,
                                                       tokens.c.used_at.is_(None)))
            if on_reset is not None:
                on_reset(connection, row)
            return row

    def pending_invites(self) -> list:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(tokens).where(
                tokens.c.kind == "invite", tokens.c.used_at.is_(None), tokens.c.expires_at > utc_now())
                .order_by(tokens.c.created_at)).all())

    def cancel_invites(self, email: str, on_canceled=None) -> bool:
        """The email's unused invitations stop working; False when it had none."""
        with self.engine.begin() as connection:
            canceled = connection.execute(sa.delete(tokens).where(
                tokens.c.kind == "invite", tokens.c.email == email, tokens.c.used_at.is_(None))).rowcount > 0
            if canceled and on_canceled is not None:
                on_canceled(connection)
            return canceled

    def prune_tokens(self) -> int:
        """Forget tokens that have expired (used ones included) a day ago."""
        with self.engine.begin() as connection:
            return connection.execute(sa.delete(tokens).where(tokens.c.expires_at < utc_now() - timedelta(days=1))).rowcount

    def end_sessions(self, coach_id: int) -> None:
        """Every cookie this coach holds, on any device, stops working."""
        with self.engine.begin() as connection:
            connection.execute(sa.update(coaches).where(coaches.c.id == coach_id).values(
                session_generation=coaches.c.session_generation + 1))

    def find(self, email: str):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(coaches).where(coaches.c.email == email)).first()

    def get(self, coach_id: int):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(coaches).where(coaches.c.id == coach_id)).first()

    def any(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(coaches.c.id).limit(1)).first() is not None

    # the login throttle ----------------------------------------------------------------------
    def start_attempt(self, email: str, address: str, throttle: Throttle) -> Attempt:
        """Count this attempt as a failure in advance, per (email, address) and per address, unless either
        is at its limit; then nothing is counted and the attempt is refused. Counting before the password
        check, in one transaction holding both rows, is what keeps parallel guesses within the limit."""
        now = utc_now()
        pair_key, address_key = _keys(email, address)
        with self.engine.connect() as connection:
            transaction = connection.begin()
            for kind, key, limit in (("pair", pair_key, throttle.per_pair), ("address", address_key, throttle.per_address)):
                counted = connection.execute(self._count_failure, {
                    "key_hash": key, "kind": kind, "now": now, "opened_after": now - throttle.window, "limit": limit}).first()
                if counted is None:
                    transaction.rollback()
                    return Attempt(kind, None)
            coach = connection.execute(sa.select(coaches).where(coaches.c.email == email)).first()
            transaction.commit()
        return Attempt(None, coach)

    def count_reset_request(self, email: str, address: str, throttle: Throttle) -> str | None:
        """Count a request for a password-reset link per (email, address) and per address, as sign-ins are
        counted; "pair" or "address" when a limit is reached (then nothing is counted), else None."""
        now = utc_now()
        with self.engine.connect() as connection:
            transaction = connection.begin()
            for kind, key, limit in (("rpair", digest(f"reset-pair|{email}|{address}"), throttle.per_pair),
                                     ("raddress", digest(f"reset-address|{address}"), throttle.per_address)):
                counted = connection.execute(self._count_failure, {
                    "key_hash": key, "kind": kind, "now": now, "opened_after": now - throttle.window, "limit": limit}).first()
                if counted is None:
                    transaction.rollback()
                    return kind.removeprefix("r")
            transaction.commit()
        return None

    def attempt_succeeded(self, email: str, address: str) -> None:
        """A right password: the (email, address) count starts over, and the address gets its attempt back."""
        pair_key, address_key = _keys(email, address)
        with self.engine.begin() as connection:
            connection.execute(sa.delete(attempts).where(attempts.c.key_hash == pair_key))
            connection.execute(sa.update(attempts).where(attempts.c.key_hash == address_key, attempts.c.failures > 0)
                               .values(failures=attempts.c.failures - 1))

    def attempt_not_checked(self, email: str, address: str) -> None:
        """The password was never checked (too busy): give both counts their attempt back."""
        with self.engine.begin() as connection:
            for key in _keys(email, address):  # in the order start_attempt locks them
                connection.execute(sa.update(attempts).where(attempts.c.key_hash == key, attempts.c.failures > 0)
                                   .values(failures=attempts.c.failures - 1))

    def prune_attempts(self, window: timedelta) -> int:
        """Forget counts whose window is over."""
        with self.engine.begin() as connection:
            return prune_windows(connection, attempts, utc_now() - window)
