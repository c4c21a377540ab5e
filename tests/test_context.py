"""Infinite threads: token budgets, truncation, summaries, recall, routing.

The context is assembled in this process against the real database; the
summarizer and the runs talk to the scripted engine over HTTP; recall uses
the real embedding model.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from assistants.engine.client import replica_order
from assistants.models import Message, Run, RunStep, Thread, ThreadSummary
from assistants.runs import context, memory
from assistants.runs.executor import run_execute
from assistants.runs.state import claim
from assistants.tasks import thread_summarize_task
from core.db import write_together
from core.services.models import language_model_register
from tests.conftest import Tenant, admin_url

pytest_plugins = ["tests.fake_engine"]
# Committed data: the executor runs here and manages its own transactions.
pytestmark = pytest.mark.django_db(transaction=True)

# 800-token window: 600 for the prompt after the 200-token reserve.
WINDOW = 800
BUDGET = 600
FILLER = "We talked about the weather, the garden and the neighbours' cat again. "


@pytest.fixture
def small_model(fake_engine: Any, transactional_db: Any) -> Any:
    return language_model_register(
        name="small-model", base_urls=[fake_engine.url], context_window=WINDOW
    )


@pytest.fixture(autouse=True)
def _no_enqueue(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Summaries are made by calling the summarizer here, not by a worker."""
    asked: list[tuple[str, str, int]] = []
    monkeypatch.setattr(memory, "_enqueue", lambda *a: asked.append(a))
    return asked


def _thread(tenant: Tenant, texts: list[str]) -> Thread:
    thread = Thread.objects.create(project=tenant.project)
    for i, text in enumerate(texts):
        Message.objects.create(
            thread=thread,
            role=Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT,
            content=[{"type": "text", "text": {"value": text, "annotations": []}}],
        )
    return thread


def _say(thread: Thread, text: str, role: str = "user") -> None:
    Message.objects.create(
        thread=thread,
        role=role,
        content=[{"type": "text", "text": {"value": text, "annotations": []}}],
    )


def _run(thread: Thread, model: Any, *, queued: bool = False, **fields: Any) -> Run:
    """A run to assemble a prompt for (ended, so several can exist), or a
    queued one for the executor."""
    return Run.objects.create(
        project=thread.project,
        thread=thread,
        assistant_id="asst_test",
        model=model.id,
        instructions="You are terse.",
        status="queued" if queued else "completed",
        **fields,
    )


def _contents(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m["content"]) for m in messages]


def test_the_budget_is_the_window_less_the_reserve_or_max_prompt_tokens(
    tenant: Tenant, small_model: Any
) -> None:
    thread = _thread(tenant, ["hi"])
    assert context.prompt_budget(_run(thread, small_model), small_model, 0) == BUDGET
    run = _run(thread, small_model, max_prompt_tokens=300, max_completion_tokens=50)
    assert context.prompt_budget(run, small_model, 100) == 200


def test_last_messages_keeps_the_newest_n(tenant: Tenant, small_model: Any) -> None:
    thread = _thread(tenant, [f"message {i}" for i in range(10)])
    run = _run(
        thread,
        small_model,
        truncation_strategy={"type": "last_messages", "last_messages": 3},
    )
    window = context.assemble(run, small_model, tools=[])
    assert window is not None
    assert _contents(window.messages) == [
        "You are terse.",
        "message 7",
        "message 8",
        "message 9",
    ]


def test_auto_keeps_everything_that_fits_and_counts_each_message_once(
    tenant: Tenant, small_model: Any
) -> None:
    thread = _thread(tenant, [f"message {i}" for i in range(6)])
    window = context.assemble(_run(thread, small_model), small_model, tools=[])
    assert window is not None and window.history == 6
    assert window.prompt_tokens <= BUDGET
    # The counts ride on the step's first write (no round trip of their own).
    counted = Message.objects.filter(thread=thread, token_count__isnull=False)
    assert counted.count() == 0 and len(window.deferred_writes) == 1
    *first, last = window.deferred_writes
    write_together(first, last, durable=False)
    assert counted.count() == 6 and {m.token_model for m in counted} == {"small-model"}
    again = context.assemble(_run(thread, small_model), small_model, tools=[])
    assert again is not None and again.deferred_writes == []  # counted once


