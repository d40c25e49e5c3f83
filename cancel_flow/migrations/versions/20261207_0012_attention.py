"""the attention list: when an accepted offer ends, talk requests marked handled, and the indexes of its windows"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'

OFFER_ENDS = sa.text("offer_ends_at IS NOT NULL")
CANCELED = sa.text("canceled_at IS NOT NULL")
TALK_NOT_HANDLED = sa.text("offer_kind = 'contact' AND contact_handled_at IS NULL")
UNPAID_FAILURE = sa.text("first_failed_at IS NOT NULL AND paid_at IS NULL AND voided_at IS NULL")


def _add_months(moment, months: int):
    """As cancel_flow.clock.add_months (kept here: a revision doesn't change when the package does)."""
    from datetime import datetime

    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=moment.tzinfo)
    last_day = (following - datetime(year, month, 1, tzinfo=moment.tzinfo)).days
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('offer_ends_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('contact_handled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('contact_handled_by', sa.String(length=320), nullable=True))
    sessions = sa.table('cancel_session', sa.column('id', sa.Integer), sa.column('outcome', sa.String),
                        sa.column('offer_ends_at', sa.DateTime(timezone=True)),
                        sa.column('pause_resumes_at', sa.DateTime(timezone=True)),
                        sa.column('next_payment_at', sa.DateTime(timezone=True)),
                        sa.column('decided_at', sa.DateTime(timezone=True)), sa.column('discount_months', sa.Integer))
    op.execute(sessions.update().where(sessions.c.outcome == 'saved_pause')
               .values(offer_ends_at=sessions.c.pause_resumes_at))
    op.execute(sessions.update().where(sessions.c.outcome == 'saved_free_period')
               .values(offer_ends_at=sessions.c.next_payment_at))
    connection = op.get_bind()
    discounts = connection.execute(sa.select(sessions.c.id, sessions.c.decided_at, sessions.c.discount_months).where(
        sessions.c.outcome == 'saved_discount', sessions.c.decided_at.is_not(None),
        sessions.c.discount_months.is_not(None))).all()
    ends = [{"row": row.id, "ends": _add_months(row.decided_at, row.discount_months)} for row in discounts]
    for first in range(0, len(ends), 1000):
        connection.execute(sessions.update().where(sessions.c.id == sa.bindparam('row'))
                           .values(offer_ends_at=sa.bindparam('ends')), ends[first:first + 1000])
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.create_index('ix_cancel_session_offer_ends_at', ['offer_ends_at'], unique=False,
                              postgresql_where=OFFER_ENDS, sqlite_where=OFFER_ENDS)
        batch_op.create_index('ix_cancel_session_canceled_period_end', ['period_end'], unique=False,
                              postgresql_where=CANCELED, sqlite_where=CANCELED)
        batch_op.create_index('ix_cancel_session_talk_not_handled', ['created_at'], unique=False,
                              postgresql_where=TALK_NOT_HANDLED, sqlite_where=TALK_NOT_HANDLED)
    with op.batch_alter_table('invoice_record', schema=None) as batch_op:
        batch_op.create_index('ix_invoice_record_unpaid_failure', ['first_failed_at'], unique=False,
                              postgresql_where=UNPAID_FAILURE, sqlite_where=UNPAID_FAILURE)


def downgrade() -> None:
    with op.batch_alter_table('invoice_record', schema=None) as batch_op:
        batch_op.drop_index('ix_invoice_record_unpaid_failure', postgresql_where=UNPAID_FAILURE,
                            sqlite_where=UNPAID_FAILURE)
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index('ix_cancel_session_talk_not_handled', postgresql_where=TALK_NOT_HANDLED,
                            sqlite_where=TALK_NOT_HANDLED)
        batch_op.drop_index('ix_cancel_session_canceled_period_end', postgresql_where=CANCELED, sqlite_where=CANCELED)
        batch_op.drop_index('ix_cancel_session_offer_ends_at', postgresql_where=OFFER_ENDS, sqlite_where=OFFER_ENDS)
        batch_op.drop_column('contact_handled_by')
        batch_op.drop_column('contact_handled_at')
        batch_op.drop_column('offer_ends_at')
