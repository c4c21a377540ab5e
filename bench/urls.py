"""The platform's URLs plus ``/bench/baseline``."""

from __future__ import annotations

from django.urls import path

from bench.views import baseline
from config.urls import handler400, handler404, handler500
from config.urls import urlpatterns as platform

# Django reads the error handlers from the root URLconf: re-export them so
# errors look exactly as they do under config.urls.
__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]

urlpatterns = [path("bench/baseline", baseline), *platform]
