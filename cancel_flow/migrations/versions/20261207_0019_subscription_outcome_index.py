"""a new link's lookup of an offer accepted on another link of the subscription reads those sessions only"""
from alembic import op


revision = '0019'
down_revision = '0018'


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.create_index('ix_cancel_session_subscription_outcome', ['subscription_id', 'outcome', 'decided_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index('ix_cancel_session_subscription_outcome')
