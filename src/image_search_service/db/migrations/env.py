"""Alembic environment: runs on the connection handed in, or builds one from the URL."""

from __future__ import annotations

from alembic import context

from image_search_service.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    # Run by hand (`alembic upgrade head`): the same database the service would use.
    from image_search_service.core.config import load_settings
    from image_search_service.db.session import make_engine

    engine = make_engine(load_settings().resolved_database_url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
