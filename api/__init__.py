"""qledger service: FastAPI app, SQLAlchemy store, anchorer and the `qledger` CLI."""
