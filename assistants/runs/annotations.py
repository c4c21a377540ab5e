"""Turn server-side tool results into the answer's annotations.

file_search tells the model to cite a result as ``[n]``. The markers never
reach the client: they are removed from the streamed text as it goes (a
possible marker is held back until it is complete) and from the stored text,
and each becomes a ``file_citation`` annotation over the cited span, the text
from the start of the sentence up to where the marker stood. Output files of
code_interpreter mentioned as ``sandbox:/mnt/data/<name>`` get ``file_path``
annotations; images become ``image_file`` content parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# " [1]", "[2, 3]", "[1][2]" (each bracket its own match). The leading
# whitespace goes with the marker so that "Paris [1]." reads "Paris.".
MARKER = re.compile(r"\s*\[(\d{1,4}(?:\s*,\s*\d{1,4})*)\]")
# What may still grow into a marker: trailing whitespace, or an open bracket
# followed by digits, commas and spaces.
PARTIAL_TAIL = re.compile(r"(?:\s*\[[\d,\s]*|\s+)$")
SENTENCE_END = re.compile(r"[.!?\n]\s+|\n")
SANDBOX_PATH = "sandbox:"


@dataclass(frozen=True)
class Citable:
    file_id: str
    quote: str


def _numbers(match: re.Match[str]) -> list[int]:
    return [int(n) for n in re.split(r"\s*,\s*", match.group(1))]


def _is_citation(match: re.Match[str], sources: dict[int, Citable]) -> bool:
    return all(n in sources for n in _numbers(match))


def strip_markers(text: str, sources: dict[int, Citable]) -> str:
    """``text`` without the markers that cite a known source."""
    if not sources:
        return text
    return MARKER.sub(
        lambda m: "" if _is_citation(m, sources) else m.group(0),
        text,
    )


class MarkerFilter:
    """Streams text with citation markers removed.

    ``feed`` returns what may be sent now; the concatenation of everything it
    returns plus ``flush()`` equals ``strip_markers`` of the whole text. Text
    that could still become a marker is held back until the next piece.
    """

    def __init__(self, sources: dict[int, Citable]) -> None:
        self.sources = sources
        self.raw = ""
        self.sent = 0

    def feed(self, piece: str) -> str:
        self.raw += piece
        if not self.sources:
            out = self.raw[self.sent :]
            self.sent = len(self.raw)
            return out
        tail = PARTIAL_TAIL.search(self.raw)
        safe = self.raw[: tail.start()] if tail else self.raw
        return self._emit(strip_markers(safe, self.sources))

    def flush(self) -> str:
        return self._emit(strip_markers(self.raw, self.sources))

    def _emit(self, cleaned: str) -> str:
        out = cleaned[self.sent :]
        self.sent = len(cleaned)
        return out


def annotate(
    raw: str,
    *,
    sources: dict[int, Citable],
    files: dict[str, str],
) -> tuple[str, list[dict[str, Any]]]:
    """The answer's final text and its annotations.

    ``files`` maps a sandbox path (``/mnt/data/x.csv``) to its File id.
    Annotations are ordered by position; indexes count characters of the
    returned text (what the client's string indexing sees).
    """
    text_parts: list[str] = []
    annotations: list[dict[str, Any]] = []
    length = 0  # of the cleaned text so far
    sentence_start = 0
    last = 0
    for match in MARKER.finditer(raw):
        if not _is_citation(match, sources):
            continue
        before = raw[last : match.start()]
        text_parts.append(before)
        length += len(before)
        last = match.end()
        cleaned = "".join(text_parts)
        for end in SENTENCE_END.finditer(cleaned, sentence_start):
            if end.end() < length:
                sentence_start = end.end()
        start = sentence_start
        while start < length and cleaned[start].isspace():
            start += 1
        span = cleaned[start:length]
        for n in _numbers(match):
            source = sources[n]
            annotations.append(
                {
                    "type": "file_citation",
                    "text": span,
                    "start_index": start,
                    "end_index": length,
                    "file_citation": {"file_id": source.file_id, "quote": source.quote},
                }
            )
        # The next citation in the same sentence covers the text after this
        # one, not the whole sentence again.
        sentence_start = length
    text_parts.append(raw[last:])
    text = "".join(text_parts)
    for path, file_id in files.items():
        needle = SANDBOX_PATH + path
        for found in re.finditer(re.escape(needle), text):
            annotations.append(
                {
                    "type": "file_path",
                    "text": needle,
                    "start_index": found.start(),
                    "end_index": found.end(),
                    "file_path": {"file_id": file_id},
                }
            )
    annotations.sort(key=lambda a: (a["start_index"], a["end_index"]))
    return text, annotations
