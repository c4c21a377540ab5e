"""Vector stores with chunks written straight to the table (no parsing, no
model): for the tests of what search does with rows, whose vectors are
random unit vectors unless given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tools.models import Chunk, File, VectorStore, VectorStoreFile

DIM = 384


def store_file(tenant: Any, store: VectorStore, name: str) -> VectorStoreFile:
    """A completed file ``name``.txt of ``store``."""
    file = File.objects.create(
        project=tenant.project, filename=f"{name}.txt", purpose="assistants", bytes=1
    )
    return VectorStoreFile.objects.create(
        vector_store=store, file=file, status="completed", chunking_strategy={}
    )


def unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def chunks_add(
    vsf: VectorStoreFile,
    texts: Sequence[str],
    *,
    seed: int = 0,
    attributes: Sequence[dict[str, Any]] | None = None,
) -> list[int]:
    """``texts`` as the file's chunks (one INSERT per 1,000), in order;
    their ids."""
    vectors = unit_vectors(len(texts), seed)
    rows = Chunk.objects.bulk_create(
        [
            Chunk(
                vector_store_id=vsf.vector_store_id,
                vector_store_file_id=vsf.id,
                file_id=vsf.file_id,
                position=i,
                text=text,
                tokens=len(text.split()),
                attributes=attributes[i] if attributes else {},
                embedding=vector.tolist(),
            )
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        ],
        batch_size=1000,
    )
    return [row.id for row in rows]
