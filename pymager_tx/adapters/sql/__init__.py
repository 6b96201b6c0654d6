"""The metadata database: SQLAlchemy Core on Twisted, its schema, migrations
and whole transactions."""
