"""Thin route handlers: validate, call the client, runtime or store, map to a schema."""
