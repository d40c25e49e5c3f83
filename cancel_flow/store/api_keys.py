"""JSON API keys (hashed) and the shared page's request counts."""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import ApiKey, LinkRequest

keys = ApiKey.__table__
requests = LinkRequest.__table__

# What a key may do (SPEC §9): each API route names the scope it needs in cancel_flow/web/access.py.
SCOPES = {"links": "POST /api/links", "stats": "GET /api/stats, /api/attention", "hooks": "/api/hooks",
          "config": "/api/config"}
# A key made without --scope, and every key made before scopes existed, holds these.
DEFAULT_SCOPES = ("links", "stats", "hooks")


@dataclass(frozen=True)
class KeyHolder:
    """Who a valid API key belongs to, and what it may call."""

    name: str
    scopes: frozenset[str]


def check_scopes(names) -> tuple[str, ...]:
    """The scopes asked for, in SCOPES' order; ValueError naming an unknown one."""
    asked = [name.strip() for name in names if name and name.strip()]
    unknown = [name for name in asked if name not in SCOPES]
    if unknown:
        raise ValueError(f"Unknown scope '{unknown[0]}'; scopes: {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in asked)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def window_counter(engine: Engine, table: sa.Table, column: str):
    """One statement that counts one more for a key in its current window (or opens a new window) while
    the count is under :limit, and returns the new count; it returns no row when the limit is reached.

    Parameters: key_hash, kind, now, opened_after (windows that opened before it are over), limit.
    A single INSERT … ON CONFLICT DO UPDATE locks the key's row, so parallel requests count one by one."""
    insert = postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert
    count, opened = table.c[column], table.c.window_start
    over = opened < sa.bindparam("opened_after", type_=opened.type)
    statement = insert(table).values({"key_hash": sa.bindparam("key_hash"), "kind": sa.bindparam("kind"), column: 1,
                                      "window_start": sa.bindparam("now", type_=opened.type)})
    return statement.on_conflict_do_update(
        index_elements=[table.c.key_hash],
        set_={column: sa.case((over, 1), else_=count + 1),
              "window_start": sa.case((over, statement.excluded.window_start), else_=opened)},
        where=sa.or_(over, count < sa.bindparam("limit")),
    ).returning(count)


def prune_windows(connection: Connection, table: sa.Table, before: datetime) -> int:
    """Delete the keys whose window opened before `before`; rows a request holds right now are left for
    the next round (PostgreSQL: SKIP LOCKED), so pruning never waits on, or deadlocks with, a request."""
    old = sa.select(table.c.key_hash).where(table.c.window_start < before)
    if connection.dialect.name == "postgresql":
        old = old.with_for_update(skip_locked=True)
    return connection.execute(sa.delete(table).where(table.c.key_hash.in_(old.scalar_subquery()))).rowcount


class ApiKeyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, name: str, key: str, scopes=DEFAULT_SCOPES, on_added=None) -> bool:
        """False when a key of that name exists already. `on_added(connection)` runs in the same transaction
        (the audit row of the change). ValueError for an unknown scope, or none."""
        if not check_scopes(scopes):
            raise ValueError("a key needs a scope")
        try:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(keys).values(name=name, key_hash=digest(key), prefix=key[:10],
                                                          created_at=utc_now(), scopes=" ".join(check_scopes(scopes))))
                if on_added is not None:
                    on_added(connection)
        except sa.exc.IntegrityError:
            return False
        return True

    def all(self) -> list:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(keys).order_by(keys.c.created_at)).all()

    def revoke(self, name: str, on_revoked=None) -> bool:
        with self.engine.begin() as connection:
            revoked = connection.execute(sa.update(keys).where(keys.c.name == name, keys.c.revoked_at.is_(None))
                                         .values(revoked_at=utc_now())).rowcount == 1
            if revoked and on_revoked is not None:
                on_revoked(connection)
            return revoked

    def check(self, key: str) -> KeyHolder | None:
        """Whose key it is and its scopes, when it is valid and not revoked."""
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(keys.c.id, keys.c.name, keys.c.scopes).where(
                keys.c.key_hash == digest(key), keys.c.revoked_at.is_(None))).first()
            if row is None:
                return None
            connection.execute(sa.update(keys).where(keys.c.id == row.id).values(last_used_at=utc_now()))
            return KeyHolder(row.name, frozenset(scopes_of(row)))


def scopes_of(row) -> tuple[str, ...]:
    """A key row's scopes, in SCOPES' order."""
    held = set((row.scopes or "").split())
    return tuple(scope for scope in SCOPES if scope in held)


class LinkRequestStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._count = window_counter(engine, requests, "requests")

    def allow(self, kind: str, value: str, limit: int, window: timedelta) -> bool:
        """Count this request for the email or address ("email"/"ip") unless `limit` were counted in the
        window already; False then (and nothing is counted)."""
        now = utc_now()
        with self.engine.begin() as connection:
            counted = connection.execute(self._count, {
                "key_hash": digest(f"{kind}|{value.lower()}"), "kind": kind, "now": now,
                "opened_after": now - window, "limit": limit}).first()
        return counted is not None

    def prune(self, window: timedelta) -> int:
        """Forget counts whose window is over."""
        with self.engine.begin() as connection:
            return prune_windows(connection, requests, utc_now() - window)
