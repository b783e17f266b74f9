"""Alembic environment: runs the migrations against the URL the server was given."""

from alembic import context
from sqlalchemy import create_engine

from app.core.db import Base

config = context.config
url = config.attributes.get("connection_url") or config.get_main_option("sqlalchemy.url")

engine = create_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
