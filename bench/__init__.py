"""Benchmarks that print figures. Nothing here is imported by the platform."""
