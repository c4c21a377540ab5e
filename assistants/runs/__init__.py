"""Runs: the one state machine, the event bus, and the executor."""
