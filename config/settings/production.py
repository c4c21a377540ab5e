"""Production overrides only; every value still comes from the environment.

``manage.py check --deploy`` is clean with these defaults once SECRET_KEY is
set (tests/test_deploy.py). The defaults assume what deploy/ sets up: TLS
ends at a reverse proxy or ingress that sets ``X-Forwarded-Proto``.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from config.env import env
from config.settings.base import *  # noqa: F403
from config.settings.base import SECRET_KEY

# Refuse to start with the development key or a weak one (Django's own
# criteria for security.W009): sessions, CSRF tokens and password resets are
# signed with it.
if (
    SECRET_KEY == "insecure-dev-key-change-me"
    or len(SECRET_KEY) < 50
    or len(set(SECRET_KEY)) < 5
    or SECRET_KEY.startswith("django-insecure-")
):
    raise ImproperlyConfigured(
        "config.settings.production needs SECRET_KEY (or SECRET_KEY_FILE): at "
        "least 50 random characters, e.g. python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(50))'"
    )

DEBUG = False

# The scheme comes from the proxy's header ("HEADER,value"; empty: no proxy,
# then TLS must end at uvicorn itself). The proxy must overwrite the header a
# client sends, or a client could claim https.
_proxy_header = env.list(
    "SECURE_PROXY_SSL_HEADER", default=["HTTP_X_FORWARDED_PROTO", "https"]
)
SECURE_PROXY_SSL_HEADER = (
    (_proxy_header[0], _proxy_header[1]) if len(_proxy_header) == 2 else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and scrapers talk plain HTTP to the pod or container directly.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

SILENCED_SYSTEM_CHECKS: list[str] = []
if not SECURE_HSTS_PRELOAD:
    # Preloading is a deliberate, slow-to-undo opt-in (browsers' built-in
    # HSTS list), not a default; security.W021 only says it is off.
    SILENCED_SYSTEM_CHECKS.append("security.W021")

STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
}
WHITENOISE_USE_FINDERS = False
STATIC_ROOT = env.str("STATIC_ROOT", default="/app/static")
