"""coach sessions that end, login throttle per address"""
from alembic import op
import sqlalchemy as sa

from cancel_flow.migrations.tables import (create_link_request_log, create_login_attempt_log, create_window_counter,
                                           drop_link_request_log, drop_login_attempt_log, drop_window_counter)


revision = '0007'
down_revision = '0006'


def upgrade() -> None:
    with op.batch_alter_table('coach', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))

    # Both throttles become one counter row per key; the old rows are one-hour/15-minute state only.
    drop_login_attempt_log()
    create_window_counter('login_attempt', 'failures')
    drop_link_request_log()
    create_window_counter('link_request', 'requests')


def downgrade() -> None:
    drop_window_counter('link_request')
    create_link_request_log()
    drop_window_counter('login_attempt')
    create_login_attempt_log()

    with op.batch_alter_table('coach', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
