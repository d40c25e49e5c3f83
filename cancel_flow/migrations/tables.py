"""Table shapes that more than one revision creates or drops: the throttles' first tables (0003 and 0004 made
them, 0007 replaced them and brings them back on downgrade) and the per-key window counters 0007 made."""

from alembic import op
import sqlalchemy as sa


def create_login_attempt_log() -> None:
    """login_attempt as 0003 made it: one row per failed sign-in."""
    op.create_table(
        'login_attempt',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_attempt_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_login_attempt_email'), ['email'], unique=False)


def drop_login_attempt_log() -> None:
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_attempt_email'))
        batch_op.drop_index(batch_op.f('ix_login_attempt_at'))
    op.drop_table('login_attempt')


def create_link_request_log() -> None:
    """link_request as 0004 made it: one row per link asked for."""
    op.create_table(
        'link_request',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('key_hash', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table('link_request', schema=None) as batch_op:
        batch_op.create_index('ix_link_request_lookup', ['kind', 'key_hash', 'at'], unique=False)


def drop_link_request_log() -> None:
    with op.batch_alter_table('link_request', schema=None) as batch_op:
        batch_op.drop_index('ix_link_request_lookup')
    op.drop_table('link_request')


def create_window_counter(table: str, count_column: str) -> None:
    """A throttle as 0007 made it: one row per key, counting in `count_column` since `window_start`."""
    op.create_table(
        table,
        sa.Column('key_hash', sa.String(length=64), primary_key=True),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column(count_column, sa.Integer(), nullable=False),
        sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f'ix_{table}_window_start'), ['window_start'], unique=False)


def drop_window_counter(table: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_index(batch_op.f(f'ix_{table}_window_start'))
    op.drop_table(table)
