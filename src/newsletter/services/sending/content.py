"""Issue content: Markdown to HTML, and the newsletter layout around it."""

from __future__ import annotations

from functools import cache

from markdown_it import MarkdownIt


@cache
def _markdown() -> MarkdownIt:
    # Raw HTML inside Markdown is not rendered: what the preview shows is what is sent, and nothing runs.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def markdown_to_html(markdown: str) -> str:
    html: str = _markdown().render(markdown)
    return html
