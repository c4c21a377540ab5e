"""The prompt of one run step: what of an endless thread the model sees.

Layout, in this order (so that the prompt of a run extends the previous
run's prompt and the engine's prefix cache stays warm)::

    system: instructions + summaries of older history   (changes rarely)
    the thread's recent messages                         (append-only)
    system: recalled older messages                      (last; per turn)
    the newest user message, this run's tool exchanges

Budget: the model's context window minus the completion reserve, or
``max_prompt_tokens`` (less what the run already used) if smaller; tools'
definitions count against it. Token counts come from the model's tokenizer,
cached per message (tokens.py).

``truncation_strategy``:
- ``last_messages`` N: the newest N messages (fewer if they do not fit).
- ``auto``: recent messages from the thread's boundary on, preceded by the
  summaries of everything before it (``Thread.context_boundary_seq``). The
  boundary only moves when the recent messages no longer fit, and then to
  the end of a summary block, far enough that the recent part falls under
  ``CONTEXT_LOW_WATER`` of the budget: the prompt prefix then stays
  byte-identical for many runs. When no summary is ready the run falls back
  to plain truncation (newest messages that fit) and its step says so.

Cost: messages are read newest first through the (thread, seq) index and
only until the budget is full; summaries are few (merged as they grow);
nothing here reads the whole thread.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from assistants.models import (
    Message,
    MessageEmbedding,
    Run,
    RunStep,
    Thread,
    ThreadSummary,
)
from assistants.runs import tokens
from assistants.runs.prompt import render_message, tool_exchange
from core.db import Statement
from core.models import LanguageModel

logger = logging.getLogger(__name__)

# Messages are read in pages of this many, newest first.
PAGE = 64
SUMMARY_HEADER = "Summary of the earlier conversation:"
RECALL_HEADER = (
    "Earlier messages of this conversation that may be relevant "
    "(recalled; older than the summary's detail):"
)


@dataclass
class Context:
    messages: list[dict[str, Any]]
    prompt_tokens: int  # our count of the prompt
    budget: int
    boundary_seq: int = 0
    summaries: int = 0
    recalled: int = 0
    history: int = 0  # thread messages in the prompt
    notes: list[str] = field(default_factory=list)
    # Tokens of the messages after the newest summary: the summarizer is
    # due when they grow past its trigger (None: more than the budget).
    unsummarized_tokens: int | None = 0
    summarized_until: int = 0
    # The new token counts' UPDATE, for the step's first write to carry.
    deferred_writes: list[Statement] = field(default_factory=list)

    def step_metadata(self) -> dict[str, str]:
        """For the message_creation step: how the prompt was made."""
        meta = {
            "context_tokens": str(self.prompt_tokens),
            "context_budget": str(self.budget),
            "context_messages": str(self.history),
            "context_summaries": str(self.summaries),
            "context_recalled": str(self.recalled),
        }
        if self.notes:
            meta["context_note"] = "; ".join(self.notes)[:512]
        return meta


def prompt_budget(run: Run, model: LanguageModel, used_prompt_tokens: int) -> int:
    reserve = run.max_completion_tokens or min(
        int(settings.COMPLETION_RESERVE_TOKENS), model.context_window // 4
    )
    budget = model.context_window - reserve
    if run.max_prompt_tokens:
        budget = min(budget, run.max_prompt_tokens - used_prompt_tokens)
    return budget


# Raw SQL on the per-run path: the ORM's query compilation cost more than
# PostgreSQL's work for these indexed reads.
# The thread's context state and its summaries in one round trip (one row
# with NULL summary columns when it has none).
_STATE_SQL = (
    "SELECT t.context_boundary_seq, t.context_summary_ids, "
    "s.id, s.from_seq, s.until_seq, s.level, s.text, s.token_count "
    "FROM assistants_thread t "
    "LEFT JOIN assistants_threadsummary s ON s.thread_id = t.id "
    "WHERE t.id = {thread} ORDER BY s.from_seq, s.level"
)
_MESSAGES_SQL = (
    "SELECT id, seq, role, content, token_count, token_model "
    "FROM assistants_message WHERE thread_id = {thread} AND seq > {after} "
    "AND seq < %s AND status <> 'in_progress' ORDER BY seq {order} LIMIT %s"
)
_NO_UPPER_BOUND = 2**63 - 1
# A run's thread, for reads sent before the run's row is in hand.
_THREAD_OF_RUN = "(SELECT thread_id FROM assistants_run WHERE id = %s)"


@dataclass(frozen=True)
class Prefetch:
    """What an auto-truncated window starts with, read in the round trip of
    the run's claim (``prefetch_reads``): the thread's state rows and the
    first page of its newest messages after the context boundary."""

    state: list[tuple[Any, ...]]
    page: list[tuple[Any, ...]]


def prefetch_reads(run_id: str) -> list[Statement]:
    """The first two reads of ``assemble`` for run ``run_id``, keyed by the
    run: they follow the claim's UPDATE in one round trip (state.claim's
    ``reads``), in its transaction, so they see the same thread. Two round
    trips fewer on every run step; a run whose truncation is
    ``last_messages`` reads its own way and these go unused."""
    boundary = (
        "COALESCE((SELECT context_boundary_seq FROM assistants_thread "
        f"WHERE id = {_THREAD_OF_RUN}), 0)"
    )
    return [
        (_STATE_SQL.format(thread=_THREAD_OF_RUN), [run_id]),
        (
            _MESSAGES_SQL.format(thread=_THREAD_OF_RUN, after=boundary, order="DESC"),
            [run_id, run_id, _NO_UPPER_BOUND, PAGE],
        ),
    ]


def _thread_state(
    thread_id: str, rows: list[tuple[Any, ...]] | None = None
) -> tuple[int, list[int], list[ThreadSummary]]:
    """The thread's context boundary, the ids of the summaries its last
    prompt used, and its summaries in order (they tile its history from the
    start; merging keeps them few). From ``rows`` when they were read
    already (``Prefetch.state``)."""
    if rows is None:
        with connection.cursor() as cursor:
            cursor.execute(_STATE_SQL.format(thread="%s"), [thread_id])
            rows = cursor.fetchall()
    if not rows:
        return 0, [], []
    boundary, in_prompt_ids = rows[0][0], _json(rows[0][1])
    blocks = [
        ThreadSummary(
            pk=pk,
            thread_id=thread_id,
            from_seq=from_seq,
            until_seq=until_seq,
            level=level,
            text=text,
            token_count=token_count,
        )
        for _b, _i, pk, from_seq, until_seq, level, text, token_count in rows
        if pk is not None
    ]
    return boundary, in_prompt_ids, blocks


def read_messages(
    thread_id: str,
    *,
    after_seq: int,
    model: LanguageModel,
    limit_tokens: int,
    newest_first: bool = True,
    limit_messages: int | None = None,
    defer: list[Statement] | None = None,
    first_page: list[tuple[Any, ...]] | None = None,
) -> tuple[list[Message], bool]:
    """Completed messages with seq > after_seq, newest (or oldest) first, in
    pages through the (thread, seq) index, until their tokens pass
    ``limit_tokens`` (the one that passes included) or ``limit_messages``.
    Counts every message it reads (tokens.ensure_counted; the counts' UPDATE
    goes to ``defer`` when given). Returns (messages, read_them_all).
    ``first_page``: the rows of the first page, read already
    (``Prefetch.page``; newest first only)."""
    out: list[Message] = []
    total = 0
    lower, upper = after_seq, _NO_UPPER_BOUND
    sql = _MESSAGES_SQL.format(
        thread="%s", after="%s", order="DESC" if newest_first else "ASC"
    )
    assert first_page is None or newest_first
    rows = first_page
    while True:
        if rows is None:
            with connection.cursor() as cursor:
                cursor.execute(sql, [thread_id, lower, upper, PAGE])
                rows = cursor.fetchall()
        page = [
            Message(
                pk=pk,
                thread_id=thread_id,
                seq=seq,
                role=role,
                content=_json(content),
                token_count=token_count,
                token_model=token_model,
            )
            for pk, seq, role, content, token_count, token_model in rows
        ]
        rows = None
        tokens.ensure_counted(model, page, defer=defer)
        for message in page:
            out.append(message)
            total += tokens.size(message, model)
            if total > limit_tokens or (
                limit_messages is not None and len(out) >= limit_messages
            ):
                return out, False
        if len(page) < PAGE:
            return out, True
        if newest_first:
            upper = page[-1].seq
        else:
            lower = page[-1].seq


def _json(value: Any) -> Any:
    # psycopg decodes jsonb itself; a text column would come as a string.
    return json.loads(value) if isinstance(value, str) else value


def _fit(
    messages_newest_first: list[Message], model: LanguageModel, room: int
) -> list[Message]:
    kept: list[Message] = []
    total = 0
    for message in messages_newest_first:
        size = tokens.size(message, model)
        if total + size > room:
            break
        kept.append(message)
        total += size
    return kept


def _system_text(instructions: str, summaries: list[ThreadSummary]) -> str:
    parts = [instructions] if instructions else []
    if summaries:
        parts.append(SUMMARY_HEADER + "\n" + "\n\n".join(s.text for s in summaries))
    return "\n\n".join(parts)


def assemble(
    run: Run,
    model: LanguageModel,
    *,
    tools: list[dict[str, Any]],
    used_prompt_tokens: int = 0,
    vision: bool = False,
    tool_steps: bool = True,
    prefetch: Prefetch | None = None,
) -> Context | None:
    """The engine messages for this step of ``run``; None when not even the
    newest message fits the budget. ``prefetch``: the first reads, done in
    the claim's round trip (``prefetch_reads``)."""
    budget = prompt_budget(run, model, used_prompt_tokens)
    steps = (
        list(
            RunStep.objects.filter(
                run=run, type=RunStep.Type.TOOL_CALLS, status=RunStep.Status.COMPLETED
            ).order_by("seq")
        )
        if tool_steps
        else []
    )
    exchanges = [(step.seq, tool_exchange(step)) for step in steps]
    exchanges = [(seq, ex) for seq, ex in exchanges if ex]
    fixed = tokens.estimate(json.dumps(tools), model.id) if tools else 0
    fixed += sum(tokens.estimate(json.dumps(ex), model.id) for _seq, ex in exchanges)
    instructions = run.instructions or ""
    fixed += (
        tokens.count(model, instructions) + tokens.MESSAGE_OVERHEAD
        if instructions
        else 0
    )
    strategy = run.truncation_strategy or {}
    recall_room = 0
    deferred: list[Statement] = []
    if strategy.get("type") == "last_messages" and strategy.get("last_messages"):
        read, _ = read_messages(
            run.thread_id,
            after_seq=0,
            model=model,
            limit_tokens=budget,
            limit_messages=int(strategy["last_messages"]),
            defer=deferred,
        )
        history = _fit(read, model, budget - fixed)
        ctx = Context(messages=[], prompt_tokens=0, budget=budget)
        summaries: list[ThreadSummary] = []
    else:
        ctx, history, summaries = _auto_window(
            run, model, budget, fixed, deferred, prefetch
        )
        recall_room = int(budget * float(settings.CONTEXT_RECALL_SHARE))
    ctx.deferred_writes = deferred
    if not history and not exchanges:
        return None
    history.reverse()  # oldest first
    system = _system_text(instructions, summaries)
    items: list[tuple[int, list[dict[str, Any]]]] = [
        (m.seq, [render_message(m, vision=vision)]) for m in history
    ]
    items.extend(exchanges)
    items.sort(key=lambda item: item[0])
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for _seq, chunk in items:
        messages.extend(chunk)
    used = (
        fixed
        + sum(tokens.size(m, model) for m in history)
        + sum(s.token_count for s in summaries)
    )
    if recall_room and ctx.boundary_seq and history:
        room = min(recall_room, budget - used)
        recalled = _recall(run.thread_id, ctx.boundary_seq, history, model, room)
        if recalled:
            text = RECALL_HEADER + "\n" + "\n".join(recalled)
            note = {"role": "system", "content": text}
            at = _last_user_index(messages)
            messages.insert(at, note)
            used += tokens.estimate(text, model.id) + tokens.MESSAGE_OVERHEAD
            ctx.recalled = len(recalled)
    ctx.messages = messages
    ctx.prompt_tokens = used
    ctx.history = len(history)
    ctx.summaries = len(summaries)
    return ctx


