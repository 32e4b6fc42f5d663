"""Alembic environment: runs migrations on the engine ReadingRoom hands over."""

from alembic import context

from readingroom.schema import Base

config = context.config
engine = config.attributes["connection_engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
