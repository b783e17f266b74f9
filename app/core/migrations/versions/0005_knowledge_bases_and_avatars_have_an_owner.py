"""knowledge bases and avatars have an owner

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("knowledge_bases", "avatars")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
            batch_op.create_foreign_key(
                f"fk_{table}_owner_id_teachers", "teachers", ["owner_id"], ["id"], ondelete="SET NULL"
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_owner_id_teachers", type_="foreignkey")
            batch_op.drop_column("owner_id")
