"""Safe markdown for chat messages: raw HTML is escaped, links only to
http(s), and images only for files of the conversation (no external image
is ever loaded by a visitor's browser)."""

from __future__ import annotations

from collections.abc import Sequence
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


def render_markdown(text: str) -> SafeString:
    return mark_safe(_md.render(text))  # noqa: S308 - html is off, see _parser


def render_content(parts: list[dict[str, Any]], *, file_url: str) -> SafeString:
    """A message's wire content as HTML. ``file_url`` has a ``{id}``
    placeholder for the conversation's file endpoint."""
    out: list[str] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text") or {}
            html = str(render_markdown(str(text.get("value", ""))))
            cites = [
                a
                for a in text.get("annotations") or []
                if a.get("type") == "file_citation"
            ]
            if cites:
                items = "".join(
                    f"<li>{escape(a.get('text', ''))} — "
                    f"{escape((a.get('file_citation') or {}).get('file_id', ''))}</li>"
                    for a in cites
                )
                html += f'<ol class="citations">{items}</ol>'
            out.append(html)
        elif kind == "image_file":
            file_id = str((part.get("image_file") or {}).get("file_id", ""))
            src = escape(file_url.replace("{id}", file_id))
            out.append(f'<img class="chat-image" src="{src}" alt="generated image">')
    return mark_safe("".join(out))  # noqa: S308 - every piece escaped above
