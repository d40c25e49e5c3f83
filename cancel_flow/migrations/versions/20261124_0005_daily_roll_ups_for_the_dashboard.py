"""daily roll-ups for the dashboard"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'


def upgrade() -> None:
    op.create_table('stats_day',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('chosen_offer', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('sessions', sa.Integer(), nullable=False),
    sa.Column('monthly_amount', sa.Integer(), nullable=False),
    sa.Column('discount_cost', sa.Float(), nullable=False),
    sa.Column('lasted_30', sa.Integer(), nullable=False),
    sa.Column('lasted_60', sa.Integer(), nullable=False),
    sa.Column('lasted_90', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stats_day', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stats_day_day'), ['day'], unique=False)

    op.create_table('stats_day_offer',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('offer_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('shown', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'offer_id')
    )
    op.create_table('stats_watermark',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('refreshed_until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rolled_up', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index('ix_cancel_session_not_rolled_up', ['rolled_up'], unique=False, postgresql_where=sa.text('NOT rolled_up'), sqlite_where=sa.text('NOT rolled_up'))



def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index('ix_cancel_session_not_rolled_up', postgresql_where=sa.text('NOT rolled_up'), sqlite_where=sa.text('NOT rolled_up'))
        batch_op.drop_column('rolled_up')

    op.drop_table('stats_watermark')
    op.drop_table('stats_day_offer')
    with op.batch_alter_table('stats_day', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stats_day_day'))

    op.drop_table('stats_day')
