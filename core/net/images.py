"""``image_url`` parts as the engine gets them: fetched here, inlined.

Engines (llama.cpp, vLLM) fetch remote image URLs themselves, from inside
the deployment, with no address checks: passing a user's URL through would
let any API key reach internal services. The worker downloads the image
through ``core.net.fetch`` instead and hands the engine a ``data:`` URL.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import OrderedDict

from django.conf import settings

from core.net.fetch import FetchRefused, fetch

logger = logging.getLogger(__name__)

# A run's prompt is assembled on every turn: keep the last few images.
_CACHE_ENTRIES = 16
_CACHE_SECONDS = 600.0
_cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
_lock = threading.Lock()


def image_data_url(url: str) -> str:
    """``url`` as a ``data:`` URL (data URLs pass unchanged).

    Raises FetchRefused (with the reason) when it may not or could not be
    fetched."""
    if url[:5].lower() == "data:":
        return url
    now = time.monotonic()
    with _lock:
        hit = _cache.get(url)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            _cache.move_to_end(url)
            return hit[1]
    fetched = fetch(
        url,
        max_bytes=int(settings.IMAGE_FETCH_MAX_BYTES),
        timeout=float(settings.IMAGE_FETCH_TIMEOUT_SECONDS),
        max_redirects=int(settings.IMAGE_FETCH_MAX_REDIRECTS),
        content_types=("image/",),
    )
    encoded = base64.b64encode(fetched.body).decode("ascii")
    data_url = f"data:{fetched.content_type};base64,{encoded}"
    with _lock:
        _cache[url] = (now, data_url)
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
    return data_url


def image_part(url: str) -> dict[str, object]:
    """The chat content part for an ``image_url``: the inlined image, or a
    text note saying why it is missing (the run goes on without it)."""
    try:
        return {"type": "image_url", "image_url": {"url": image_data_url(url)}}
    except FetchRefused as exc:
        logger.info("image_url not fetched: %s", exc)
        return {"type": "text", "text": f"[image not available: {exc}]"}
