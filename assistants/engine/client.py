"""Chat completions from OpenAI-compatible engines (vLLM, llama.cpp, ...).

``chat_stream`` is the one entry point the run executor uses. It speaks
``POST {base_url}/chat/completions`` over HTTP, streams the answer token by
token as ``ChatChunk`` objects, spreads calls over a model's replicas, and
turns every failure into an ``EngineError`` that says whether retrying may
help.

Engines differ; a model's ``capabilities`` (the registry's JSON field) say
how this one behaves. Keys read here, with their defaults:

``stream_tools`` (bool, default ``True``)
    The engine can stream an answer while tools are offered. When ``False``
    and tools are offered with ``tool_choice`` other than ``"none"``, the
    request is made without streaming and its result is replayed as chunks
    (content, then tool calls, then finish reason and usage).
    llama-cpp-python's server needs this: it raises "Automatic streaming
    tool choice is not supported" and sends an empty stream.
``structured_outputs`` (``"openai"`` | ``"llamacpp"`` | ``"none"``, default
``"openai"``)
    How ``response_format`` reaches the engine. ``openai`` passes it
    through unchanged (vLLM 0.12+, which dropped the old ``guided_*``
    fields). ``llamacpp`` sends a ``json_schema`` format as
    ``{"type": "json_object", "schema": <schema>}``, the shape
    llama-cpp-python turns into a grammar. ``none`` drops it; the executor
    validates the answer either way.
``parallel_tool_calls`` (bool, default ``True``)
    The engine accepts the ``parallel_tool_calls`` parameter. When
    ``False`` it is not sent (the executor enforces the limit itself).
``tool_choice_required`` (bool, default ``True``)
    The engine accepts ``tool_choice="required"``. When ``False``
    (llama-cpp-python answers it with a 500), ``"required"`` is sent as the
    named choice when exactly one tool is offered and as ``"auto"``
    otherwise; the executor must then check that a tool was called.

Other keys (``tools``, ``json_schema``, ``vision``) describe the model to the
rest of the platform and are not read here.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import queue
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from django.conf import settings

from assistants.engine import transport

if TYPE_CHECKING:
    from core.models import LanguageModel

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 300.0
# How often should_stop() is polled while the engine sends nothing (prompt
# processing, a non-streamed answer, a stalled engine).
STOP_POLL_SECONDS = 0.25
# Error bodies are quoted in messages that end up in a run's last_error.
_MAX_QUOTE = 500
STRUCTURED_OUTPUT_MODES = ("openai", "llamacpp", "none")


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion. ``messages`` and ``tools`` are in OpenAI's chat
    format; ``None`` fields are not sent, so the engine's defaults apply."""

    model: LanguageModel
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    request_id: str = ""
    # Requests with one route key go to one replica while it is up (the
    # thread's id: its prompt prefix is then in that replica's cache).
    route_key: str = ""


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the tool call at ``index``.

    ``id`` and ``name`` come on the first delta of an index only (engines
    that repeat them on every delta, like llama-cpp-python, are normalised),
    so they are set-once; ``arguments`` is a fragment to append.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None


@dataclass(frozen=True)
class ChatChunk:
    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None


class EngineError(Exception):
    """The engine could not give an answer.

    ``transient`` is True when trying again later may succeed (unreachable,
    timed out, 5xx, 408/429, a stream cut short) and False when the same
    request will fail again (4xx, an answer that is not a chat completion,
    a misconfigured model entry). ``message`` is fit for a run's last_error.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce passes only args; transient is keyword-only.
        return (_rebuild_engine_error, (self.message, self.transient))


def _rebuild_engine_error(message: str, transient: bool) -> EngineError:
    return EngineError(message, transient=transient)


# Derives a stable UUID from a request id that is not one.
_REQUEST_ID_NAMESPACE = uuid.UUID("7f3d2c1e-5b4a-4e8f-9a6b-0c1d2e3f4a5b")


def engine_request_id(request_id: str) -> str:
    """The request id as the engine will accept it: a canonical UUID.

    llama-cpp-python's server answers any other ``X-Request-Id`` with an empty
    400 (its request-id middleware validates UUIDs); vLLM takes anything. Our
    ids are UUIDs already; a client's own id is mapped to a stable UUID so the
    engine's logs still correlate with ours.
    """
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, request_id))


def _never() -> bool:
    return False


class _Helpers:
    """Daemon threads for engine exchanges, kept for the next call.

    Starting a thread per call cost ~0.5 ms on the way to the first token
    (``Thread.start`` waits until the new thread has been scheduled). An
    idle helper is handed the next exchange instead; there are at most as
    many as exchanges ever ran at once (a runs worker's concurrency).
    Daemons, as the per-call threads were: an exchange stuck past its
    abort never holds up the process's exit. Forked children start with
    none (the parent's threads do not exist there).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[
            queue.SimpleQueue[tuple[Callable[[], None], threading.Event]]
        ] = []
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._idle = []

    def submit(self, job: Callable[[], None]) -> threading.Event:
        """Run ``job`` on a helper; the event is set when it has returned."""
        done = threading.Event()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(inbox,), name="engine", daemon=True
            ).start()
        inbox.put((job, done))
        return done

    def _serve(
        self, inbox: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]]
    ) -> None:
        while True:
            job, done = inbox.get()
            try:
                job()  # _Call.run: hands every error to the caller's thread
            finally:
                done.set()
                with self._lock:
                    self._idle.append(inbox)


