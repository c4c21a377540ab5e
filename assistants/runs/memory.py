"""A thread's memory: summaries of older history, made in the background in
fixed blocks, and embeddings of summarised messages for recall.

Blocks: the summarizer takes the oldest messages that no summary covers, up
to ``SUMMARY_BLOCK_SHARE`` of the prompt budget, and only while at least
``SUMMARY_KEEP_SHARE`` of the budget of newer messages stays unsummarised
(those are in every prompt anyway). A block's bounds and text never change,
so the prompts that include it keep a byte-identical prefix. When the blocks
in the prompt grow past ``SUMMARY_MAX_BLOCKS`` or ``SUMMARY_MAX_SHARE`` of
the budget, ``MERGE_GROUP`` of them are merged into one of the next level
(see ``_merge_group``); prompts switch to it at a boundary move.

The summarizer uses ``SUMMARY_MODEL`` (default: the run's model). Its
failure is logged and never touches a run: the next prompts fall back to
truncation (context.py says so in the run step) until a summary exists.
One summarizer at a time per thread (a PostgreSQL advisory lock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import kombu.exceptions
import redis.exceptions
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from assistants.engine import EngineError, ask
from assistants.models import Message, MessageEmbedding, Run, Thread, ThreadSummary
from assistants.runs import tokens
from assistants.runs.context import Context, read_messages
from core.models import LanguageModel

logger = logging.getLogger(__name__)

MAX_BLOCKS_PER_TASK = 8
# Summaries merged into one of the next level at a time.
MERGE_GROUP = 4
SUMMARY_PROMPT = (
    "You keep the memory of a long conversation between a user and an "
    "assistant. Summarize the messages below so that the assistant can go on "
    "without them: keep names, facts, numbers, decisions, preferences and "
    "open questions; drop pleasantries. Write plain sentences, at most "
    "{words} words."
)
MERGE_PROMPT = (
    "Merge these consecutive summaries of one conversation into one summary "
    "that keeps every name, fact, number, decision, preference and open "
    "question. Plain sentences, at most {words} words."
)


def summarize_if_due(run: Run, model: LanguageModel, window: Context) -> None:
    """Enqueue the summarizer when the thread's unsummarised messages passed
    ``SUMMARY_TRIGGER_SHARE`` of the budget (``last_messages`` runs do not
    use summaries, so they never ask)."""
    strategy = run.truncation_strategy or {}
    if strategy.get("type") == "last_messages":
        return
    trigger = window.budget * float(settings.SUMMARY_TRIGGER_SHARE)
    pending = window.unsummarized_tokens
    if pending is not None and pending <= trigger:
        return
    _enqueue(run.thread_id, model.id, window.budget)


# One wake-up per thread per this many seconds: while the summarizer works,
# every run of the thread would otherwise enqueue another task.
ENQUEUE_DEDUPE_SECONDS = 30


def _enqueue(thread_id: str, model_id: str, budget: int) -> None:
    from assistants.runs import events

    try:
        fresh = events.client().set(
            f"agents:summarize:{thread_id}", 1, nx=True, ex=ENQUEUE_DEDUPE_SECONDS
        )
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        # Redis is restarting: summaries are an optimisation, a later run of
        # the thread asks again; this run must not fail for it.
        logger.warning("thread %s: summary not queued, Redis unavailable", thread_id)
        return
    if not fresh:
        return
    transaction.on_commit(_summarize_later(thread_id, model_id, budget))


def _summarize_later(thread_id: str, model_id: str, budget: int) -> Callable[[], None]:
    def send() -> None:
        from assistants.tasks import thread_summarize_task

        try:
            thread_summarize_task.delay(thread_id, model_id, budget)
        except (kombu.exceptions.OperationalError, redis.exceptions.RedisError):
            logger.warning(
                "thread %s: summary not queued, broker unavailable", thread_id
            )

    return send


@contextmanager
def _thread_lock(thread_id: str) -> Iterator[bool]:
    """A session-level advisory lock (no transaction is held across the
    model call); yields whether this process got it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 7))", [thread_id]
        )
        (got,) = cursor.fetchone()
    try:
        yield bool(got)
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 7))", [thread_id]
                )


def _summarizer(model_id: str) -> LanguageModel | None:
    name = str(settings.SUMMARY_MODEL or "") or model_id
    return LanguageModel.objects.filter(pk=name, is_active=True).first()


def _transcript(messages: list[Message]) -> str:
    return "\n".join(f"[{m.role}] {tokens.message_text(m.content)}" for m in messages)


def _ask(
    model: LanguageModel, system: str, text: str, *, max_tokens: int, route: str
) -> str:
    out = ask(model, system, text, max_tokens=max_tokens, route_key=route)
    if not out:
        raise EngineError("the summarizer answered nothing", transient=True)
    return out


