"""A report's content (``content.py``) as one self-contained HTML page: text escaped, images
embedded as base64, no network needed to read it."""

from __future__ import annotations

import base64
import html
from typing import Any

from reasonlab.reporting.content import (
    Bullets,
    Claim,
    Figure,
    Item,
    Paragraph,
    Section,
    Table,
)

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%}.wide{overflow-x:auto;max-width:100%}"
    "figure{display:inline-block;vertical-align:top;margin:0 1.2em 1.2em 0;max-width:100%}"
    "figcaption{font-size:.85em;color:#555;max-width:32em}"
    ".reproduces::marker{color:#1a7f37}.does-not-reproduce::marker{color:#cf222e}"
    ".undecided::marker{color:#888}"
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="wide">{table_html}</div>'  # wide tables scroll, not the page


def _figure(figure: Figure) -> str:
    """An embedded image with its caption, in a box that keeps a margin from its neighbours."""
    data = base64.b64encode(figure.png()).decode()
    image = f'<img alt="{html.escape(figure.alt)}" src="data:image/png;base64,{data}">'
    caption = f"<figcaption>{html.escape(figure.caption)}</figcaption>" if figure.caption else ""
    return f"<figure>{image}{caption}</figure>"


def _claim(claim: Claim) -> str:
    verdict = f' class="{claim.verdict.replace(" ", "-")}"' if claim.verdict else ""
    return f"<li{verdict}>{html.escape(claim.text)}</li>"


def _section(section: Section, level: int) -> str:
    text = f"<p>{html.escape(section.text)}</p>" if section.text else ""
    return f"<h{level}>{html.escape(section.title)}</h{level}>{text}{render(section.items, level)}"


def render(items: list[Item], level: int = 1) -> str:
    """The items in order; sections' titles one level below ``level``, consecutive claims in
    one list."""
    parts, claims = [], []
    for item in [*items, None]:
        if isinstance(item, Claim):
            claims.append(_claim(item))
            continue
        if claims:
            parts.append(f"<ul>{''.join(claims)}</ul>")
            claims = []
        if isinstance(item, Section):
            parts.append(_section(item, level + 1))
        elif isinstance(item, Table):
            parts.append(_table(item))
        elif isinstance(item, Figure):
            parts.append(_figure(item))
        elif isinstance(item, Paragraph):
            parts.append(f"<p>{html.escape(item.text)}</p>")
        elif isinstance(item, Bullets):
            parts.append(
                "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in item.lines) + "</ul>"
            )
    return "".join(parts)


def render_page(title: str, intro: str, items: list[Item]) -> str:
    """The whole page: the title as its heading, the opening paragraph, then the items (its
    sections, titled a level below the page's). An empty icon, so that a browser asks its
    server for nothing (no /favicon.ico, a 404 in the console)."""
    body = f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{render(items)}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body>"
        "</html>"
    )
