"""coach roles, API key scopes"""
from alembic import op
import sqlalchemy as sa


revision = '0011_team'
down_revision = '0010'


def upgrade() -> None:
    # Every login made before roles existed could do everything: it becomes an owner.
    with op.batch_alter_table('coach', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=8), server_default='owner', nullable=False))
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.drop_column('scopes')
    with op.batch_alter_table('coach', schema=None) as batch_op:
        batch_op.drop_column('role')
