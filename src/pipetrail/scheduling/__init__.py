"""Triggers, the scheduler loop that claims their ticks, and the runs it starts."""
