from __future__ import annotations

from typing import Any

import openai
import pytest

from assistants.models import Message, Thread
from tests.conftest import Tenant, admin_url, error_of, make_file, texts


@pytest.mark.live
def test_it_creates_a_thread_with_initial_messages_in_order(sdk: Any) -> None:
    thread = sdk.beta.threads.create(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
            {"role": "user", "content": "third", "metadata": {"n": "3"}},
        ],
        metadata={"topic": "order"},
    )
    assert thread.id.startswith("thread_")
    assert thread.object == "thread"
    assert thread.metadata == {"topic": "order"}
    assert thread.created_at > 0

    messages = list(sdk.beta.threads.messages.list(thread.id, order="asc"))
    assert texts(messages) == ["first", "second", "third"]
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[2].metadata == {"n": "3"}
    for message in messages:
        assert message.thread_id == thread.id
        assert message.status == "completed"
        assert message.completed_at is not None
        assert message.run_id is None and message.assistant_id is None


@pytest.mark.live
def test_it_creates_an_empty_thread(sdk: Any) -> None:
    thread = sdk.beta.threads.create()
    assert thread.metadata == {}
    assert thread.tool_resources.code_interpreter is None
    assert list(sdk.beta.threads.messages.list(thread.id)) == []


@pytest.mark.live
def test_it_retrieves_updates_and_deletes_a_thread(sdk: Any) -> None:
    created = sdk.beta.threads.create(metadata={"a": "1"})
    fetched = sdk.beta.threads.retrieve(created.id)
    assert fetched.id == created.id and fetched.metadata == {"a": "1"}
    assert fetched.created_at == created.created_at

    updated = sdk.beta.threads.update(created.id, metadata={"b": "2"})
    assert updated.metadata == {"b": "2"}
    assert sdk.beta.threads.retrieve(created.id).metadata == {"b": "2"}

    deleted = sdk.beta.threads.delete(created.id)
    assert deleted.id == created.id
    assert deleted.object == "thread.deleted" and deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        sdk.beta.threads.retrieve(created.id)
    assert created.id in error_of(info.value)["message"]


@pytest.mark.live
def test_it_deletes_a_threads_messages_with_it(
    sdk: Any, django_db_blocker: Any
) -> None:
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "x"}] * 3)
    with django_db_blocker.unblock():
        assert Message.objects.filter(thread_id=thread.id).count() == 3
    sdk.beta.threads.delete(thread.id)
    with django_db_blocker.unblock():
        assert Message.objects.filter(thread_id=thread.id).count() == 0
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.messages.list(thread.id)


@pytest.mark.live
def test_it_sets_replaces_and_clears_tool_resources(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    first = make_file(live_tenant, django_db_blocker, "a.csv")
    second = make_file(live_tenant, django_db_blocker, "b.csv")
    thread = sdk.beta.threads.create(
        tool_resources={"code_interpreter": {"file_ids": [first]}}
    )
    assert thread.tool_resources.code_interpreter.file_ids == [first]

    updated = sdk.beta.threads.update(
        thread.id, tool_resources={"code_interpreter": {"file_ids": [second]}}
    )
    assert updated.tool_resources.code_interpreter.file_ids == [second]
    # Metadata the update did not mention is left alone.
    assert updated.metadata == {}

    cleared = sdk.beta.threads.update(thread.id, tool_resources=None)
    assert cleared.tool_resources.code_interpreter is None


@pytest.mark.live
def test_it_keeps_tool_resources_when_only_metadata_changes(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    file_id = make_file(live_tenant, django_db_blocker, "data.csv", "assistants")
    thread = sdk.beta.threads.create(
        tool_resources={"code_interpreter": {"file_ids": [file_id]}}
    )
    updated = sdk.beta.threads.update(thread.id, metadata={"k": "v"})
    assert updated.tool_resources.code_interpreter.file_ids == [file_id]


@pytest.mark.live
def test_it_hides_a_thread_from_another_project(sdk: Any, other_sdk: Any) -> None:
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "mine"}])
    with pytest.raises(openai.NotFoundError):
        other_sdk.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        other_sdk.beta.threads.update(thread.id, metadata={"taken": "yes"})
    with pytest.raises(openai.NotFoundError):
        other_sdk.beta.threads.delete(thread.id)
    # Untouched for its owner.
    assert sdk.beta.threads.retrieve(thread.id).metadata == {}
    assert texts(sdk.beta.threads.messages.list(thread.id)) == ["mine"]


