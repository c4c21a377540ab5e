from __future__ import annotations

from typing import Any

import openai
import pytest

from assistants.models import Message
from tests.conftest import Tenant, error_of, make_file, texts


@pytest.fixture
def thread_id(sdk: Any) -> str:
    return str(sdk.beta.threads.create().id)


@pytest.mark.live
def test_it_creates_a_message_from_a_string(sdk: Any, thread_id: str) -> None:
    message = sdk.beta.threads.messages.create(
        thread_id, role="user", content="Hello there", metadata={"k": "v"}
    )
    assert message.id.startswith("msg_")
    assert message.object == "thread.message"
    assert message.thread_id == thread_id
    assert message.role == "user"
    assert message.status == "completed"
    assert message.completed_at is not None
    assert message.completed_at >= message.created_at
    assert message.incomplete_at is None and message.incomplete_details is None
    assert message.assistant_id is None and message.run_id is None
    assert message.attachments == []
    assert message.metadata == {"k": "v"}
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text.value == "Hello there"
    assert message.content[0].text.annotations == []


@pytest.mark.live
def test_it_creates_a_message_from_content_parts_and_attachments(
    sdk: Any, thread_id: str, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    image = make_file(live_tenant, django_db_blocker, "cat.png")
    sheet = make_file(live_tenant, django_db_blocker, "sheet.csv")
    message = sdk.beta.threads.messages.create(
        thread_id,
        role="user",
        content=[
            {"type": "text", "text": "Compare these"},
            {"type": "image_file", "image_file": {"file_id": image, "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {
                "type": "image_url",
                "image_url": {
                    "url": "data:image/png;base64,iVBORw0KGgo=",
                    "detail": "low",
                },
            },
        ],
        attachments=[
            {
                "file_id": sheet,
                "tools": [{"type": "code_interpreter"}, {"type": "file_search"}],
            }
        ],
    )
    assert [part.type for part in message.content] == [
        "text",
        "image_file",
        "image_url",
        "image_url",
    ]
    assert message.content[0].text.value == "Compare these"
    assert message.content[1].image_file.file_id == image
    assert message.content[1].image_file.detail == "high"
    assert message.content[2].image_url.url == "https://example.com/a.png"
    assert message.content[2].image_url.detail == "auto"
    assert message.content[3].image_url.detail == "low"
    assert message.attachments[0].file_id == sheet
    assert [t.type for t in message.attachments[0].tools] == [
        "code_interpreter",
        "file_search",
    ]
    # What was stored is what is read back.
    fetched = sdk.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert fetched.model_dump() == message.model_dump()


@pytest.mark.live
def test_it_accepts_an_assistant_message_of_exactly_256000_characters(
    sdk: Any, thread_id: str
) -> None:
    message = sdk.beta.threads.messages.create(
        thread_id, role="assistant", content="x" * 256_000
    )
    assert message.role == "assistant"
    assert len(message.content[0].text.value) == 256_000


@pytest.mark.live
def test_it_lists_more_than_100_messages_with_auto_pagination(sdk: Any) -> None:
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": f"m{i}"} for i in range(100)]
    )
    for i in range(100, 105):
        sdk.beta.threads.messages.create(thread.id, role="user", content=f"m{i}")
    expected = [f"m{i}" for i in range(105)]

    first_page = sdk.beta.threads.messages.list(thread.id, limit=100)
    assert len(first_page.data) == 100 and first_page.has_more is True
    # Newest first by default; auto-pagination walks every page.
    assert (
        texts(sdk.beta.threads.messages.list(thread.id, limit=100)) == (expected[::-1])
    )
    assert (
        texts(sdk.beta.threads.messages.list(thread.id, limit=100, order="asc"))
        == expected
    )


@pytest.mark.live
def test_it_lists_in_both_orders_and_pages_with_before_and_after(
    sdk: Any, thread_id: str
) -> None:
    ids = [
        sdk.beta.threads.messages.create(thread_id, role="user", content=f"m{i}").id
        for i in range(5)
    ]
    m = sdk.beta.threads.messages

    asc = m.list(thread_id, order="asc")
    assert [x.id for x in asc.data] == ids and asc.has_more is False
    assert asc.first_id == ids[0] and asc.last_id == ids[4]
    assert [x.id for x in m.list(thread_id).data] == ids[::-1]

    page = m.list(thread_id, order="asc", after=ids[1], limit=2)
    assert [x.id for x in page.data] == ids[2:4] and page.has_more is True
    page = m.list(thread_id, order="asc", before=ids[3])
    assert [x.id for x in page.data] == ids[0:3] and page.has_more is False
    page = m.list(thread_id, order="asc", before=ids[4], limit=2)
    assert [x.id for x in page.data] == ids[2:4] and page.has_more is True
    page = m.list(thread_id, order="desc", after=ids[3])
    assert [x.id for x in page.data] == [ids[2], ids[1], ids[0]]
    page = m.list(thread_id, order="desc", before=ids[1])
    assert [x.id for x in page.data] == [ids[4], ids[3], ids[2]]


@pytest.mark.live
def test_it_filters_the_list_by_run_id(
    sdk: Any, thread_id: str, django_db_blocker: Any
) -> None:
    sdk.beta.threads.messages.create(thread_id, role="user", content="question")
    with django_db_blocker.unblock():
        written = [
            Message.objects.create(
                thread_id=thread_id,
                role=Message.Role.ASSISTANT,
                run_id=run_id,
                assistant_id="asst_x",
                content=[{"type": "text", "text": {"value": text, "annotations": []}}],
            ).id
            for run_id, text in [("run_a", "a1"), ("run_b", "b1"), ("run_a", "a2")]
        ]
    run_a = list(sdk.beta.threads.messages.list(thread_id, run_id="run_a", order="asc"))
    assert [x.id for x in run_a] == [written[0], written[2]]
    assert all(x.run_id == "run_a" and x.assistant_id == "asst_x" for x in run_a)
    assert texts(sdk.beta.threads.messages.list(thread_id, run_id="run_b")) == ["b1"]
    assert list(sdk.beta.threads.messages.list(thread_id, run_id="run_z")) == []
    assert len(list(sdk.beta.threads.messages.list(thread_id))) == 4


@pytest.mark.live
def test_it_retrieves_modifies_and_deletes_a_message(sdk: Any, thread_id: str) -> None:
    m = sdk.beta.threads.messages
    kept = m.create(thread_id, role="user", content="keep me")
    message = m.create(thread_id, role="user", content="original", metadata={"a": "1"})

    fetched = m.retrieve(message.id, thread_id=thread_id)
    assert fetched.id == message.id and fetched.content[0].text.value == "original"

    updated = m.update(message.id, thread_id=thread_id, metadata={"b": "2"})
    assert updated.metadata == {"b": "2"}
    assert updated.content[0].text.value == "original"
    assert m.retrieve(message.id, thread_id=thread_id).metadata == {"b": "2"}

    deleted = m.delete(message.id, thread_id=thread_id)
    assert deleted.id == message.id
    assert deleted.object == "thread.message.deleted" and deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        m.retrieve(message.id, thread_id=thread_id)
    assert (
        error_of(info.value)["message"] == f"No message found with id '{message.id}'."
    )
    assert [x.id for x in m.list(thread_id)] == [kept.id]


@pytest.mark.live
def test_it_refuses_to_modify_anything_but_metadata(sdk: Any, thread_id: str) -> None:
    message = sdk.beta.threads.messages.create(thread_id, role="user", content="x")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.update(
            message.id, thread_id=thread_id, extra_body={"content": "changed"}
        )
    assert error_of(info.value)["param"] == "content"
    assert (
        sdk.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
        .content[0]
        .text.value
        == "x"
    )


@pytest.mark.live
def test_it_hides_a_threads_messages_from_another_project(
    sdk: Any, other_sdk: Any, thread_id: str
) -> None:
    message = sdk.beta.threads.messages.create(thread_id, role="user", content="s")
    m = other_sdk.beta.threads.messages
    with pytest.raises(openai.NotFoundError):
        m.list(thread_id)
    with pytest.raises(openai.NotFoundError):
        m.create(thread_id, role="user", content="intrusion")
    with pytest.raises(openai.NotFoundError):
        m.retrieve(message.id, thread_id=thread_id)
    with pytest.raises(openai.NotFoundError):
        m.update(message.id, thread_id=thread_id, metadata={"x": "y"})
    with pytest.raises(openai.NotFoundError):
        m.delete(message.id, thread_id=thread_id)
    # A thread of its own does not open the door to someone else's message.
    own = other_sdk.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        m.retrieve(message.id, thread_id=own.id)
    survivor = sdk.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert survivor.metadata == {}
    assert texts(sdk.beta.threads.messages.list(thread_id)) == ["s"]


@pytest.mark.live
def test_it_finds_a_message_only_under_its_own_thread(sdk: Any, thread_id: str) -> None:
    message = sdk.beta.threads.messages.create(thread_id, role="user", content="a")
    other = sdk.beta.threads.create()
    with pytest.raises(openai.NotFoundError) as info:
        sdk.beta.threads.messages.retrieve(message.id, thread_id=other.id)
    assert "No message found" in error_of(info.value)["message"]
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.messages.delete(message.id, thread_id=other.id)
    assert (
        sdk.beta.threads.messages.retrieve(message.id, thread_id=thread_id).id
        == message.id
    )


@pytest.mark.live
def test_it_answers_404_for_messages_of_an_unknown_thread(sdk: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.beta.threads.messages.create("thread_nope", role="user", content="x")
    assert error_of(info.value)["message"] == "No thread found with id 'thread_nope'."
    with pytest.raises(openai.NotFoundError) as info:
        sdk.beta.threads.messages.retrieve("msg_nope", thread_id="thread_nope")
    assert error_of(info.value)["message"] == "No thread found with id 'thread_nope'."


@pytest.mark.live
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"role": "user", "content": 5}, "content"),
        ({"role": "user", "content": {"text": "hi"}}, "content"),
        ({"role": "user", "content": []}, "content"),
        ({"role": "user", "content": "x" * 256_001}, "content"),
        (
            {"role": "user", "content": [{"type": "text", "text": "x" * 256_001}]},
            "content[0].text",
        ),
        ({"role": "user"}, "content"),
        ({"role": "system", "content": "hi"}, "role"),
        ({"role": "tool", "content": "hi"}, "role"),
        ({"role": 1, "content": "hi"}, "role"),
        ({"role": "user", "content": "hi", "colour": "red"}, "colour"),
        ({"role": "user", "content": "hi", "metadata": {"k": 5}}, "metadata.k"),
        ({"role": "user", "content": "hi", "metadata": ["k"]}, "metadata"),
        ({"role": "user", "content": [{"type": "text", "text": 5}]}, "content[0].text"),
        ({"role": "user", "content": [{"type": "video", "video": {}}]}, "content[0]"),
        (
            {"role": "user", "content": [{"type": "text", "text": "a", "extra": 1}]},
            "content[0].extra",
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_file", "image_file": {}},
                ],
            },
            "content[1].image_file.file_id",
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}
                ],
            },
            "content[0].image_url.url",
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "javascript:alert(1)"}}
                ],
            },
            "content[0].image_url.url",
        ),
        (
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x/a.png", "detail": "max"},
                    }
                ],
            },
            "content[0].image_url.detail",
        ),
        (
            {"role": "user", "content": "hi", "attachments": [{"tools": []}]},
            "attachments[0].file_id",
        ),
        (
            {
                "role": "user",
                "content": "hi",
                "attachments": [{"file_id": "file-x", "tools": [{"type": "function"}]}],
            },
            "attachments[0].tools[0]",
        ),
    ],
)
def test_it_names_the_bad_field_of_a_message_create(
    sdk: Any, thread_id: str, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        # Everything in extra_body: the SDK sends it as is, ill-typed values
        # included, and `omit` leaves out what the case leaves out.
        sdk.beta.threads.messages.create(
            thread_id, role=openai.omit, content=openai.omit, extra_body=body
        )
    assert error_of(info.value)["param"] == param
    assert error_of(info.value)["type"] == "invalid_request_error"
    assert list(sdk.beta.threads.messages.list(thread_id)) == []


@pytest.mark.live
def test_it_explains_the_wrong_type_of_content(sdk: Any, thread_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.create(thread_id, role="user", content=5)
    assert error_of(info.value)["message"] == (
        "Invalid 'content': expected a string or an array of content parts."
    )
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.create(thread_id, role="user", content=[])
    assert "array too short" in error_of(info.value)["message"]


@pytest.mark.live
def test_it_refuses_files_the_project_does_not_own(
    sdk: Any,
    thread_id: str,
    live_tenant: Tenant,
    other_live_tenant: Tenant,
    django_db_blocker: Any,
) -> None:
    mine = make_file(live_tenant, django_db_blocker, "mine.png")
    theirs = make_file(other_live_tenant, django_db_blocker, "theirs.png")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.create(
            thread_id,
            role="user",
            content="see file",
            attachments=[
                {"file_id": mine, "tools": [{"type": "file_search"}]},
                {"file_id": theirs, "tools": [{"type": "file_search"}]},
            ],
        )
    assert error_of(info.value)["param"] == "attachments[1].file_id"
    assert error_of(info.value)["message"] == f"No file found with id '{theirs}'."

    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.create(
            thread_id,
            role="user",
            content=[
                {"type": "image_file", "image_file": {"file_id": mine}},
                {"type": "image_file", "image_file": {"file_id": "file-unknown"}},
            ],
        )
    assert error_of(info.value)["param"] == "content[1].image_file.file_id"
    assert list(sdk.beta.threads.messages.list(thread_id)) == []


@pytest.mark.live
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_notinthisthread"}, "after"),
        ({"before": "msg_notinthisthread"}, "before"),
    ],
)
def test_it_names_the_bad_list_parameter(
    sdk: Any, thread_id: str, query: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.list(thread_id, extra_query=query)
    assert error_of(info.value)["param"] == param


@pytest.mark.live
def test_it_refuses_a_cursor_from_another_thread(sdk: Any, thread_id: str) -> None:
    elsewhere = sdk.beta.threads.create(messages=[{"role": "user", "content": "other"}])
    foreign = sdk.beta.threads.messages.list(elsewhere.id).data[0].id
    sdk.beta.threads.messages.create(thread_id, role="user", content="here")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.list(thread_id, after=foreign)
    assert error_of(info.value)["param"] == "after"


def test_a_message_create_keeps_the_request_order_of_parts(api: Any) -> None:
    thread = api.post("/v1/threads", {}, format="json").json()
    response = api.post(
        f"/v1/threads/{thread['id']}/messages",
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
            ],
        },
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["content"] == [
        {"type": "text", "text": {"value": "one", "annotations": []}},
        {"type": "text", "text": {"value": "two", "annotations": []}},
    ]
    assert set(body) == {
        "id",
        "object",
        "created_at",
        "thread_id",
        "status",
        "incomplete_details",
        "completed_at",
        "incomplete_at",
        "role",
        "content",
        "assistant_id",
        "run_id",
        "attachments",
        "metadata",
    }
