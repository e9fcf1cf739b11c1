"""Executors: where task attempts run, behind one small interface."""
