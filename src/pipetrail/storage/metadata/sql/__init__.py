"""The SQL implementation of the metadata store (SQLite and PostgreSQL as equals)."""
