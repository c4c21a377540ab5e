"""Infinite threads: prompt-prefix stability and context assembly cost.

Run under the launcher, which starts the embedded PostgreSQL::

    make bench-context
    make bench-context BENCH_CONTEXT_ARGS="--turns 300 --sizes 1000,100000,1000000"

1. Prefix stability. A 300-turn conversation on a model with a small window
   (4,096 tokens) outgrows it several times. After each user message the
   platform's prompt is assembled (assistants.runs.context) exactly as a run
   does, rendered with the ChatML template the local engine uses, and
   tokenized; the figure is the share of each prompt's token ids that equals
   a prefix of the previous prompt's, averaged over the turns. The baseline,
   in the same run: naive sliding-window truncation (the newest messages
   that fit the same budget). The summarizer runs when it is due, as the
   worker would (synchronously here, so the figure is for a summarizer that
   keeps up); its model is replaced by a deterministic stub (a summary's
   words do not change where the prompt's prefix ends).
2. Assembly time for threads of 10^3, 10^5 and 10^6 messages (inserted with
   one INSERT … SELECT generate_series; four summary blocks cover all but
   the newest 40 messages, as in a long-lived thread): p50/p95 of
   ``context.assemble`` and the ratio of the largest to the smallest.
   Recall (embedding the question, one HNSW query) is measured apart, on
   the smallest thread, since it costs the same at any size.

Prints a table; writes bench/results/context-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402  (needs the project root on sys.path)
    BASE_DIR,
    RESULTS_DIR,
    WORDS,
    django_path_setup,
)

django_path_setup()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + "."


def _setup() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)


def _tenant() -> Any:
    from core.models import Organization
    from core.services.tenancy import project_create

    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    organization = Organization.objects.create(name=f"context bench {stamp}")
    return project_create(organization=organization, name="bench")


def _tokenizer() -> tuple[str, Any]:
    """Token ids for the measurement: the embedding model's tokenizer
    (shipped in a package), else words."""
    try:
        from tools.embeddings import _load_tokenizer

        tok = _load_tokenizer()
        return (
            "embedding model tokenizer",
            lambda text: tok.encode(text, add_special_tokens=False).ids,
        )
    except Exception:  # pragma: no cover - depends on the install
        return "whitespace words", lambda text: text.split()


def _chatml(messages: list[dict[str, Any]]) -> str:
    return "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages
    )


def _lcp(a: list[Any], b: list[Any]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_stability(project: Any, turns: int, window: int) -> dict[str, Any]:
    from django.conf import settings

    from assistants.models import Message, Run, Thread
    from assistants.runs import context, memory, tokens
    from core.services.models import language_model_register

    settings.CONTEXT_RECALL_SHARE = 0  # recall is per turn, after the prefix
    model = language_model_register(
        name="bench-context-model",
        base_urls=["http://127.0.0.1:9/v1"],
        context_window=window,
    )

    def stub_ask(
        _model: Any, _system: str, text: str, *, max_tokens: int, **_: Any
    ) -> str:
        # As long as the prompt asks (max_tokens is twice the word limit).
        words = [w for w in text.split() if not w.startswith("[")]
        return "They discussed " + " ".join(words[: max_tokens // 2]) + "."

    memory._ask = stub_ask  # type: ignore[assignment]
    name, tokenize = _tokenizer()
    rng = random.Random(42)
    thread = Thread.objects.create(project=project)
    budget = context.prompt_budget(
        Run(instructions="", truncation_strategy={}), model, 0
    )
    platform: list[float] = []
    naive: list[float] = []
    overflowed_at: int | None = None
    previous: list[Any] | None = None
    previous_naive: list[Any] | None = None
    summaries_made = 0
    fallbacks = 0
    instructions = "You are a helpful assistant. Answer briefly and precisely."
    for turn in range(turns):
        Message.objects.create(
            thread=thread,
            role="user",
            content=[
                {
                    "type": "text",
                    "text": {"value": _sentence(rng, 8, 30), "annotations": []},
                }
            ],
        )
        run = Run.objects.create(
            project=project,
            thread=thread,
            assistant_id="asst_bench",
            model=model.id,
            instructions=instructions,
            status="completed",
        )
        window_ = context.assemble(run, model, tools=[])
        assert window_ is not None
        if window_.notes:
            fallbacks += 1
        ids = tokenize(_chatml(window_.messages))
        # Naive: instructions + the newest messages that fit the same budget.
        newest = list(Message.objects.filter(thread=thread).order_by("-seq")[:400])
        room = budget - tokens.count(model, instructions) - tokens.MESSAGE_OVERHEAD
        kept: list[Any] = []
        for m in newest:
            room -= tokens.size(m, model)
            if room < 0:
                break
            kept.append(m)
        kept.reverse()
        naive_messages = [{"role": "system", "content": instructions}] + [
            {"role": m.role, "content": tokens.message_text(m.content)} for m in kept
        ]
        naive_ids = tokenize(_chatml(naive_messages))
        if len(kept) < Message.objects.filter(thread=thread).count() and (
            overflowed_at is None
        ):
            overflowed_at = turn
        if previous is not None and previous_naive is not None:
            platform.append(_lcp(previous, ids) / len(ids))
            if os.environ.get("BENCH_DEBUG"):
                print(
                    f"turn {turn}: share {platform[-1]:.2f} boundary "
                    f"{window_.boundary_seq} summaries {window_.summaries} "
                    f"history {window_.history} tokens {window_.prompt_tokens} "
                    f"ids {len(ids)}"
                )
            naive.append(_lcp(previous_naive, naive_ids) / len(naive_ids))
        previous, previous_naive = ids, naive_ids
        Message.objects.create(
            thread=thread,
            role="assistant",
            content=[
                {
                    "type": "text",
                    "text": {"value": _sentence(rng, 10, 40), "annotations": []},
                }
            ],
        )
        pending = window_.unsummarized_tokens
        if pending is None or pending > budget * float(settings.SUMMARY_TRIGGER_SHARE):
            summaries_made += memory.thread_summarize(
                thread_id=thread.id, model_id=model.id, budget=budget
            )
    after = overflowed_at or 0
    tail_platform = platform[after:] or platform
    tail_naive = naive[after:] or naive
    return {
        "turns": turns,
        "window": window,
        "budget": budget,
        "tokenizer": name,
        "first_overflow_turn": overflowed_at,
        "summaries_made": summaries_made,
        "truncation_fallbacks": fallbacks,
        "platform_mean": statistics.fmean(platform),
        "platform_mean_after_overflow": statistics.fmean(tail_platform),
        "platform_turns_below_half": sum(1 for s in platform if s < 0.5),
        "naive_mean": statistics.fmean(naive),
        "naive_mean_after_overflow": statistics.fmean(tail_naive),
        "naive_turns_below_half": sum(1 for s in naive if s < 0.5),
    }


def _fill(thread_id: str, n: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO assistants_message
                (id, created_at, thread_id, role, content, attachments, status,
                 metadata, token_count, token_model)
            SELECT 'msg_bench_' || %s || '_' || g, now(), %s,
                   CASE WHEN g %% 2 = 0 THEN 'assistant' ELSE 'user' END,
                   jsonb_build_array(jsonb_build_object(
                       'type', 'text', 'text', jsonb_build_object(
                           'value', 'message number ' || g ||
                                    ' about the garden and the budget',
                           'annotations', '[]'::jsonb))),
                   '[]'::jsonb, 'completed', '{}'::jsonb, 14, 'bench-scale-model'
            FROM generate_series(1, %s) AS g
            """,
            [thread_id, thread_id, n],
        )
        # As autovacuum would after a bulk load: plans from fresh statistics.
        cursor.execute("ANALYZE assistants_message")


