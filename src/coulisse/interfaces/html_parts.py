"""The HTML building blocks of the explain page and the studio: escaping, a model's language and isolated
right-to-left texts, the diverging palette with the ink that reads on it, and bar charts as inline SVG.

Colours: a diverging palette, blue for what pushes towards the explained label, red for what pushes
against it, white for nothing; intensity is |score| / the largest |score| of the text.
"""

from __future__ import annotations

import html
import re
from typing import Any

from coulisse.interfaces.formatting import one_line

TOWARDS, AGAINST, NEUTRAL = (33, 102, 172), (178, 24, 43), (255, 255, 255)


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# A language tag as HTML's lang takes it (BCP 47's common shape: "fr", "pt-BR", "zh-Hant"); a model card's
# "French" or "multilingual" is none, and marks nothing.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def lang_attribute(language: str | None) -> str:
    """` lang="fr"` for a model's language that is a language tag, else nothing."""
    return f' lang="{e(language)}"' if language and LANGUAGE_TAG.fullmatch(language) else ""


def iso(value: Any) -> str:
    """`value` escaped and isolated: a right-to-left label or token (Arabic, Hebrew) keeps the numbers and
    punctuation beside it in their places."""
    return f"<bdi>{e(value)}</bdi>"


def headline_html(head) -> str:
    """A view's headline with the texts it quotes (labels, tokens, answers) isolated."""
    return head.worded(iso)


def diverging_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """White at 0, blue (towards) at +scale, red (against) at -scale."""
    t = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    end = TOWARDS if t >= 0 else AGAINST
    return tuple(round(n + abs(t) * (c - n)) for n, c in zip(NEUTRAL, end, strict=True))


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2's relative luminance of an sRGB colour."""
    def linear(c: int) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ink(background: tuple[int, int, int]) -> str:
    """Black or white, whichever contrasts more with `background`: at least 4.58:1 on any colour (the two tie
    at luminance 0.179), above WCAG AA's 4.5:1 for text."""
    light = luminance(background)
    return "#fff" if 1.05 / (light + 0.05) > (light + 0.05) / 0.05 else "#000"



def render_bars(values: list[float], names: list[str], css: str, width: int = 420, fmt: str = "{:.4f}",
                maximum: float | None = None) -> str:
    """A horizontal bar chart as inline SVG: one `<rect>` per value. The names' column is as wide as the longest
    name needs (~7 px a character at 12 px), up to 36 characters; a longer name is cut with "…" and said whole in
    its `<title>` (a zero-shot label, a fill-mask token: a fixed column cut their starts off, audit 41)."""
    top = maximum if maximum is not None else max((abs(v) for v in values), default=1.0) or 1.0
    longest = min(36, max((len(name) for name in names), default=0))
    row, label_w, value_w = 22, max(60, 7 * longest + 12), 70
    width += label_w - 130  # the bars keep their length
    bars = []
    for i, (v, name) in enumerate(zip(values, names, strict=True)):
        y = i * row
        w = max(1.0, abs(v) / top * (width - label_w - value_w))
        shown = name if len(name) <= longest else one_line(name, longest, "…")
        bars.append(f'<g class="bar"><title>{e(name)}</title>'
                    f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{e(shown)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"></rect>'
                    f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{e(fmt.format(v))}</text></g>')
    height = row * len(values)
    # role="img" makes what is inside presentational: its name says every value, or a screen reader hears none
    said = "; ".join(f"{name} {fmt.format(v)}" for v, name in zip(values, names, strict=True))
    return (f'<svg class="{css}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{e(said)}">{"".join(bars)}</svg>')