@pytest.mark.live
def test_it_writes_nothing_when_a_later_message_is_bad(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    good = {"role": "user", "content": "fine"}
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.create(
            messages=[good, good, good, {"role": "user", "content": 5}],
            metadata={"doomed": "yes"},
        )
    assert info.value.status_code == 400
    assert error_of(info.value)["param"] == "messages[3].content"
    with django_db_blocker.unblock():
        assert not Thread.objects.filter(project=live_tenant.project).exists()
        assert not Message.objects.filter(thread__project=live_tenant.project).exists()


@pytest.mark.live
def test_it_writes_nothing_when_a_message_names_an_unknown_file(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    file_id = make_file(live_tenant, django_db_blocker, "data.csv", "assistants")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.create(
            messages=[
                {
                    "role": "user",
                    "content": "ok",
                    "attachments": [
                        {"file_id": file_id, "tools": [{"type": "file_search"}]}
                    ],
                },
                {
                    "role": "user",
                    "content": "bad",
                    "attachments": [
                        {"file_id": file_id, "tools": []},
                        {"file_id": "file-nope", "tools": []},
                    ],
                },
            ]
        )
    assert error_of(info.value)["param"] == "messages[1].attachments[1].file_id"
    assert "file-nope" in error_of(info.value)["message"]
    with django_db_blocker.unblock():
        assert not Thread.objects.filter(project=live_tenant.project).exists()


@pytest.mark.live
def test_it_refuses_more_than_100_initial_messages(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.create(messages=[{"role": "user", "content": "m"}] * 101)
    assert error_of(info.value)["param"] == "messages"
    assert "maximum length 100" in error_of(info.value)["message"]
    with django_db_blocker.unblock():
        assert not Thread.objects.filter(project=live_tenant.project).exists()


@pytest.mark.live
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": "hi", "name": "x"}]},
            "messages[0].name",
        ),
        ({"messages": "hello"}, "messages"),
        ({"metadata": {"k": 5}}, "metadata.k"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"colour": "red"}, "colour"),
        (
            {"tool_resources": {"code_interpreter": {"file_ids": ["file-nope"]}}},
            "tool_resources.code_interpreter.file_ids[0]",
        ),
    ],
)
def test_it_names_the_bad_field_of_a_thread_create(
    sdk: Any, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        # extra_body: the SDK sends it as is, ill-typed values included.
        sdk.beta.threads.create(extra_body=body)
    assert error_of(info.value)["param"] == param
    assert error_of(info.value)["type"] == "invalid_request_error"


@pytest.mark.live
def test_it_names_the_bad_field_of_a_thread_update(sdk: Any) -> None:
    thread = sdk.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.update(thread.id, extra_body={"messages": []})
    assert error_of(info.value)["message"] == (
        "Unrecognized request argument supplied: messages"
    )
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.update(thread.id, metadata="not a map")
    assert error_of(info.value)["param"] == "metadata"


@pytest.mark.live
def test_it_answers_404_for_an_unknown_thread(sdk: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.beta.threads.retrieve("thread_doesnotexist")
    assert error_of(info.value)["message"] == (
        "No thread found with id 'thread_doesnotexist'."
    )


def test_the_admin_shows_a_threads_messages_read_only(
    admin_client: Any, api: Any
) -> None:
    created = api.post(
        "/v1/threads",
        {
            "messages": [
                {"role": "user", "content": "What is the airspeed of a swallow?"},
                {"role": "assistant", "content": "African or European?"},
            ]
        },
        format="json",
    )
    assert created.status_code == 200
    thread_id = created.json()["id"]

    page = admin_client.get(admin_url("assistants.thread", thread_id))
    assert page.status_code == 200
    html = page.content.decode()
    assert "What is the airspeed of a swallow?" in html
    assert "African or European?" in html
    # Messages and the thread's summaries: shown, never edited here.
    formsets = page.context["inline_admin_formsets"]
    assert len(formsets) == 2
    for formset in formsets:
        assert formset.has_add_permission is False
        assert formset.has_change_permission is False
        assert formset.has_delete_permission is False

    listing = admin_client.get(
        "/admin/assistants/message/", {"role__exact": "assistant", "q": thread_id}
    )
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 1


def test_an_empty_thread_is_one_insert(tenant: Tenant) -> None:
    # No messages, no tool resources: the INSERT is a transaction of its
    # own, with no savepoint or BEGIN/COMMIT around it (three round trips
    # became one); a thread with messages still writes them all or none.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from assistants.services.thread import ThreadCreateInput, thread_create

    with CaptureQueriesContext(connection) as queries:
        thread = thread_create(
            project=tenant.project, data=ThreadCreateInput(metadata={"k": "v"})
        )
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    stored = Thread.objects.get(pk=thread.pk)
    assert stored.metadata == {"k": "v"} and stored.tool_resources == {}
    assert thread.seq == stored.seq
