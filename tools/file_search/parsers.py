"""Files → plain text, within bounds.

Every parser reads at most ``max_bytes`` of the blob and returns at most
``max_chars`` characters; an archive format (.docx) is checked against
``max_unzipped`` before anything is decompressed, and decompression is
itself capped, so a zip bomb costs a directory read. A file we cannot read
raises ``UnsupportedFile`` (we do not read this kind of file) or
``InvalidFile`` (it claims to be a kind we read but is broken or empty).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import IO
from xml.etree import ElementTree


class ParseError(Exception):
    code = "invalid_file"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFile(ParseError):
    code = "unsupported_file"


class InvalidFile(ParseError):
    code = "invalid_file"


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_chars: int
    max_unzipped: int


TEXT_EXTENSIONS = frozenset(
    [
        "txt",
        "text",
        "md",
        "markdown",
        "rst",
        "log",
        "tex",
        "org",
        "adoc",
        "py",
        "pyi",
        "js",
        "mjs",
        "cjs",
        "ts",
        "tsx",
        "jsx",
        "java",
        "c",
        "h",
        "cc",
        "cpp",
        "cxx",
        "hpp",
        "hh",
        "cs",
        "go",
        "rs",
        "rb",
        "php",
        "pl",
        "pm",
        "swift",
        "kt",
        "kts",
        "scala",
        "sh",
        "bash",
        "zsh",
        "ps1",
        "sql",
        "r",
        "lua",
        "dart",
        "m",
        "mm",
        "hs",
        "ml",
        "ex",
        "exs",
        "erl",
        "clj",
        "css",
        "scss",
        "less",
        "vue",
        "svelte",
        "yaml",
        "yml",
        "toml",
        "ini",
        "cfg",
        "conf",
        "xml",
        "proto",
        "graphql",
        "tf",
    ]
)
HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml"})


def extension_of(filename: str) -> str:
    return PurePosixPath(filename.lower()).suffix.lstrip(".")


def _read_capped(blob: IO[bytes], limits: Limits) -> bytes:
    data = blob.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise InvalidFile(
            f"The file is larger than the {limits.max_bytes} bytes we ingest."
        )
    if not data:
        raise InvalidFile("The file is empty.")
    return data


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnsupportedFile("The file looks binary, not text.")
    for encoding in (
        ("utf-8-sig", "utf-16")
        if data[:2]
        in (
            b"\xff\xfe",
            b"\xfe\xff",
        )
        else ("utf-8-sig",)
    ):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    # Latin-1 decodes anything: legacy text files are still text.
    return data.decode("latin-1")


def parse_text(data: bytes, limits: Limits) -> str:
    return _decode(data)


class _HtmlText(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def parse_html(data: bytes, limits: Limits) -> str:
    parser = _HtmlText()
    parser.feed(_decode(data))
    parser.close()
    text = "".join(parser.parts)
    # Collapse the runs of blank lines that markup leaves behind.
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def parse_json(data: bytes, limits: Limits) -> str:
    text = _decode(data)
    try:
        json.loads(text)
    except ValueError as exc:
        raise InvalidFile(f"The file is not valid JSON: {exc}") from None
    return text


def parse_csv(data: bytes, limits: Limits) -> str:
    text = _decode(data)
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows, None)
        if header is None:
            return ""
        # "column: value" lines keep each value next to its meaning, so a
        # chunk cut mid-table still says what its numbers are.
        out = []
        for row in rows:
            out.append(
                "; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False))
            )
            if sum(len(x) for x in out) > limits.max_chars:
                break
    except csv.Error as exc:
        raise InvalidFile(f"The file is not valid CSV: {exc}") from None
    return "\n".join([", ".join(header), *out])


def parse_pdf(data: bytes, limits: Limits) -> str:
    if not data.startswith(b"%PDF"):
        raise InvalidFile("The file is not a PDF (no %PDF header).")
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PdfStreamError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        parts: list[str] = []
        size = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text)
            if size > limits.max_chars:
                break
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError) as exc:
        raise InvalidFile(f"The PDF could not be read: {exc}") from None
    except Exception as exc:  # pypdf raises many kinds on broken files
        raise InvalidFile(f"The PDF could not be read: {exc}") from None
    return "\n\n".join(parts)


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def parse_docx(data: bytes, limits: Limits) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidFile("The .docx file is not a valid zip archive.") from None
    with archive:
        infos = archive.infolist()
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_unzipped:
            raise InvalidFile(
                f"The .docx file unpacks to {declared} bytes; the limit is "
                f"{limits.max_unzipped}."
            )
        try:
            info = archive.getinfo("word/document.xml")
        except KeyError:
            raise InvalidFile("The .docx file has no word/document.xml.") from None
        try:
            with archive.open(info) as member:
                # Sizes in the directory can lie: cap what is inflated too.
                xml = member.read(limits.max_unzipped + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InvalidFile(f"The .docx file is corrupt: {exc}") from None
        if len(xml) > limits.max_unzipped:
            raise InvalidFile("The .docx file unpacks beyond the limit.")
    if b"<!DOCTYPE" in xml[:4096] or b"<!ENTITY" in xml:
        # Word never writes a DTD; one here is an entity-expansion attempt.
        raise InvalidFile("The .docx file's XML declares entities.")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise InvalidFile(f"The .docx file's XML is invalid: {exc}") from None
    paragraphs: list[str] = []
    for para in root.iter(f"{_W}p"):
        pieces = []
        for node in para.iter():
            if node.tag == f"{_W}t" and node.text:
                pieces.append(node.text)
            elif node.tag == f"{_W}tab":
                pieces.append("\t")
        paragraphs.append("".join(pieces))
    return "\n".join(p for p in paragraphs if p.strip())


PARSERS: dict[str, Callable[[bytes, Limits], str]] = {
    **{ext: parse_text for ext in TEXT_EXTENSIONS},
    **{ext: parse_html for ext in HTML_EXTENSIONS},
    "json": parse_json,
    "jsonl": parse_text,
    "csv": parse_csv,
    "tsv": parse_text,
    "pdf": parse_pdf,
    "docx": parse_docx,
}
MIME_EXTENSIONS = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
    "application/json": "json",
    "text/csv": "csv",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("docx"),
}


def parser_for(filename: str, mime_type: str) -> Callable[[bytes, Limits], str]:
    """The parser by extension, else by MIME type; UnsupportedFile if none."""
    ext = extension_of(filename)
    parser = PARSERS.get(ext) or PARSERS.get(
        MIME_EXTENSIONS.get(mime_type.split(";")[0].strip().lower(), "")
    )
    if parser is None:
        raise UnsupportedFile(
            f"Files of type '.{ext}' are not supported for retrieval."
            if ext
            else "Files without an extension are not supported for retrieval."
        )
    return parser


def extract_text(
    blob: IO[bytes], *, filename: str, mime_type: str, limits: Limits
) -> str:
    """The file's text (at most ``limits.max_chars``). Raises ParseError."""
    parser = parser_for(filename, mime_type)
    data = _read_capped(blob, limits)
    text = parser(data, limits)
    if len(text) > limits.max_chars:
        raise InvalidFile(
            f"The file has more than {limits.max_chars} characters of text."
        )
    if not text.strip():
        raise InvalidFile("The file contains no text.")
    return text
