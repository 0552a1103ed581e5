"""MkDocs hook: the TeX that `pymdownx.arithmatex` (generic mode) marks, rendered to MathML at build time.

Browsers draw MathML natively, so the equations need no JavaScript and no network: the site works offline
and the built HTML holds the math itself."""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.DOTALL)
DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.DOTALL)


def mathml(tex: str, display: str) -> str:
    """One equation's TeX (HTML-escaped by Markdown) as MathML."""
    return convert(html.unescape(tex).strip(), display=display)


def on_page_content(content: str, **kwargs) -> str:
    """Every marked equation of a page, display and inline, replaced by its MathML."""
    content = DISPLAY.sub(lambda m: f'<div class="math">{mathml(m.group(1), "block")}</div>', content)
    return INLINE.sub(lambda m: mathml(m.group(1), "inline"), content)