def thread_summarize(*, thread_id: str, model_id: str, budget: int) -> int:
    """Make the summary blocks that are due for ``thread_id``; returns how
    many were made. Safe to run twice (blocks are unique by start; one
    summarizer per thread at a time). Raises EngineError when the model
    fails (the caller logs it; runs are not affected)."""
    model = LanguageModel.objects.filter(pk=model_id).first()
    summarizer = _summarizer(model_id)
    if model is None or summarizer is None:
        logger.warning("no summarizer model for thread %s", thread_id)
        return 0
    block_tokens = max(1, int(budget * float(settings.SUMMARY_BLOCK_SHARE)))
    keep_tokens = int(budget * float(settings.SUMMARY_KEEP_SHARE))
    # About 10:1 (a word is ~1.3 tokens): the summaries of a long history
    # stay a small part of the prompt.
    words = max(20, min(300, block_tokens // 13))
    made = 0
    with _thread_lock(thread_id) as got:
        if not got:
            return 0
        for _ in range(MAX_BLOCKS_PER_TASK):
            last = (
                ThreadSummary.objects.filter(thread_id=thread_id)
                .order_by("-until_seq", "level")
                .first()
            )
            start = last.until_seq if last else 0
            rows, _ = read_messages(
                thread_id,
                after_seq=start,
                model=model,
                limit_tokens=block_tokens + keep_tokens,
                newest_first=False,
            )
            total = sum(tokens.size(m, model) for m in rows)
            if total <= block_tokens + keep_tokens:
                break  # not enough history beyond a block yet
            block: list[Message] = []
            used = 0
            for message in rows:
                size = tokens.size(message, model)
                if block and used + size > block_tokens:
                    break
                block.append(message)
                used += size
            transcript = _transcript(block)
            if last is not None:
                transcript = f"(Summary so far: {last.text})\n\n{transcript}"
            text = _ask(
                summarizer,
                SUMMARY_PROMPT.format(words=words),
                transcript,
                max_tokens=words * 2,
                route=thread_id,
            )
            try:
                ThreadSummary.objects.create(
                    thread_id=thread_id,
                    from_seq=start,
                    until_seq=block[-1].seq,
                    level=1,
                    message_count=len(block),
                    text=text,
                    token_count=tokens.count(model, text) + 2,
                    model=summarizer.id,
                )
            except IntegrityError:
                continue  # made meanwhile by another worker
            made += 1
            _embed(thread_id, block)
        _merge_if_due(thread_id, model, summarizer, budget, words)
    return made


def _embed(thread_id: str, block: list[Message]) -> None:
    """Embeddings of a summarised block's messages, for recall. Skipped (and
    logged) when the embedding service is unavailable."""
    texts = [tokens.message_text(m.content) for m in block]
    try:
        from tools.embeddings import embed

        vectors = embed(texts)
    except Exception as exc:
        logger.warning("recall embeddings skipped for %s: %s", thread_id, exc)
        return
    MessageEmbedding.objects.bulk_create(
        [
            MessageEmbedding(
                message_id=m.pk, thread_id=thread_id, seq=m.seq, embedding=v
            )
            for m, v in zip(block, vectors, strict=True)
        ],
        ignore_conflicts=True,
    )


def _merge_if_due(
    thread_id: str,
    model: LanguageModel,
    summarizer: LanguageModel,
    budget: int,
    words: int,
) -> None:
    """Merge the oldest half of the summaries in the thread's prompt when
    they grew too many or too long, and delete summaries that a merged one
    covers and no prompt uses any more. Prompts switch to the merged one
    when the boundary next moves (context.py), not before."""
    state = (
        Thread.objects.filter(pk=thread_id)
        .values_list("context_summary_ids", flat=True)
        .first()
    ) or []
    rows = {s.pk: s for s in ThreadSummary.objects.filter(thread_id=thread_id)}
    in_prompt = [rows[i] for i in state if i in rows]
    _collect(thread_id, rows, set(state))
    size = sum(b.token_count for b in in_prompt)
    too_many = len(in_prompt) > int(settings.SUMMARY_MAX_BLOCKS)
    too_long = size > budget * float(settings.SUMMARY_MAX_SHARE)
    if len(in_prompt) < 2 or not (too_many or too_long):
        return
    merged = _merge_group(in_prompt)
    if merged is None:
        return
    level = max(b.level for b in merged) + 1
    if any(
        r.from_seq == merged[0].from_seq
        and r.until_seq >= merged[-1].until_seq
        and r.level >= level
        for r in rows.values()
    ):
        return  # made already; waiting for the boundary to move
    text = _ask(
        summarizer,
        MERGE_PROMPT.format(words=words),
        "\n\n".join(b.text for b in merged),
        max_tokens=words * 2,
        route=thread_id,
    )
    with suppress(IntegrityError):  # made meanwhile
        ThreadSummary.objects.create(
            thread_id=thread_id,
            from_seq=merged[0].from_seq,
            until_seq=merged[-1].until_seq,
            level=level,
            message_count=sum(b.message_count for b in merged),
            text=text,
            token_count=tokens.count(model, text) + 2,
            model=summarizer.id,
        )


def _merge_group(in_prompt: list[ThreadSummary]) -> list[ThreadSummary] | None:
    """Which summaries to merge: MERGE_GROUP consecutive ones of the lowest
    level that has that many in a row. Like a binary counter, the level-1
    blocks at the end merge often and the big summaries at the front
    rarely, so a merge changes the prompt late in its summary section."""
    for level in sorted({s.level for s in in_prompt}):
        run: list[ThreadSummary] = []
        for summary in in_prompt:
            run = run + [summary] if summary.level == level else []
            if len(run) == MERGE_GROUP:
                return run
    return None


def _collect(thread_id: str, rows: dict[int, ThreadSummary], used: set[int]) -> None:
    """Delete summaries inside a higher-level one's span that the prompt no
    longer uses."""
    covered = [
        r.pk
        for r in rows.values()
        if r.pk not in used
        and any(
            o.level > r.level
            and o.from_seq <= r.from_seq
            and r.until_seq <= o.until_seq
            for o in rows.values()
        )
    ]
    if covered:
        ThreadSummary.objects.filter(thread_id=thread_id, pk__in=covered).delete()
