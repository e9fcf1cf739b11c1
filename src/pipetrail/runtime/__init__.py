"""Executes runs: the engine, the executors and the context a step sees."""
