"""coaches and offers shown"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from cancel_flow.migrations.tables import create_login_attempt_log, drop_login_attempt_log


revision = '0003'
down_revision = '0002'


def upgrade() -> None:
    op.create_table('coach',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('password_hash', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    create_login_attempt_log()
    op.create_table('session_offer',
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('offer_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('shown_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['cancel_session.id'], ),
    sa.PrimaryKeyConstraint('session_id', 'offer_id')
    )
    with op.batch_alter_table('session_offer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_session_offer_offer_id'), ['offer_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('session_offer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_session_offer_offer_id'))

    op.drop_table('session_offer')
    drop_login_attempt_log()
    op.drop_table('coach')
