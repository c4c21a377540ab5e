"""Cursor pagination in OpenAI's shape: ``after``/``before``/``limit``/``order``.

Keyset on the ``seq`` column, so any page of any list costs O(limit) index
reads however long the list is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from core.errors import InvalidRequestError

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class PageParams:
    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None


def page_params(query: Mapping[str, str], *, default_order: str = "desc") -> PageParams:
    # An empty `limit=` or `order=` is invalid, not the default: the schema
    # documents an integer and an enum, and a value the server silently
    # replaced would hide a client's bug (schemathesis, issue #9).
    raw_limit = query.get("limit")
    limit = 20
    if raw_limit is not None:
        try:
            limit = int(raw_limit)  # type: ignore[arg-type]
        except ValueError:
            raise InvalidRequestError(
                f"Invalid 'limit': expected an integer, got '{raw_limit}'.",
                param="limit",
            ) from None
        if not 1 <= limit <= 100:
            raise InvalidRequestError(
                f"Invalid 'limit': {limit}. It must be between 1 and 100.",
                param="limit",
            )
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise InvalidRequestError(
            f"Invalid 'order': '{order}'. Expected 'asc' or 'desc'.", param="order"
        )
    return PageParams(
        limit=limit,
        order=order,
        after=query.get("after") or None,
        before=query.get("before") or None,
    )


def _cursor_seq(queryset: QuerySet[M], object_id: str, param: str) -> int:
    seq = queryset.filter(pk=object_id).values_list("seq", flat=True).first()
    if seq is None:
        raise InvalidRequestError(
            f"Invalid '{param}': no object with id '{object_id}' in this list.",
            param=param,
        )
    return int(seq)


def paginate(
    queryset: QuerySet[M],
    params: PageParams,
    render: Callable[[M], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``queryset`` (already scoped to the caller) as a list body.

    ``after`` moves along the list order, ``before`` against it; both cursors
    must name an object of this same (scoped) list.
    """
    ascending = params.order == "asc"
    qs = queryset
    backwards = False
    if params.after:
        seq = _cursor_seq(queryset, params.after, "after")
        qs = qs.filter(seq__gt=seq) if ascending else qs.filter(seq__lt=seq)
    if params.before:
        seq = _cursor_seq(queryset, params.before, "before")
        qs = qs.filter(seq__lt=seq) if ascending else qs.filter(seq__gt=seq)
        # Walk away from the cursor (the page nearest to it), then flip back.
        backwards = not params.after
    walk_ascending = ascending != backwards
    rows = list(qs.order_by("seq" if walk_ascending else "-seq")[: params.limit + 1])
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    if backwards:
        rows.reverse()
    data = [render(row) for row in rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
