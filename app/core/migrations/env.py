"""Alembic environment: runs the migrations on the connection or URL the server hands it.

A connection (PostgreSQL) is one that already holds the migration lock (`Database.migrate`).
"""

from alembic import context
from sqlalchemy import create_engine

from app.core.db import Base

config = context.config


def run(connection) -> None:  # noqa: ANN001 (Alembic's own environment script)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if (given := config.attributes.get("connection")) is not None:
    run(given)
else:
    engine = create_engine(config.attributes.get("connection_url") or config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