_helpers = _Helpers()


def chat_stream(
    request: ChatRequest,
    *,
    should_stop: Callable[[], bool] = _never,
    on_sent: Callable[[], None] | None = None,
) -> Generator[ChatChunk, None, None]:
    """Yield the engine's answer to ``request`` chunk by chunk.

    Chunks without content, tool calls, finish reason or usage are skipped.
    The last chunks carry ``finish_reason`` and, when the engine reports it,
    ``usage`` (llama-cpp-python reports none when streaming). A normal end
    is the generator returning after a chunk with a finish reason.

    ``should_stop`` is called after every chunk and every 0.25 s while the
    engine sends nothing; keep it cheap. When it returns True the engine
    request is aborted (its connection is shut down, which vLLM and
    llama.cpp take as a cancel) and the generator returns without error.
    Closing the generator early (``close()``, leaving a ``with closing``
    block) aborts the request the same way.

    ``on_sent`` runs on the caller's thread once the exchange has started
    on the helper thread, before the first chunk is awaited: work that
    overlaps the engine's time to first token. If it raises, the request
    is aborted and the error propagates.

    Replicas: a request with a ``route_key`` goes to the replica that
    rendezvous hashing picks for that key (the same in every process, and
    only keys of a removed replica move when the list changes); others
    rotate over ``model.base_urls`` (a process-local round robin). A replica
    that refuses the connection or drops it before answering is skipped for
    the next one in that order. Once the engine has answered,
    errors are raised, never retried here.

    Raises ``EngineError`` (see its ``transient`` flag). The HTTP exchange
    runs on a helper thread so that a silent engine cannot stop
    ``should_stop`` from being honoured; every wait is bounded by the
    connect (5 s) and read (``settings.ENGINE_READ_TIMEOUT``) timeouts.
    """
    call = _Call.prepare(request)
    exchange = _helpers.submit(call.run)
    try:
        if on_sent is not None:
            on_sent()
        while True:
            try:
                item = call.results.get(timeout=STOP_POLL_SECONDS)
            except queue.Empty:
                if should_stop():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, ChatChunk)
            yield item
            if should_stop():
                return
    finally:
        call.abort()
        # Bounded: after abort() the helper thread only unwinds. Waiting lets
        # the connection be closed before the caller moves on.
        exchange.wait(timeout=2)


def ask(
    model: LanguageModel,
    system: str,
    text: str,
    *,
    max_tokens: int,
    route_key: str = "",
    deadline: float | None = None,
) -> str:
    """One instruction and one input to ``model``, its whole answer back
    (stripped; greedy, temperature 0): the platform's own small questions to
    a model (thread summaries, search query rewrites). ``deadline``
    (``time.monotonic()``): the request is abandoned then, and an answer cut
    short there raises EngineError (transient), as any engine failure."""
    request = ChatRequest(
        model=model,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": text},
        ],
        max_tokens=max_tokens,
        temperature=0.0,
        route_key=route_key,
    )
    stop = _never if deadline is None else (lambda: time.monotonic() > deadline)
    parts: list[str] = []
    finished = False
    for chunk in chat_stream(request, should_stop=stop):
        parts.append(chunk.content or "")
        finished = finished or chunk.finish_reason is not None
    if not finished and deadline is not None and time.monotonic() > deadline:
        raise EngineError("the model did not finish its answer in time", transient=True)
    return "".join(parts).strip()