def _last_user_index(messages: list[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    return len(messages)


def frontier(
    blocks: list[ThreadSummary], until: int, *, start: int = 0
) -> list[ThreadSummary] | None:
    """The fewest summaries that tile the history from ``start`` up to
    ``until``: at each point the summary reaching furthest (merged ones
    first). None when the summaries do not reach ``until`` exactly."""
    chosen: list[ThreadSummary] = []
    at = start
    while at < until:
        step = max(
            (b for b in blocks if b.from_seq == at and b.until_seq <= until),
            key=lambda b: b.until_seq,
            default=None,
        )
        if step is None:
            return None
        chosen.append(step)
        at = step.until_seq
    return chosen


def _auto_window(
    run: Run,
    model: LanguageModel,
    budget: int,
    fixed: int,
    defer: list[Statement],
    prefetch: Prefetch | None = None,
) -> tuple[Context, list[Message], list[ThreadSummary]]:
    boundary, in_prompt_ids, blocks = _thread_state(
        run.thread_id, prefetch.state if prefetch else None
    )
    by_id = {b.pk: b for b in blocks}
    summarized_until = max((b.until_seq for b in blocks), default=0)
    read, reached_start = read_messages(
        run.thread_id,
        after_seq=boundary,
        model=model,
        limit_tokens=budget,
        defer=defer,
        first_page=prefetch.page if prefetch else None,
    )
    sizes = [tokens.size(m, model) for m in read]
    ctx = Context(messages=[], prompt_tokens=0, budget=budget, boundary_seq=boundary)
    ctx.summarized_until = summarized_until

    def tail_tokens(after: int) -> int | None:
        """Tokens of the read messages after ``after``; None when the read
        stopped before reaching it (so they are more than the budget)."""
        total = 0
        for message, size in zip(read, sizes, strict=True):
            if message.seq <= after:
                return total
            total += size
        return total if reached_start else None

    ctx.unsummarized_tokens = tail_tokens(summarized_until)
    in_prompt = [by_id[i] for i in in_prompt_ids if i in by_id]
    if len(in_prompt) != len(in_prompt_ids):
        # A summary in use was deleted (by an operator): take what covers
        # the same history now.
        in_prompt = frontier(blocks, boundary) or []
    current = tail_tokens(boundary)
    held = sum(s.token_count for s in in_prompt)
    if current is not None and fixed + held + current <= budget:
        return ctx, read, in_prompt
    # The recent messages outgrew the budget: move the boundary to the end of
    # a summary block, the first that brings the prompt under the low water
    # mark, else the one that leaves the most room. The summaries already in
    # the prompt stay and the new blocks follow them (the prefix survives up
    # to there); merged summaries replace them only when that is needed to
    # get under the mark.
    low_water = budget * float(settings.CONTEXT_LOW_WATER)
    best: tuple[int, int, list[ThreadSummary]] | None = None  # total, until, set
    ends = sorted({b.until_seq for b in blocks if b.until_seq > boundary})
    for adopt_merged in (False, True):
        for until in ends:
            tail = tail_tokens(until)
            if adopt_merged:
                covering = frontier(blocks, until)
            else:
                extension = frontier(
                    [b for b in blocks if b.from_seq >= boundary], until, start=boundary
                )
                covering = None if extension is None else in_prompt + extension
            if tail is None or covering is None:
                continue
            total = fixed + sum(s.token_count for s in covering) + tail
            if total <= low_water:
                best = (total, until, covering)
                break
            if total <= budget and (best is None or total < best[0]):
                best = (total, until, covering)
        if best is not None and best[0] <= low_water:
            break
    if best is not None:
        _total, chosen, covering = best
        # Forward only (a re-executed step must never move it back).
        Thread.objects.filter(pk=run.thread_id, context_boundary_seq__lt=chosen).update(
            context_boundary_seq=chosen,
            context_summary_ids=[s.pk for s in covering],
        )
        ctx.boundary_seq = chosen
        kept = [m for m in read if m.seq > chosen]
        return ctx, kept, covering
    # No summary covers enough yet (the summarizer is behind, or failed):
    # plain truncation for this run, said in its step.
    kept = _fit(read, model, budget - fixed - held)
    ctx.notes.append(
        "the thread outgrew the context window and no summary was ready; "
        f"truncated to the newest {len(kept)} messages"
    )
    return ctx, kept, in_prompt


def _recall(
    thread_id: str,
    boundary: int,
    history: list[Message],
    model: LanguageModel,
    room: int,
) -> list[str]:
    """The older messages (summarised away) nearest to the newest user
    message, as lines, within ``room`` tokens. Empty when the embedding
    service is not available."""
    query_text = next(
        (
            tokens.message_text(m.content)
            for m in reversed(history)
            if m.role == Message.Role.USER
        ),
        "",
    )
    if not query_text.strip() or room <= 0:
        return []
    try:
        from pgvector.django import CosineDistance

        from tools.embeddings import embed

        (vector,) = embed([query_text])
    except Exception as exc:  # the embedding model missing or broken
        logger.info("recall skipped for %s: %s", thread_id, exc)
        return []
    limit = int(settings.CONTEXT_RECALL_LIMIT)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # A thread's messages are a small part of the index: let HNSW
            # keep scanning until it has enough rows that pass the filter.
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        ids = list(
            MessageEmbedding.objects.filter(thread_id=thread_id, seq__lte=boundary)
            .order_by(CosineDistance("embedding", vector))
            .values_list("message_id", flat=True)[:limit]
        )
    if not ids:
        return []
    found = {
        m.id: m
        for m in Message.objects.filter(pk__in=ids).only("seq", "role", "content")
    }
    lines: list[str] = []
    used = 0
    # In conversation order: reads as history, and is deterministic.
    for message in sorted(found.values(), key=lambda m: m.seq):
        line = f"[{message.role}] {tokens.message_text(message.content)}"
        size = tokens.estimate(line, model.id) + 1
        if used + size > room:
            continue
        lines.append(line)
        used += size
    return lines
