"""coach roles, invitations and password resets, the audit log, the stored Stripe connection"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'


def upgrade() -> None:
    # Every login made before roles existed could do everything: it becomes an owner.
    with op.batch_alter_table('coach', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=8), server_default='owner', nullable=False))
    op.create_table(
        'coach_token',
        sa.Column('token_hash', sa.String(length=64), primary_key=True),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('role', sa.String(length=8), nullable=True),
        sa.Column('created_by', sa.String(length=320), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table('coach_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coach_token_email'), ['email'], unique=False)
    op.create_table(
        'audit_entry',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=320), nullable=False),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=True),
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entry_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_action'), ['action'], unique=False)
    op.create_table(
        'stripe_connection',
        sa.Column('name', sa.String(length=64), primary_key=True),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'stripe_check_run',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_by', sa.String(length=320), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ok', sa.Boolean(), nullable=True),
        sa.Column('lines', sa.JSON(), nullable=False),
    )
    with op.batch_alter_table('stripe_check_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stripe_check_run_started_at'), ['started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('stripe_check_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_check_run_started_at'))
    op.drop_table('stripe_check_run')
    op.drop_table('stripe_connection')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entry_action'))
        batch_op.drop_index(batch_op.f('ix_audit_entry_at'))
    op.drop_table('audit_entry')
    with op.batch_alter_table('coach_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coach_token_email'))
    op.drop_table('coach_token')
    with op.batch_alter_table('coach', schema=None) as batch_op:
        batch_op.drop_column('role')
