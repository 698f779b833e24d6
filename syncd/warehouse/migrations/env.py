"""Alembic's entry point for the warehouse migrations.

syncd runs the migrations itself (`syncd.warehouse.migrations.prepare`), handing over the
connection whose transaction holds the migration lock in `config.attributes["connection"]`:
every revision then runs inside that one transaction. Run by hand (the `alembic` command
with `-x url=...` or a `sqlalchemy.url` option, e.g. to write a new revision), it opens its
own connection to that URL instead.
"""

from __future__ import annotations

from alembic import context

from syncd.warehouse.store import create_engine

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the warehouse URL: alembic -x url=sqlite:///warehouse.db ...")
    engine = create_engine(url)
    try:
        with engine.connect() as own:
            context.configure(connection=own, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
