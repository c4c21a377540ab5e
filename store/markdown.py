"""Safe markdown for chat messages: raw HTML is escaped, links only to
http(s), and images only for files of the conversation (no external image
is ever loaded by a visitor's browser)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

_SAFE_SCHEMES = ("http://", "https://", "mailto:")


def _link_open(
    self: RendererHTML,
    tokens: Sequence[Token],
    idx: int,
    options: OptionsDict,
    env: EnvType,
) -> str:
    token = tokens[idx]
    href = str(token.attrGet("href") or "")
    # A code-interpreter output file ("sandbox:/mnt/data/x.csv") links to
    # the conversation's own file endpoint, when the run annotated it.
    local = (env or {}).get("files", {}).get(href)
    if local:
        token.attrSet("href", local)
        token.attrSet("download", "")
        return self.renderToken(tokens, idx, options, env)
    if not href.lower().startswith(_SAFE_SCHEMES):
        token.attrSet("href", "#")
    token.attrSet("rel", "nofollow noopener noreferrer")
    token.attrSet("target", "_blank")
    return self.renderToken(tokens, idx, options, env)


def _image(
    self: RendererHTML,
    tokens: Sequence[Token],
    idx: int,
    options: OptionsDict,
    env: EnvType,
) -> str:
    # An image in model output would be a tracking pixel or worse: show its
    # alt text and address instead of loading it.
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or [])
    return f"[image: {escape(alt)}]"


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False})
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("image", _image)
    return md


_md = _parser()


def render_markdown(text: str, env: dict[str, Any] | None = None) -> SafeString:
    return mark_safe(_md.render(text, env or {}))  # noqa: S308 - html is off


# Footnote marks are put into the text before rendering as private-use
# characters (markdown leaves them alone), then become <sup> in the HTML.
_MARK = re.compile("\ue000(\\d+)\ue001")
QUOTE_CHARS = 160


def _with_marks(text: str, cites: list[dict[str, Any]], numbers: list[int]) -> str:
    """``text`` with a footnote mark where each citation ends (from the end,
    so that earlier indexes stay valid). Indexes count characters."""
    for cite, n in sorted(
        zip(cites, numbers, strict=True),
        key=lambda pair: int(pair[0].get("end_index") or 0),
        reverse=True,
    ):
        end = min(max(int(cite.get("end_index") or 0), 0), len(text))
        text = f"{text[:end]}\ue000{n}\ue001{text[end:]}"
    return text


def _footnotes(
    cites: list[dict[str, Any]], file_names: Mapping[str, str]
) -> tuple[list[int], str]:
    """A number per cited passage (the same file and quote share one) and
    the footnote list: the quoted file's name and the start of the quote."""
    numbers: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    items: list[str] = []
    for cite in cites:
        source = cite.get("file_citation") or {}
        file_id = str(source.get("file_id", ""))
        quote = " ".join(str(source.get("quote") or "").split())
        key = (file_id, quote)
        if key not in seen:
            seen[key] = len(seen) + 1
            if len(quote) > QUOTE_CHARS:
                quote = quote[: QUOTE_CHARS - 1] + "…"
            name = file_names.get(file_id) or "a deleted file"
            items.append(
                f'<li><span class="cite-file">{escape(name)}</span>'
                + (f' <q class="cite-quote">{escape(quote)}</q>' if quote else "")
                + "</li>"
            )
        numbers.append(seen[key])
    return numbers, f'<ol class="citations">{"".join(items)}</ol>'


def render_content(
    parts: list[dict[str, Any]],
    *,
    file_url: str,
    file_names: Mapping[str, str] | None = None,
) -> SafeString:
    """A message's wire content as HTML. ``file_url`` has a ``{id}``
    placeholder for the conversation's file endpoint; ``file_names`` maps
    the ids of cited files to their names (for the footnotes)."""
    out: list[str] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text") or {}
            value = str(text.get("value", ""))
            annotations = [a for a in text.get("annotations") or [] if a]
            cites = [a for a in annotations if a.get("type") == "file_citation"]
            files = {
                str(a.get("text", "")): file_url.replace(
                    "{id}", str((a.get("file_path") or {}).get("file_id", ""))
                )
                for a in annotations
                if a.get("type") == "file_path"
            }
            numbers, notes = _footnotes(cites, file_names or {})
            html = str(
                render_markdown(_with_marks(value, cites, numbers), {"files": files})
            )
            html = _MARK.sub(r'<sup class="cite">[\1]</sup>', html)
            out.append(html + (notes if cites else ""))
        elif kind == "image_file":
            file_id = str((part.get("image_file") or {}).get("file_id", ""))
            src = escape(file_url.replace("{id}", file_id))
            out.append(f'<img class="chat-image" src="{src}" alt="generated image">')
    return mark_safe("".join(out))  # noqa: S308 - every piece escaped above


def cited_file_ids(parts: list[dict[str, Any]]) -> set[str]:
    """Ids of the files a message's citations quote (to look their names up)."""
    ids: set[str] = set()
    for part in parts:
        if part.get("type") != "text":
            continue
        for a in (part.get("text") or {}).get("annotations") or []:
            if a and a.get("type") == "file_citation":
                ids.add(str((a.get("file_citation") or {}).get("file_id", "")))
    return ids


def shown_file_ids(parts: list[dict[str, Any]]) -> set[str]:
    """Ids of the files a message shows or links: its images and the output
    files its text links to (the only files its viewers may fetch)."""
    ids: set[str] = set()
    for part in parts:
        if part.get("type") == "image_file":
            ids.add(str((part.get("image_file") or {}).get("file_id", "")))
        elif part.get("type") == "text":
            for a in (part.get("text") or {}).get("annotations") or []:
                if a and a.get("type") == "file_path":
                    ids.add(str((a.get("file_path") or {}).get("file_id", "")))
    return ids
