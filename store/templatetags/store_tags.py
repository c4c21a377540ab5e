"""The project switcher in the store's header (a tag, not a context
processor: only store pages pay for its query)."""

from __future__ import annotations

from typing import Any

from django import template

from store import selectors

register = template.Library()


@register.inclusion_tag("store/_project_switcher.html", takes_context=True)
def project_switcher(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return {"projects": []}
    projects = list(
        selectors.projects_of(user=request.user)
        .select_related("organization")
        .order_by("created_at", "pk")
    )
    current = selectors.current_project(
        user=request.user, chosen=request.session.get("store_project")
    )
    return {
        "projects": projects,
        "current": current,
        "next": request.get_full_path(),
        "csrf_token": context.get("csrf_token"),
    }
