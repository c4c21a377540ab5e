"""Health checks, Prometheus metrics and structured logs.

``metrics``: the metric objects and the one-line hooks the rest of the code
calls (cheap: no I/O). ``collectors``: values computed at scrape time
(database, Redis). ``context`` / ``logs``: the request id and run id every
log line carries. ``views``: ``/healthz``, ``/readyz``, ``/metrics``.
``celery``: carries the request id from the web request into the worker.

Nothing here is imported by ``sandbox/`` (a library that never imports
Django): it reports through a callback the worker wires up.
"""
