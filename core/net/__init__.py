"""Outbound network access on a user's behalf (see ``core.net.fetch``)."""

from core.net.fetch import (
    Fetched,
    FetchRefused,
    fetch,
    is_public,
    literal_refusal,
    vet,
)

__all__ = ["FetchRefused", "Fetched", "fetch", "is_public", "literal_refusal", "vet"]
