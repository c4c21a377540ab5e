"""Runs the platform's real parts on one machine: no Docker, no system services.

Plain Python (never imports Django): it has to start PostgreSQL and Redis
before Django can load its settings. ``python -m core.stack run`` is what
``make run`` calls; ``python -m core.stack test`` is what ``make test`` calls.
"""
