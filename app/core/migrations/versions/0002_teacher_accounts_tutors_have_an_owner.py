"""teacher accounts; tutors have an owner

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:07:00.670315
"""

import sqlalchemy as sa
from alembic import op

import app.core.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teachers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    with op.batch_alter_table("tutors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_tutors_owner_id_teachers", "teachers", ["owner_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("tutors", schema=None) as batch_op:
        batch_op.drop_constraint("fk_tutors_owner_id_teachers", type_="foreignkey")
        batch_op.drop_column("owner_id")

    op.drop_table("teachers")
