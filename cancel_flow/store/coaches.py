"""Coach accounts and failed-login records."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import Coach, LoginAttempt

coaches = Coach.__table__
attempts = LoginAttempt.__table__


class CoachStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, email: str, password_hash: str) -> bool:
        """False when a coach with that email exists already."""
        try:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(coaches).values(email=email, password_hash=password_hash,
                                                             created_at=utc_now()))
        except sa.exc.IntegrityError:
            return False
        return True

    def set_password(self, email: str, password_hash: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.update(coaches).where(coaches.c.email == email).values(password_hash=password_hash))

    def find(self, email: str):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(coaches).where(coaches.c.email == email)).first()

    def get(self, coach_id: int):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(coaches).where(coaches.c.id == coach_id)).first()

    def any(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(coaches.c.id).limit(1)).first() is not None

    def record_failure(self, email: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.insert(attempts).values(email=email, at=utc_now()))

    def failures_since(self, email: str, since: datetime) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(attempts).where(
                attempts.c.email == email, attempts.c.at >= since)).scalar_one()

    def forget_failures(self, email: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.delete(attempts).where(attempts.c.email == email))