def assembly_time(project: Any, sizes: list[int], iterations: int) -> dict[str, Any]:
    from django.conf import settings

    from assistants.models import Message, Run, Thread, ThreadSummary
    from assistants.runs import context
    from core.services.models import language_model_register

    model = language_model_register(
        name="bench-scale-model",
        base_urls=["http://127.0.0.1:9/v1"],
        context_window=8192,
    )
    out: dict[str, Any] = {}
    for n in sizes:
        settings.CONTEXT_RECALL_SHARE = 0
        thread = Thread.objects.create(project=project)
        started = time.perf_counter()
        _fill(thread.id, n)
        filled = time.perf_counter() - started
        seqs = list(
            Message.objects.filter(thread=thread)
            .order_by("-seq")
            .values_list("seq", flat=True)[:41]
        )
        first_seq = (
            Message.objects.filter(thread=thread)
            .order_by("seq")
            .values_list("seq", flat=True)
            .first()
        )
        end = seqs[-1]
        assert first_seq is not None
        cuts = [0] + [first_seq + (end - first_seq) * k // 4 for k in (1, 2, 3)] + [end]
        for k in range(4):
            ThreadSummary.objects.create(
                thread=thread,
                from_seq=cuts[k],
                until_seq=cuts[k + 1],
                level=3,
                message_count=1,
                text=f"Summary block {k}: the garden and the budget.",
                token_count=40,
                model=model.id,
            )
        Thread.objects.filter(pk=thread.pk).update(context_boundary_seq=end)
        run = Run.objects.create(
            project=project,
            thread=thread,
            assistant_id="asst_bench",
            model=model.id,
            instructions="You are a helpful assistant.",
            status="completed",
        )
        times: list[float] = []
        for i in range(iterations + 3):
            t0 = time.perf_counter()
            # As a run's first turn does (no tool exchanges to read yet).
            window = context.assemble(run, model, tools=[], tool_steps=False)
            elapsed = (time.perf_counter() - t0) * 1000
            assert window is not None and window.history == 40
            if i >= 3:
                times.append(elapsed)
        times.sort()
        out[str(n)] = {
            "messages": n,
            "insert_seconds": round(filled, 1),
            "p50_ms": statistics.median(times),
            "p95_ms": times[int(0.95 * (len(times) - 1))],
        }
    smallest, largest = str(min(sizes)), str(max(sizes))
    out["ratio_largest_to_smallest_p50"] = (
        out[largest]["p50_ms"] / out[smallest]["p50_ms"]
    )
    return out


def recall_time(project: Any, iterations: int) -> dict[str, Any]:
    """The recall section's cost alone: embed the question, one HNSW query."""
    from assistants.models import Message, MessageEmbedding, Thread
    from assistants.runs import context
    from core.services.models import language_model_register
    from tools.embeddings import embed

    model = language_model_register(
        name="bench-scale-model",
        base_urls=["http://127.0.0.1:9/v1"],
        context_window=8192,
    )
    thread = Thread.objects.create(project=project)
    _fill(thread.id, 1000)
    rows = list(Message.objects.filter(thread=thread).order_by("seq")[:500])
    vectors = embed([f"message {i} about the garden" for i in range(len(rows))])
    MessageEmbedding.objects.bulk_create(
        [
            MessageEmbedding(message=m, thread_id=thread.id, seq=m.seq, embedding=v)
            for m, v in zip(rows, vectors, strict=True)
        ]
    )
    history = list(Message.objects.filter(thread=thread).order_by("-seq")[:2])
    times: list[float] = []
    for i in range(iterations + 3):
        t0 = time.perf_counter()
        lines = context._recall(thread.id, rows[-1].seq, history, model, 500)
        elapsed = (time.perf_counter() - t0) * 1000
        assert lines
        if i >= 3:
            times.append(elapsed)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--skip-stability", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    _setup()
    project = _tenant()
    stability: dict[str, Any] | None = None
    if not args.skip_stability:
        print(f"[bench] prefix stability over {args.turns} turns", flush=True)
        stability = prefix_stability(project, args.turns, args.window)
    print(f"[bench] assembly time at {sizes} messages", flush=True)
    assembly = assembly_time(project, sizes, args.iterations)
    try:
        recall: dict[str, Any] | None = recall_time(project, args.iterations)
    except Exception as exc:  # the embedding model is not installed
        print(f"[bench] recall skipped: {exc}")
        recall = None
    print()
    s = stability
    if s is not None:
        print(
            f"Prefix stability ({s['turns']} turns, window {s['window']}, "
            f"budget {s['budget']}, token ids by {s['tokenizer']}):"
        )
        print(
            f"  first overflow at turn {s['first_overflow_turn']}; "
            f"{s['summaries_made']} summary blocks made; "
            f"{s['truncation_fallbacks']} runs fell back to truncation"
        )
        print(
            f"  platform: mean shared prefix {s['platform_mean']:.1%} "
            f"(after the first overflow {s['platform_mean_after_overflow']:.1%}; "
            f"{s['platform_turns_below_half']} turns below 50%)"
        )
        print(
            f"  naive sliding window: {s['naive_mean']:.1%} "
            f"(after the first overflow {s['naive_mean_after_overflow']:.1%}; "
            f"{s['naive_turns_below_half']} turns below 50%)"
        )
    print("Context assembly (auto truncation, 4 summary blocks, 40 recent):")
    for n in sizes:
        row = assembly[str(n)]
        print(
            f"  {n:>9,} messages: p50 {row['p50_ms']:.2f} ms, "
            f"p95 {row['p95_ms']:.2f} ms (filled in {row['insert_seconds']} s)"
        )
    print(
        f"  ratio {max(sizes):,}/{min(sizes):,} (p50): "
        f"{assembly['ratio_largest_to_smallest_p50']:.2f}"
    )
    if recall:
        print(
            f"Recall (embed the question + HNSW query): p50 {recall['p50_ms']:.1f} ms, "
            f"p95 {recall['p95_ms']:.1f} ms"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"context-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {"stability": stability, "assembly": assembly, "recall": recall}, indent=2
        )
    )
    print(f"\nwritten {path.relative_to(BASE_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
