"""Filter indexes: an HNSW index over the chunks of one store that pass one
filter, for the filters assistants search a large store with
(tools.models.FilterIndex says when one pays)::

    manage.py filter_index create vs_... '{"type": "eq", "key": "team", "value": "x"}'
    manage.py filter_index list [vs_...]
    manage.py filter_index drop vs_... '{"type": "eq", "key": "team", "value": "x"}'

A filter of ``'{}'`` is the store's own graph: for a store sharing the
table with others, every one of its searches uses it.

``create`` builds the index concurrently (ingestion and searches go on)
with a progress bar over the table's blocks, then prints the chunks it
holds and the build time; declaring an index the store has is a no-op.
Searches of that store whose filter is the declared one, or an ``and``
holding it, use it from then on. ``list`` shows the declared ones and the
ones searches proposed (automatic), tab-separated: store, index, status,
origin, chunks, proposing searches counted, filter (and the error, if any).
Declaring a proposed one builds it now, as the operator's.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from core.errors import ApplicationError
from tools.models import FilterIndex, VectorStore
from tools.services.filter_index import (
    BuildProgress,
    filter_index_create,
    filter_index_drop,
    filter_index_get,
)


def _store(store_id: str) -> VectorStore:
    store = VectorStore.objects.filter(pk=store_id).first()
    if store is None:
        raise CommandError(f"no vector store '{store_id}'")
    return store


def _filters(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"the filter is not JSON: {exc}") from None


class Command(BaseCommand):
    help = "Create, list or drop the filter indexes of vector stores."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="build a filter index")
        create.add_argument("vector_store")
        create.add_argument(
            "filters",
            help="a search's filters object, as JSON ('{}': the store's own graph)",
        )
        create.add_argument(
            "--build-mem",
            help="maintenance_work_mem for the build (e.g. 2GB): a graph "
            "that fits builds several times faster",
        )
        listing = sub.add_parser("list", help="list filter indexes")
        listing.add_argument("vector_store", nargs="?")
        drop = sub.add_parser("drop", help="drop a filter index")
        drop.add_argument("vector_store")
        drop.add_argument("filters")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None

    def _create(self, options: dict[str, Any]) -> None:
        store = _store(options["vector_store"])
        if options["build_mem"]:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('maintenance_work_mem', %s, false)",
                    [options["build_mem"]],
                )
        bar = tqdm(total=0, unit="block", desc="building", disable=None)

        def progress(p: BuildProgress) -> None:
            if p.blocks_total and bar.total != p.blocks_total:
                bar.reset(total=p.blocks_total)
            bar.set_description(p.phase)
            bar.n = min(p.blocks_done, bar.total or p.blocks_done)
            bar.refresh()

        index = filter_index_create(
            vector_store=store,
            filters=_filters(options["filters"]),
            progress=progress,
        )
        bar.close()
        if index.status == FilterIndex.Status.FAILED:
            raise CommandError(f"{index.name} failed: {index.last_error}")
        self.stdout.write(
            f"{index.name}: {index.status}, {index.rows} chunks"
            + (f", built in {index.build_seconds:.1f} s" if index.build_seconds else "")
        )

    def _list(self, options: dict[str, Any]) -> None:
        indexes = FilterIndex.objects.order_by("vector_store_id", "id")
        if options["vector_store"]:
            indexes = indexes.filter(vector_store_id=options["vector_store"])
        for index in indexes:
            origin = "automatic" if index.automatic else "declared"
            self.stdout.write(
                f"{index.vector_store_id}\t{index.name}\t{index.status}\t"
                f"{origin}\t{index.rows}\t{index.searches}\t"
                f"{json.dumps(index.filters)}"
                + (f"\t{index.last_error}" if index.last_error else "")
            )

    def _drop(self, options: dict[str, Any]) -> None:
        store = _store(options["vector_store"])
        index = filter_index_get(
            vector_store=store, filters=_filters(options["filters"])
        )
        if index is None:
            raise CommandError("the store has no filter index for that filter")
        filter_index_drop(filter_index=index)
        self.stdout.write(f"{index.name} dropped")
