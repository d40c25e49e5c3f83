"""The configuration's numbered versions: the highest is live; a save names the version it was made from."""

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.models import ConfigVersion

versions = ConfigVersion.__table__
_LATEST = sa.select(sa.func.max(versions.c.version))


class StaleVersion(Exception):
    """The save was made from a version that is no longer live: somebody saved meanwhile."""

    def __init__(self, live: int | None):
        super().__init__(f"version {live} is live")
        self.live = live


@dataclass(frozen=True)
class SavedVersion:
    version: int
    saved_at: datetime
    saved_by: str
    origin: str
    note: str | None
    document: dict | None = None  # left out of lists


class ConfigVersions:
    def __init__(self, engine: Engine):
        self.engine = engine

    def latest_number(self) -> int | None:
        """The live version's number: one index lookup, what every worker asks each second."""
        with self.engine.connect() as connection:
            return connection.execute(_LATEST).scalar()

    def get(self, version: int | None = None) -> SavedVersion | None:
        """Version `version`, or the live one."""
        wanted = versions.c.version == (version if version is not None else _LATEST.scalar_subquery())
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(versions).where(wanted)).first()
        return _saved(row, with_document=True) if row else None

    def all(self) -> list[SavedVersion]:
        """Every version, newest first, without their documents."""
        columns = [c for c in versions.c if c.name != "document"]
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(*columns).order_by(versions.c.version.desc())).all()
        return [_saved(row) for row in rows]

    def documents(self) -> list[tuple[int, dict]]:
        """Every version's document, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(versions.c.version, versions.c.document)
                                      .order_by(versions.c.version)).all()
        return [(row.version, json.loads(row.document)) for row in rows]

    def save(self, document: dict, *, base_version: int | None, saved_by: str, origin: str,
             note: str | None = None) -> int:
        """Save `document` as the version after `base_version`; StaleVersion when that is not the live one
        (checked, and guarded by the primary key when two saves from the same version race)."""
        with self.engine.begin() as connection:
            live = connection.execute(_LATEST).scalar()
            if live != base_version:
                raise StaleVersion(live)
            number = (live or 0) + 1
            try:
                with connection.begin_nested():
                    connection.execute(sa.insert(versions).values(
                        version=number, document=json.dumps(document), saved_at=utc_now(),
                        saved_by=saved_by[:320], origin=origin, note=(note or None) and note[:500]))
            except sa.exc.IntegrityError:
                raise StaleVersion(connection.execute(_LATEST).scalar()) from None
        return number

    def seed(self, document: dict, *, saved_by: str, note: str) -> bool:
        """Version 1 from the offers file, unless a version exists (another worker may be seeding too)."""
        try:
            self.save(document, base_version=None, saved_by=saved_by, origin="file", note=note)
        except StaleVersion:
            return False
        return True


def _saved(row, with_document: bool = False) -> SavedVersion:
    return SavedVersion(version=row.version, saved_at=as_utc(row.saved_at), saved_by=row.saved_by, origin=row.origin,
                        note=row.note, document=json.loads(row.document) if with_document else None)
