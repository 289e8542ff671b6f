"""The report as blocks (headings, paragraphs, tables, bullets, figures), rendered to Markdown and to a
self-contained HTML file (figures inlined)."""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path


class Doc:
    """Blocks rendered to Markdown and to HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", header, rows))

    def bullets(self, items: list[str]):
        self.blocks.append(("bullets", items))

    def img(self, path: Path, caption: str):
        self.blocks.append(("img", path, caption))

    def markdown(self, root: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |")
                out.append("|" + "---|" * len(b[1]))
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b[2]]
            elif b[0] == "bullets":
                out += [f"- {item}" for item in b[1]]
            elif b[0] == "img":
                out.append(f"![{b[2]}]({os.path.relpath(b[1], root)})\n\n*{b[2]}*")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
               "body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}td,th{border:1px solid #ccc;"
               "padding:3px 6px;text-align:left;vertical-align:top}th{background:#f2f2f2}img{max-width:100%;"
               "border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}"
               "code{background:#f5f5f5;padding:0 3px}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in b[1]) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b[2]]
                out.append("</table>")
            elif b[0] == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in b[1]) + "</ul>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                           f"<figcaption>{_inline(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code`."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


