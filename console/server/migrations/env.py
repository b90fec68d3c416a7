"""Alembic environment for the service's store.

Run through console.server.store (``protect-console db upgrade``, or serve on an empty
database), which passes an open connection inside a transaction in
``config.attributes["connection"]``: the whole upgrade commits or rolls back as one.
"""

from alembic import context

from console.server.store import include_in_schema_compare, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - `alembic` on the command line is not how this runs
    raise RuntimeError("run migrations with `protect-console db upgrade --db ...`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    # Autogenerate ignores the search index's FTS5 tables and the other store's indexes.
    include_object=include_in_schema_compare(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()
