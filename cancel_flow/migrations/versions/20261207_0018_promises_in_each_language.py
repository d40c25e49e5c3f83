"""an accepted offer's promise in each language shipped, for the client's done page and confirmation email"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('promise_texts', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_column('promise_texts')