# --- request building -------------------------------------------------------


@dataclass(frozen=True)
class EngineCapabilities:
    """The capability keys this module reads (see the module docstring)."""

    stream_tools: bool = True
    structured_outputs: str = "openai"
    parallel_tool_calls: bool = True
    tool_choice_required: bool = True

    @classmethod
    def of(cls, model: LanguageModel) -> EngineCapabilities:
        """Raises EngineError (permanent) for an unknown structured_outputs."""
        caps = model.capabilities if isinstance(model.capabilities, dict) else {}
        mode = caps.get("structured_outputs", "openai")
        if mode not in STRUCTURED_OUTPUT_MODES:
            raise EngineError(
                f"The model '{model.id}' has structured_outputs={mode!r} in its "
                "capabilities; expected one of "
                f"{', '.join(STRUCTURED_OUTPUT_MODES)}.",
                transient=False,
            )
        return cls(
            stream_tools=bool(caps.get("stream_tools", True)),
            structured_outputs=str(mode),
            parallel_tool_calls=bool(caps.get("parallel_tool_calls", True)),
            tool_choice_required=bool(caps.get("tool_choice_required", True)),
        )


def wants_stream(request: ChatRequest, caps: EngineCapabilities) -> bool:
    """False when the engine cannot stream this request (``stream_tools``)."""
    if caps.stream_tools or not request.tools:
        return True
    return request.tool_choice == "none"


def build_body(
    request: ChatRequest, caps: EngineCapabilities, *, stream: bool
) -> dict[str, Any]:
    """The JSON body sent to ``/chat/completions`` for ``request``."""
    model = request.model
    body: dict[str, Any] = {
        "model": model.served_name or model.id,
        "messages": _engine_messages(request.messages),
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        # tool_choice and parallel_tool_calls without tools are refused by
        # vLLM and OpenAI alike.
        body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request, caps)
        if request.parallel_tool_calls is not None and caps.parallel_tool_calls:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    response_format = _response_format(request.response_format, caps)
    if response_format is not None:
        body["response_format"] = response_format
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    return body


def _engine_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # An assistant turn that only calls tools has content null in OpenAI's
    # format; llama-cpp-python's request model refuses null and a missing
    # content (500), while every engine accepts "".
    out = messages
    for i, message in enumerate(messages):
        if (
            message.get("role") == "assistant"
            and message.get("tool_calls")
            and message.get("content") is None
        ):
            if out is messages:
                out = list(messages)
            out[i] = {**message, "content": ""}
    return out


def _tool_choice(
    request: ChatRequest, caps: EngineCapabilities
) -> str | dict[str, Any]:
    choice = request.tool_choice
    assert choice is not None and request.tools
    if choice != "required" or caps.tool_choice_required:
        return choice
    if len(request.tools) == 1:
        name = request.tools[0].get("function", {}).get("name")
        if name:
            return {"type": "function", "function": {"name": name}}
    return "auto"


def _response_format(
    response_format: dict[str, Any] | None, caps: EngineCapabilities
) -> dict[str, Any] | None:
    if response_format is None or caps.structured_outputs == "none":
        return None
    if caps.structured_outputs == "llamacpp" and (
        response_format.get("type") == "json_schema"
    ):
        spec = response_format.get("json_schema") or {}
        return {"type": "json_object", "schema": spec.get("schema") or {}}
    return response_format


def _read_timeout() -> float:
    # Read at call time: tests and operators change it without a restart.
    return float(getattr(settings, "ENGINE_READ_TIMEOUT", DEFAULT_READ_TIMEOUT))


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    # Building a context (loading the CA bundle) costs ~60 ms: every new
    # engine connection (transport.Exchange) shares this one.
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context()
        return _tls


# --- replicas -----------------------------------------------------------------

_turn_lock = threading.Lock()
_turns: dict[str, int] = {}