def test_the_claim_reads_the_start_of_the_window_in_its_round_trip(
    tenant: Tenant, small_model: Any
) -> None:
    """The thread's state and its first page of messages come with the
    claim; the window is the one assemble builds reading them itself,
    boundary included, and the pages after the first are still read."""
    thread = _thread(tenant, [f"message {i}" for i in range(context.PAGE + 10)])
    seqs = list(
        Message.objects.filter(thread=thread)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    Thread.objects.filter(pk=thread.pk).update(context_boundary_seq=seqs[3])
    expected = context.assemble(_run(thread, small_model), small_model, tools=[])
    assert expected is not None and expected.history == context.PAGE + 6

    queued = _run(thread, small_model, queued=True)
    claimed = claim(queued.pk, worker="w", reads=context.prefetch_reads(queued.pk))
    assert claimed is not None and claimed.run.status == "in_progress"
    prefetch = context.Prefetch(*claimed.reads)
    assert [row[1] for row in prefetch.page] == seqs[::-1][: context.PAGE]
    with CaptureQueriesContext(connection) as prefetched:
        window = context.assemble(claimed.run, small_model, tools=[], prefetch=prefetch)
    with CaptureQueriesContext(connection) as plain:
        context.assemble(claimed.run, small_model, tools=[])
    assert window is not None and window.messages == expected.messages
    assert len(plain.captured_queries) - len(prefetched.captured_queries) == 2
    # A run that is no longer queued is not claimed, reads or not.
    assert claim(queued.pk, worker="w", reads=context.prefetch_reads(queued.pk)) is None


def test_a_run_stores_its_prompts_counts_with_its_answer(
    tenant: Tenant, small_model: Any, fake_engine: Any
) -> None:
    thread = _thread(tenant, ["one", "two", "three"])
    before = list(Message.objects.filter(thread=thread).values_list("pk", flat=True))
    fake_engine.script({"content": "Counted."})
    run = _run(thread, small_model, queued=True)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == "completed"
    prompt = Message.objects.filter(pk__in=before)
    assert [m.token_model for m in prompt] == ["small-model"] * 3
    assert all(m.token_count and m.token_count > 0 for m in prompt)


def test_auto_without_a_summary_truncates_to_the_newest_and_says_so(
    tenant: Tenant, small_model: Any, _no_enqueue: list[Any]
) -> None:
    thread = _thread(tenant, [f"{i}: {FILLER}" for i in range(40)])
    run = _run(thread, small_model)
    window = context.assemble(run, small_model, tools=[])
    assert window is not None
    memory.summarize_if_due(run, small_model, window)
    assert 0 < window.history < 40 and window.prompt_tokens <= BUDGET
    assert window.messages[-1]["content"].startswith("39:")
    assert "no summary was ready" in window.step_metadata()["context_note"]
    assert _no_enqueue == [(thread.id, "small-model", BUDGET)]


def _summarize(thread: Thread, engine: Any, blocks: int) -> list[dict[str, Any]]:
    """Summarize what is due with scripted summaries; the engine's requests."""
    engine.script(*[{"content": f"Summary block {i}."} for i in range(blocks)])
    made = memory.thread_summarize(
        thread_id=thread.id, model_id="small-model", budget=BUDGET
    )
    assert made >= 1
    asked = engine.requests()
    engine.reset()
    return asked


@override_settings(CONTEXT_RECALL_SHARE=0)
def test_summaries_replace_old_history_and_keep_the_prefix_stable(
    tenant: Tenant, small_model: Any, fake_engine: Any
) -> None:
    thread = _thread(tenant, [f"{i}: {FILLER}" for i in range(40)])
    requests = _summarize(thread, fake_engine, 8)
    blocks = list(ThreadSummary.objects.filter(thread=thread).order_by("from_seq"))
    # Blocks tile the history from its start.
    assert blocks[0].from_seq == 0
    assert all(
        a.until_seq == b.from_seq for a, b in zip(blocks, blocks[1:], strict=False)
    )
    asked = requests[0]["messages"]
    assert asked[0]["role"] == "system" and "0: We talked" in asked[1]["content"]

    first = context.assemble(_run(thread, small_model), small_model, tools=[])
    assert first is not None and first.boundary_seq > 0
    system = first.messages[0]["content"]
    assert system.startswith("You are terse.") and context.SUMMARY_HEADER in system
    assert "Summary block 0." in system
    assert first.prompt_tokens <= BUDGET * 0.6 + 40
    thread.refresh_from_db()
    assert thread.context_boundary_seq == first.boundary_seq

    # The next turns append: every prompt extends the previous one.
    previous = first.messages
    for turn in range(3):
        _say(thread, f"answer {turn}", "assistant")
        _say(thread, f"question {turn}")
        window = context.assemble(_run(thread, small_model), small_model, tools=[])
        assert window is not None
        assert window.messages[: len(previous)] == previous
        previous = window.messages


def test_a_summarizer_failure_never_fails_the_run(
    tenant: Tenant, small_model: Any, fake_engine: Any, django_db_blocker: Any
) -> None:
    thread = _thread(tenant, [f"{i}: {FILLER}" for i in range(40)])
    fake_engine.script({"status": 500, "error_message": "summarizer down"})
    thread_summarize_task(thread.id, "small-model", BUDGET)  # logs, raises nothing
    assert not ThreadSummary.objects.filter(thread=thread).exists()
    fake_engine.script({"content": "Still here."})
    run = _run(thread, small_model, queued=True)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == "completed"
    step = RunStep.objects.get(run=run, type="message_creation")
    assert "truncated to the newest" in step.metadata["context_note"]


def test_recall_brings_back_an_old_fact_that_truncation_dropped(
    tenant: Tenant, small_model: Any, fake_engine: Any
) -> None:
    texts = ["My locker code is 4471, remember it.", "Noted."]
    texts += [f"{i}: {FILLER}" for i in range(40)]
    thread = _thread(tenant, texts)
    _summarize(thread, fake_engine, 8)
    _say(thread, "What is my locker code?")
    fake_engine.script({"content": "It is 4471."})
    run = _run(thread, small_model, queued=True)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == "completed", run.last_error
    sent = fake_engine.requests()[-1]["messages"]
    recall = [m for m in sent if context.RECALL_HEADER in str(m["content"])]
    assert recall and "4471" in recall[0]["content"]
    # Recall sits just before the newest question, after the stable part.
    assert sent[-1]["content"] == "What is my locker code?"
    assert sent[-2] is not None and context.RECALL_HEADER in sent[-2]["content"]
    assert not any("4471" in str(m["content"]) for m in sent[1:-2])


def test_summaries_merge_in_groups_and_prompts_switch_only_when_the_boundary_moves(
    tenant: Tenant, small_model: Any, fake_engine: Any
) -> None:
    thread = _thread(tenant, [f"{i}: {FILLER}" for i in range(80)])
    fake_engine.script(*[{"content": f"Summary block {i}."} for i in range(40)])
    while memory.thread_summarize(
        thread_id=thread.id, model_id="small-model", budget=BUDGET
    ):
        pass  # until every due block exists
    fake_engine.reset()
    run = _run(thread, small_model)
    before = context.assemble(run, small_model, tools=[])
    assert before is not None and before.summaries >= memory.MERGE_GROUP
    fake_engine.script({"content": "Merged summary."})
    with override_settings(SUMMARY_MAX_BLOCKS=2):
        memory.thread_summarize(
            thread_id=thread.id, model_id="small-model", budget=BUDGET
        )
    assert "Summary block 0." in fake_engine.requests()[0]["messages"][1]["content"]
    blocks = list(ThreadSummary.objects.filter(thread=thread).order_by("from_seq"))
    (merged,) = [b for b in blocks if b.level == 2]
    firsts = [b for b in blocks if b.level == 1][: memory.MERGE_GROUP]
    assert merged.text == "Merged summary." and merged.from_seq == 0
    assert merged.until_seq == firsts[-1].until_seq
    # The prompt keeps the blocks it had: the same bytes as before the merge.
    after = context.assemble(run, small_model, tools=[])
    assert after is not None and after.messages == before.messages
    # At the next move the merged summary stands for the four it covers...
    thread.refresh_from_db()
    covering = context.frontier(blocks, thread.context_boundary_seq)
    assert covering is not None and covering[0].pk == merged.pk
    # ...and once no prompt uses them, the covered blocks are deleted.
    Thread.objects.filter(pk=thread.pk).update(
        context_summary_ids=[b.pk for b in covering]
    )
    memory.thread_summarize(thread_id=thread.id, model_id="small-model", budget=BUDGET)
    left = set(ThreadSummary.objects.filter(thread=thread).values_list("pk", flat=True))
    assert merged.pk in left and not left & {b.pk for b in firsts}


def test_replica_order_is_a_function_of_the_thread() -> None:
    urls = [f"http://10.0.0.{i}/v1" for i in range(4)]
    orders = {tuple(replica_order("m", urls, f"thread_{i}")) for i in range(64)}
    assert len({o[0] for o in orders}) == 4  # threads spread over replicas
    for i in range(16):
        key = f"thread_{i}"
        order = replica_order("m", urls, key)
        assert replica_order("m", urls, key) == order
        # Removing a replica moves only the threads that were on it.
        without = [u for u in urls if u != urls[3]]
        if order[0] != urls[3]:
            assert replica_order("m", without, key)[0] == order[0]


def _dead_url() -> str:
    from core.stack.proc import free_port

    return f"http://127.0.0.1:{free_port()}/v1"


def test_runs_of_a_thread_stick_to_one_replica_and_fail_over(
    tenant: Tenant, fake_engine: Any
) -> None:
    both = [fake_engine.url, fake_engine.replica_url]
    model = language_model_register(name="two-replicas", base_urls=both)
    thread = _thread(tenant, ["hello"])
    for _ in range(3):
        run_execute(_run(thread, model, queued=True).id)
    ports = {r["port"] for r in fake_engine.requests()}
    assert len(ports) == 1
    # A thread whose first choice is down is served by its second.
    dead = _dead_url()
    model = language_model_register(
        name="two-replicas", base_urls=[dead, fake_engine.url]
    )
    for _ in range(32):
        thread = _thread(tenant, ["hello"])
        if replica_order(model.id, [dead, fake_engine.url], thread.id)[0] == dead:
            break
    else:
        pytest.fail("no thread hashed to the dead replica")
    run = _run(thread, model, queued=True)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == "completed"


def test_the_admin_shows_a_threads_summaries_and_only_its_newest_messages(
    tenant: Tenant, small_model: Any
) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from assistants.admin import INLINE_MESSAGES

    thread = _thread(tenant, [f"message {i}" for i in range(INLINE_MESSAGES + 10)])
    ThreadSummary.objects.create(
        thread=thread,
        from_seq=0,
        until_seq=1,
        message_count=1,
        text="They agreed on a budget of 40 euros.",
        token_count=10,
        model="small-model",
    )
    admin = get_user_model().objects.create_superuser(
        username=f"op-{thread.id}", password="pw-for-tests"
    )
    browser = Client()
    browser.force_login(admin)
    page = browser.get(admin_url("assistants.thread", thread.id))
    assert page.status_code == 200
    html = page.content.decode()
    assert "They agreed on a budget of 40 euros." in html
    assert f"message {INLINE_MESSAGES + 9}" in html and "message 9<" not in html
