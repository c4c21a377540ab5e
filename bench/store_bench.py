"""Store pages with 10,000 public listings: home and search p50/p95.

Run under the launcher, which starts the embedded PostgreSQL and Redis::

    make bench-store
    make bench-store BENCH_STORE_ARGS="--listings 10000 --requests 200"

Creates a bench organization with N assistants, each published (5 %
featured) and embedded for semantic search (the retrieval model), and 2,000
conversations with three runs each over the last nine days (trending counts
runs);
then renders each page through Django's test client in-process (view,
queries, template; no HTTP), after a warm-up, and prints p50/p95 per page.
The organization (and with it every row made here) is deleted at the end.
Writes bench/results/store-<timestamp>.json.

Not measured yet (next slice): time to first streamed token in the browser
chat against the same run streamed through the API.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402  (needs the project root on sys.path)
    RESULTS_DIR,
    WORDS,
    django_path_setup,
)

django_path_setup()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def seed(
    listings: int,
    conversations: int,
    *,
    embed: bool = True,
    runs_per_conversation: int = 3,
) -> Any:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from assistants.models import Assistant, Run, Thread
    from core.models import Organization, Project
    from store.models import Conversation, Listing

    # An interrupted earlier run may have left its rows behind.
    Organization.objects.filter(name__startswith="store bench ").delete()
    User.objects.filter(username__startswith="storebench").delete()
    rng = random.Random(7)
    stamp = time.time_ns()
    org = Organization.objects.create(name=f"store bench {stamp}")
    project = Project.objects.create(organization=org, name="bench")
    user = User.objects.create_user(username=f"storebench{stamp}")
    assistants = [
        Assistant(
            project=project,
            model="bench-model",
            name=" ".join(rng.sample(WORDS, 2)).title(),
            description=" ".join(rng.sample(WORDS, 8)),
            instructions="hidden",
        )
        for _ in range(listings)
    ]
    Assistant.objects.bulk_create(assistants, batch_size=2000)
    categories = Listing.Category.values
    Listing.objects.bulk_create(
        [
            Listing(
                assistant=a,
                slug=f"bench-{stamp}-{i}",
                category=rng.choice(categories),
                short_description=" ".join(rng.sample(WORDS, 6)),
                visibility=Listing.Visibility.PUBLIC,
                featured=rng.random() < 0.05,
                builder=user,
            )
            for i, a in enumerate(assistants)
        ],
        batch_size=2000,
    )
    ids = list(
        Listing.objects.filter(assistant__project=project).values_list("pk", flat=True)
    )
    if embed:
        # As the store's worker task would (store.services.listing).
        from store.services.listing import listing_text
        from tools.embeddings import embed as embed_texts

        rows = list(
            Listing.objects.filter(pk__in=ids)
            .select_related("assistant")
            .order_by("pk")
        )
        vectors = embed_texts([listing_text(x) for x in rows])
        for row, vector in zip(rows, vectors, strict=True):
            row.embedding = vector
        Listing.objects.bulk_update(rows, ["embedding"], batch_size=1000)
    threads = Thread.objects.bulk_create(
        [Thread(project=project) for _ in range(conversations)], batch_size=2000
    )
    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(
                # Skewed: a few listings get most conversations.
                listing_id=ids[int(rng.paretovariate(1.2)) % len(ids)],
                thread=t,
                created_at=now - timedelta(seconds=rng.uniform(0, 9 * 86400)),
            )
            for t in threads
        ],
        batch_size=2000,
    )
    # Trending counts runs (store.selectors.listings_trending): each
    # conversation gets a few finished runs over the same nine days.
    assistant_of = dict(
        Listing.objects.filter(pk__in=ids).values_list("pk", "assistant_id")
    )
    conversation_rows = Conversation.objects.filter(thread__in=threads).values_list(
        "listing_id", "thread_id"
    )
    Run.objects.bulk_create(
        [
            Run(
                project=project,
                thread_id=thread_id,
                assistant_id=assistant_of[listing_id],
                model="bench-model",
                status="completed",
                created_at=now - timedelta(seconds=rng.uniform(0, 9 * 86400)),
            )
            for listing_id, thread_id in conversation_rows
            for _ in range(runs_per_conversation)
        ],
        batch_size=2000,
    )
    return org


def measure(client: Any, url: str, requests: int) -> dict[str, float]:
    for _ in range(5):
        assert client.get(url).status_code == 200, url
    times: list[float] = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(pct(times, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--no-embed",
        action="store_true",
        help="leave the listings without embeddings (semantic search finds none)",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", "--noinput", verbosity=0)

    started = time.perf_counter()
    org = seed(args.listings, args.conversations, embed=not args.no_embed)
    print(f"seeded {args.listings} listings in {time.perf_counter() - started:.1f}s")
    client = Client()
    pages = {
        "home": "/store/",
        "search one word": "/store/search?q=violin",
        "search two words": "/store/search?q=copper+falcon",
        "search no match": "/store/search?q=zzzzqqq",
        "category": "/store/search?category=writing",
        "sitemap": "/store/sitemap.xml",
    }
    results: dict[str, dict[str, float]] = {}
    try:
        for name, url in pages.items():
            results[name] = measure(client, url, args.requests)
            print(
                f"{name:18} p50 {results[name]['p50_ms']:7.1f} ms   "
                f"p95 {results[name]['p95_ms']:7.1f} ms"
            )
    finally:
        org.delete()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"store-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"args": vars(args), "pages": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
