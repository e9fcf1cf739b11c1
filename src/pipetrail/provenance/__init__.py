"""Provenance capture: code, environment and resource facts, captured and never stored here."""
