"""The trace collector: ingest, store and query spans."""
