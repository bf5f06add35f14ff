"""The system of record: SQLAlchemy models, the database engine and the repositories."""
