"""The one rule for the database URLs the services are given.

Local mode, psql and most people write PostgreSQL as a plain `postgresql://...` URL, which
SQLAlchemy opens with psycopg2; the images carry psycopg 3 (the `storage` group) instead.
"""

import contextlib

from sqlalchemy.engine import make_url


def sqlalchemy_url(database_url: str) -> str:
    """`database_url` with psycopg 3 named for a plain postgresql:// URL; others unchanged."""
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def create_database(database_url: str) -> None:
    """Create the PostgreSQL database `database_url` names unless it exists, as the postgres
    image does for POSTGRES_DB on its first start. Its user must be allowed to create one."""
    import psycopg
    from psycopg import errors, sql

    url = make_url(database_url)
    if not url.database:
        raise ValueError(f"{url.render_as_string()} names no database")
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=3
    ) as connection:
        if connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
        ).fetchone():
            return
        with contextlib.suppress(errors.DuplicateDatabase):  # another start made it meanwhile
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
