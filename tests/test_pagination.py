from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TEST_MODEL


@pytest.fixture
def five(api: Any) -> list[str]:
    return [
        api.post(
            "/v1/assistants", {"model": TEST_MODEL, "name": f"a{i}"}, format="json"
        ).json()["id"]
        for i in range(5)
    ]


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["data"]]


def test_the_default_order_is_newest_first(api: Any, five: list[str]) -> None:
    page = api.get("/v1/assistants").json()
    assert ids(page) == list(reversed(five))
    assert page["object"] == "list" and page["has_more"] is False
    assert page["first_id"] == five[-1] and page["last_id"] == five[0]


def test_after_walks_forward_and_has_more_tells_when_to_stop(
    api: Any, five: list[str]
) -> None:
    first = api.get("/v1/assistants?order=asc&limit=2").json()
    assert ids(first) == five[:2] and first["has_more"] is True
    second = api.get(
        f"/v1/assistants?order=asc&limit=2&after={first['last_id']}"
    ).json()
    assert ids(second) == five[2:4] and second["has_more"] is True
    third = api.get(
        f"/v1/assistants?order=asc&limit=2&after={second['last_id']}"
    ).json()
    assert ids(third) == five[4:] and third["has_more"] is False


def test_before_returns_the_page_nearest_the_cursor(api: Any, five: list[str]) -> None:
    page = api.get(f"/v1/assistants?order=asc&limit=2&before={five[4]}").json()
    assert ids(page) == five[2:4]
    assert page["has_more"] is True
    desc = api.get(f"/v1/assistants?order=desc&limit=2&before={five[0]}").json()
    assert ids(desc) == [five[2], five[1]]


def test_after_and_before_together_bound_both_ends(api: Any, five: list[str]) -> None:
    page = api.get(f"/v1/assistants?order=asc&after={five[0]}&before={five[4]}").json()
    assert ids(page) == five[1:4]


@pytest.mark.parametrize(
    "query,param",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("order=sideways", "order"),
        ("after=asst_unknown", "after"),
    ],
)
def test_bad_list_parameters_are_named(api: Any, query: str, param: str) -> None:
    response = api.get(f"/v1/assistants?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_cursor_from_another_project_is_refused(
    api: Any, five: list[str], client: Any, db: Any
) -> None:
    from tests.conftest import make_tenant

    other = make_tenant()
    response = client.get(
        f"/v1/assistants?after={five[0]}",
        HTTP_AUTHORIZATION=f"Bearer {other.raw_key}",
    )
    assert response.status_code == 400


@pytest.mark.live
def test_the_sdk_auto_paginates_across_more_than_100_items(sdk: Any, http: Any) -> None:
    created = [
        http.post("/assistants", json={"model": TEST_MODEL, "name": f"n{i}"}).json()[
            "id"
        ]
        for i in range(130)
    ]
    seen = [a.id for a in sdk.beta.assistants.list(limit=100, order="asc")]
    assert seen == created
