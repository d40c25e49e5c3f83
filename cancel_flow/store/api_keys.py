"""JSON API keys (hashed) and the shared page's request counts."""

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import ApiKey, LinkRequest

keys = ApiKey.__table__
requests = LinkRequest.__table__


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, name: str, key: str) -> bool:
        try:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(keys).values(name=name, key_hash=digest(key), prefix=key[:10],
                                                          created_at=utc_now()))
        except sa.exc.IntegrityError:
            return False
        return True

    def all(self) -> list:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(keys).order_by(keys.c.created_at)).all()

    def revoke(self, name: str) -> bool:
        with self.engine.begin() as connection:
            return connection.execute(sa.update(keys).where(keys.c.name == name, keys.c.revoked_at.is_(None))
                                      .values(revoked_at=utc_now())).rowcount == 1

    def check(self, key: str) -> str | None:
        """The key's name when it is valid and not revoked."""
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(keys.c.id, keys.c.name).where(
                keys.c.key_hash == digest(key), keys.c.revoked_at.is_(None))).first()
            if row is None:
                return None
            connection.execute(sa.update(keys).where(keys.c.id == row.id).values(last_used_at=utc_now()))
            return row.name


class LinkRequestStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def count_and_record(self, kind: str, value: str, since: datetime) -> int:
        """How many requests this email or address made since `since`, before this one; records this one."""
        hashed = digest(value.lower())
        with self.engine.begin() as connection:
            earlier = connection.execute(sa.select(sa.func.count()).select_from(requests).where(
                requests.c.kind == kind, requests.c.key_hash == hashed, requests.c.at >= since)).scalar_one()
            connection.execute(sa.insert(requests).values(kind=kind, key_hash=hashed, at=utc_now()))
            connection.execute(sa.delete(requests).where(requests.c.at < since))
        return earlier
