"""Inline SVG charts for the HTML report: line, grouped bar and heat map, no scripts and no network."""

from __future__ import annotations

from html import escape

from analytics.model import Section
from analytics.render.values import number

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 44
PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2")


def _ticks(high: float) -> list[float]:
    if high <= 0:
        return [0.0]
    return [high * i / 4 for i in range(5)]


def _short(value: float) -> str:
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}" if magnitude >= 10 or value == int(value) else f"{value:.2f}"


def _label(x: float, y: float, text: str, anchor: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="axis" text-anchor="{anchor}">{escape(text)}</text>'


def _frame(title: str, body: list[str], labels: list[str], high: float, low: float = 0.0) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{LEFT}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    span = (high - low) or 1.0
    for tick in _ticks(high - low):
        y = TOP + plot_h - tick / span * plot_h
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{_short(low + tick)}</text>'
        )
    every = max(1, len(labels) // 8)
    plot_w = WIDTH - LEFT - RIGHT
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + (i + 0.5) * plot_w / max(1, len(labels))
            parts.append(_label(x, HEIGHT - BOTTOM + 16, label, "middle"))
    parts.extend(body)
    return "\n".join(parts)


def _legend(names: list[str]) -> list[str]:
    out = []
    x = LEFT
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14}" y="{HEIGHT - 5}" class="axis">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return out


def line_or_bar(section: Section) -> str:
    chart = section.chart
    assert chart is not None
    labels = [str(v) for v in section.values(chart.x)]
    series = [[number(v) for v in section.values(k)] for k in chart.y]
    high = max((v for s in series for v in s), default=0.0)
    low = min(0.0, min((v for s in series for v in s), default=0.0))
    span = (high - low) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(1, len(labels))
    body: list[str] = []

    def y_of(value: float) -> float:
        return TOP + plot_h - (value - low) / span * plot_h

    if chart.kind == "line":
        for index, values in enumerate(series):
            points = " ".join(
                f"{LEFT + (i + 0.5) * plot_w / n:.1f},{y_of(v):.1f}" for i, v in enumerate(values)
            )
            colour = PALETTE[index % len(PALETTE)]
            body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    else:
        group = plot_w / n
        bar_w = group * 0.8 / max(1, len(series))
        for index, values in enumerate(series):
            colour = PALETTE[index % len(PALETTE)]
            for i, v in enumerate(values):
                x = LEFT + i * group + group * 0.1 + index * bar_w
                top, base = y_of(max(v, 0.0)), y_of(min(v, 0.0))
                body.append(
                    f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" '
                    f'height="{max(0.0, base - top):.1f}" '
                    f'fill="{colour}"><title>{escape(labels[i])}: {v:,.2f}</title></rect>'
                )
    body.extend(_legend([section.column(k).title for k in chart.y]))
    body.append("</svg>")
    return _frame(chart.title, body, labels, high, low)


def heatmap(section: Section) -> str:
    chart = section.chart
    assert chart is not None
    rows = section.rows
    cols = list(chart.y)
    cell_w = (WIDTH - LEFT - RIGHT) / max(1, len(cols))
    cell_h = 22
    height = TOP + cell_h * len(rows) + 24
    values = [[number(r[section.index(k)]) for k in cols] for r in rows]
    high = max((v for r in values for v in r), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(chart.title)}" class="chart">',
        f'<text x="{LEFT}" y="16" class="chart-title">{escape(chart.title)}</text>',
    ]
    for r, row in enumerate(rows):
        y = TOP + r * cell_h
        label = escape(str(row[section.index(chart.x)]))
        parts.append(f'<text x="{LEFT - 6}" y="{y + 15}" class="axis" text-anchor="end">{label}</text>')
        for c, value in enumerate(values[r]):
            alpha = value / high
            parts.append(
                f'<rect x="{LEFT + c * cell_w:.1f}" y="{y}" width="{cell_w - 1:.1f}" height="{cell_h - 1}" '
                f'fill="#1f4e79" fill-opacity="{0.05 + 0.95 * alpha:.3f}"><title>{label} '
                f"{escape(section.column(cols[c]).title)}: {value:,.0f}</title></rect>"
            )
    for c, key in enumerate(cols):
        if c % 3 == 0:
            x = LEFT + (c + 0.5) * cell_w
            title = escape(section.column(key).title)
            parts.append(
                f'<text x="{x:.1f}" y="{height - 8}" class="axis" text-anchor="middle">{title}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def chart_svg(section: Section) -> str:
    if section.chart is None or not section.rows:
        return ""
    return heatmap(section) if section.chart.kind == "heatmap" else line_or_bar(section)