def replica_order(
    model_id: str, base_urls: list[str], route_key: str = ""
) -> list[str]:
    """The replicas to try, in order.

    With a ``route_key``: highest-random-weight (rendezvous) order, a pure
    function of the key and the URLs, so every worker sends a thread to the
    same replica and falls over to the same second choice. Without: this
    process's round-robin turn for the model.
    """
    if route_key and len(base_urls) > 1:
        return sorted(
            base_urls,
            key=lambda url: hashlib.blake2b(
                f"{route_key}\n{url}".encode(), digest_size=8
            ).digest(),
            reverse=True,
        )
    with _turn_lock:
        turn = _turns.get(model_id, 0)
        _turns[model_id] = turn + 1
    start = turn % len(base_urls)
    return base_urls[start:] + base_urls[:start]


# --- the exchange -------------------------------------------------------------

_END = object()
_TRANSIENT_4XX = {408, 425, 429}


class _Call:
    """One engine request, run by ``run`` on a helper thread.

    Results (chunks, then an exception or nothing, then ``_END``) go through
    ``results``. ``abort`` may be called from any thread: it shuts the
    connection's socket down, which wakes a read blocked in the helper
    thread (closing the socket would not) and tells the engine to stop.
    """

    def __init__(
        self,
        *,
        model_name: str,
        urls: list[str],
        body: bytes,
        headers: dict[str, str],
        read_timeout: float,
        stream: bool,
    ) -> None:
        self.model_name = model_name
        self.urls = urls
        self.body = body
        self.headers = headers
        self.read_timeout = read_timeout
        self.stream = stream
        self.results: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stopped = False
        # Engines that repeat a tool call's id and name on every delta.
        self._announced: set[int] = set()

    @classmethod
    def prepare(cls, request: ChatRequest) -> _Call:
        model = request.model
        caps = EngineCapabilities.of(model)
        urls = [str(u).strip().rstrip("/") for u in (model.base_urls or [])]
        urls = [u for u in urls if u]
        if not urls:
            raise EngineError(
                f"The model '{model.id}' has no engine: its registry entry lists "
                "no base URL (set MODEL_BASE_URL, or install the local engine "
                "with `make run`).",
                transient=False,
            )
        stream = wants_stream(request, caps)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if model.api_key:
            headers["Authorization"] = f"Bearer {model.api_key}"
        if request.request_id:
            headers["X-Request-Id"] = engine_request_id(request.request_id)
        return cls(
            model_name=model.id,
            urls=replica_order(model.id, urls, request.route_key),
            body=orjson.dumps(build_body(request, caps, stream=stream)),
            headers=headers,
            read_timeout=_read_timeout(),
            stream=stream,
        )

    # -- cancellation

    def abort(self) -> None:
        with self._lock:
            self._stopped = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    # -- helper thread

    def run(self) -> None:
        try:
            with closing(self._exchange()) as chunks:
                for chunk in chunks:
                    if self._stopped:
                        return
                    self.results.put(chunk)
        except BaseException as exc:  # handed to the caller's thread
            if not self._stopped:
                self.results.put(exc)
        finally:
            self.results.put(_END)

    def _exchange(self) -> Generator[ChatChunk, None, None]:
        failures: list[tuple[str, str]] = []
        for url in self.urls:
            if self._stopped:
                return
            exchange = transport.Exchange(
                transport.Target.parse(f"{url}/chat/completions"),
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=self.read_timeout,
                tls=_tls_context,
                on_socket=self._track,
            )
            complete = False
            try:
                try:
                    response = exchange.open(self.body, self.headers)
                except TimeoutError as exc:
                    if self._stopped:
                        return
                    if exchange.conn is None:  # the connect timed out
                        failures.append((url, _describe(exc)))
                        continue
                    raise EngineError(
                        f"The model engine for '{self.model_name}' at {url} did "
                        f"not answer within {self.read_timeout:.0f} s "
                        f"({_describe(exc)}).",
                        transient=True,
                    ) from exc
                except (OSError, http.client.HTTPException) as exc:
                    # Refused, reset or closed before answering: no output was
                    # consumed, so another replica may take the request.
                    if self._stopped:
                        return
                    failures.append((url, _describe(exc)))
                    logger.warning(
                        "engine replica %s for %s failed before answering: %s",
                        url,
                        self.model_name,
                        _describe(exc),
                    )
                    continue
                yield from self._answer(url, response)
                complete = True
                return
            finally:
                # Under the lock, so that abort() either sees the socket (and
                # the connection is closed, not pooled) or never does: a
                # pooled connection belongs to the next call.
                with self._lock:
                    complete = complete and not self._stopped
                    self._sockets.clear()
                exchange.finish(complete=complete)
        if len(failures) == 1:
            raise self._unreachable(*failures[0])
        raise self._unreachable(
            ", ".join(self.urls),
            "every replica failed: "
            + "; ".join(f"{url}: {detail}" for url, detail in failures),
        )

    def _track(self, sock: socket.socket) -> None:
        """The request's socket, before anything is sent on it: abort()
        shuts it down."""
        with self._lock:
            self._sockets.append(sock)
            stopped = self._stopped
        if stopped:
            _shutdown(sock)

    def _unreachable(self, where: str, detail: str) -> EngineError:
        return EngineError(
            f"The model engine for '{self.model_name}' at {where} is "
            f"unreachable: {detail}",
            transient=True,
        )

    def _answer(
        self, url: str, response: http.client.HTTPResponse
    ) -> Iterator[ChatChunk]:
        try:
            if response.status >= 400:
                raw = response.read()
                raise self._http_error(url, response.status, raw)
            content_type = response.getheader("content-type", "")
            if "text/event-stream" in content_type:
                yield from self._events(url, _lines(response))
                return
            raw = response.read()
            if raw.lstrip().startswith(b"data:"):
                # An event stream with the wrong content type.
                lines = raw.decode("utf-8", "replace").splitlines()
                yield from self._events(url, iter(lines))
                return
            yield from self._completion(url, _parse_json(raw))
        except TimeoutError as exc:
            if self._stopped:
                return
            raise EngineError(
                f"The model engine for '{self.model_name}' at {url} stopped "
                f"sending for {self.read_timeout:.0f} s mid-answer.",
                transient=True,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            if self._stopped:
                return
            raise EngineError(
                f"The model engine for '{self.model_name}' at {url} dropped the "
                f"connection mid-answer: {_describe(exc)}",
                transient=True,
            ) from exc

    def _http_error(self, url: str, status: int, raw: bytes) -> EngineError:
        text = _error_text(raw) or "(no message)"
        if status >= 500 or status in _TRANSIENT_4XX:
            return EngineError(
                f"The model engine for '{self.model_name}' at {url} failed "
                f"(HTTP {status}): {text}",
                transient=True,
            )
        return EngineError(
            f"The model engine for '{self.model_name}' at {url} refused the "
            f"request (HTTP {status}): {text}",
            transient=False,
        )

    def _events(self, url: str, lines: Iterator[str]) -> Iterator[ChatChunk]:
        finished = False
        for data in sse_data(lines):
            if data.strip() == "[DONE]":
                break
            chunk = self._chunk(url, _parse_json(data.encode()))
            if chunk is None:
                continue
            if chunk.finish_reason is not None:
                finished = True
            yield chunk
        if not finished and not self._stopped:
            # llama-cpp-python ends a stream it cannot serve (or interrupts
            # one) with no finish reason; a crash does the same.
            raise EngineError(
                f"The model engine for '{self.model_name}' at {url} ended the "
                "stream before the answer was complete (no finish_reason); "
                "its log may say why.",
                transient=True,
            )

    def _chunk(self, url: str, payload: Any) -> ChatChunk | None:
        self._raise_if_error(url, payload)
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise _malformed(payload)
        usage = _usage(payload.get("usage"), payload.get("timings"))
        if not choices:
            return ChatChunk(usage=usage) if usage is not None else None
        choice = choices[0]
        if not isinstance(choice, dict):
            raise _malformed(payload)
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _malformed(payload)
        content = delta.get("content") or ""
        calls = tuple(self._tool_deltas(delta.get("tool_calls"), payload))
        finish_reason = choice.get("finish_reason")
        if not (content or calls or finish_reason or usage):
            return None
        return ChatChunk(
            content=str(content),
            tool_calls=calls,
            finish_reason=finish_reason,
            usage=usage,
        )

    def _tool_deltas(self, raw: Any, payload: Any) -> Iterator[ToolCallDelta]:
        if not raw:
            return
        if not isinstance(raw, list):
            raise _malformed(payload)
        for position, call in enumerate(raw):
            if not isinstance(call, dict):
                raise _malformed(payload)
            index = call.get("index", position)
            function = call.get("function") or {}
            if not isinstance(index, int) or not isinstance(function, dict):
                raise _malformed(payload)
            call_id, name = call.get("id"), function.get("name")
            if index in self._announced:
                call_id = name = None
            elif call_id or name:
                self._announced.add(index)
            yield ToolCallDelta(
                index=index,
                id=call_id or None,
                name=name or None,
                arguments=str(function.get("arguments") or ""),
            )

    def _completion(self, url: str, payload: Any) -> Iterator[ChatChunk]:
        """A non-streamed completion, replayed as chunks."""
        self._raise_if_error(url, payload)
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _malformed(payload)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise _malformed(payload)
        content = message.get("content") or ""
        if content:
            yield ChatChunk(content=str(content))
        deltas = tuple(self._tool_deltas(message.get("tool_calls"), payload))
        if deltas:
            yield ChatChunk(tool_calls=deltas)
        finish_reason = choice.get("finish_reason") or (
            "tool_calls" if deltas else "stop"
        )
        usage = _usage(payload.get("usage"), payload.get("timings"))
        yield ChatChunk(finish_reason=finish_reason, usage=usage)

    def _raise_if_error(self, url: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise _malformed(payload)
        error = payload.get("error")
        if error is None and payload.get("object") == "error":
            error = payload  # vLLM's older error shape
        if error is None:
            return
        detail = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        transient = not (isinstance(code, int) and 400 <= code < 500)
        raise EngineError(
            f"The model engine for '{self.model_name}' at {url} reported an "
            f"error: {str(detail or error)[:_MAX_QUOTE]}",
            transient=transient,
        )


# --- parsing helpers ---------------------------------------------------------


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The ``data`` of each Server-Sent Event in ``lines``.

    Follows the SSE rules (multi-line data joined by newlines, comments and
    other fields ignored, an event ends at a blank line) and also accepts
    engines that omit the blank line: a ``data:`` line that follows a
    complete JSON document or ``[DONE]`` starts a new event.
    """
    pending: list[str] = []
    for line in lines:
        if not line:
            if pending:
                yield "\n".join(pending)
                pending = []
            continue
        if line.startswith(":"):
            continue  # comment, e.g. a keep-alive ping
        field, _, value = line.partition(":")
        if field != "data":
            continue
        if value.startswith(" "):
            value = value[1:]
        if pending and _is_complete("\n".join(pending)):
            yield "\n".join(pending)
            pending = []
        pending.append(value)
    if pending:
        yield "\n".join(pending)


def _is_complete(data: str) -> bool:
    if data.strip() == "[DONE]":
        return True
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _malformed(raw) from None


def _malformed(what: Any) -> EngineError:
    if isinstance(what, bytes):
        excerpt = what.decode("utf-8", "replace")
    elif isinstance(what, str):
        excerpt = what
    else:
        excerpt = orjson.dumps(what, default=str).decode()
    return EngineError(
        "The model engine answered something that is not an OpenAI-compatible "
        f"chat completion: {excerpt.strip()[:_MAX_QUOTE]!r}",
        transient=False,
    )


def _usage(raw: Any, timings: Any = None) -> Usage | None:
    """The usage of a chunk or completion. Cached prompt tokens come from
    ``prompt_tokens_details.cached_tokens`` (vLLM, OpenAI, recent llama.cpp
    servers) or else from llama.cpp's ``timings.cache_n`` (its native
    ``llama-server``; llama-cpp-python's server reports neither)."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None and isinstance(timings, dict):
        cached = timings.get("cache_n")
    try:
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            cached_tokens=int(cached) if cached is not None else None,
        )
    except (TypeError, ValueError):
        return None


def _error_text(raw: bytes) -> str:
    """The message in an engine's error body, whatever its shape."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:_MAX_QUOTE]
    message: Any = payload
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error
        elif error:
            message = error
        elif "message" in payload:  # vLLM's older {"object": "error", ...}
            message = payload["message"]
        elif "detail" in payload:  # FastAPI validation errors
            message = payload["detail"]
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    return text.strip()[:_MAX_QUOTE]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _lines(response: http.client.HTTPResponse) -> Iterator[str]:
    """The response's lines, without their line ends, as they arrive."""
    while True:
        line = response.readline()
        if not line:
            return
        yield line.decode("utf-8", "replace").rstrip("\r\n")


def _shutdown(sock: socket.socket) -> None:
    # OSError: already closed, so the request is over anyway.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
