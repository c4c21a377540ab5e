"""The local settings plus the bench-only URLs (the baseline view).

The platform's own code and URLs stay untouched: the benchmark serves exactly
what ``make run`` serves, with one extra route beside it.
"""

from __future__ import annotations

from config.settings.local import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
# A DEBUG=1 left in someone's shell would make Django keep every query in
# memory and turn the figures into a measure of that.
DEBUG = False
