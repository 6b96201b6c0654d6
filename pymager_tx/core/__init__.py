"""
The domain, free of Twisted, Pillow and SQLAlchemy: IDs and sizes, the
derived-name grammar, the format table, records, blob keys, domain errors
and the table that maps them to problem types.  A client library imports it
without pulling in the server.
"""
