"""Inline SVG icons from the Lucide set bundled in the `lucide` package (a zip of SVGs: no network).

Icon names come from config (`features.yaml`, content highlights). A name Lucide does not know falls back
to a neutral dot, so a typo costs an icon, never the page; the renderer lists such names as warnings.
"""

from __future__ import annotations

from functools import cache

from lucide import IconDoesNotExist
from lucide.jinja import lucide
from markupsafe import Markup

FALLBACK_ICON = "circle-small"
# Lucide renamed some icons; configs written against older names keep working.
ALIASES = {
    "line-chart": "chart-line",
    "bar-chart": "chart-column",
    "bar-chart-2": "chart-bar",
    "pie-chart": "chart-pie",
    "area-chart": "chart-area",
    "alert-triangle": "triangle-alert",
    "alert-circle": "circle-alert",
    "check-circle": "circle-check",
    "check-circle-2": "circle-check-big",
    "x-circle": "circle-x",
    "edit": "square-pen",
    "unlock": "lock-open",
    "home": "house",
    "grid": "grid-3x3",
    "more-horizontal": "ellipsis",
}


@cache
def _svg(name: str, size: int) -> Markup | None:
    try:
        # Decorative: the text next to an icon says what it means, so screen readers skip the SVG.
        return Markup(lucide(name, size=size, aria_hidden="true", focusable="false", **{"class": "icon"}))
    except IconDoesNotExist:
        return None


def resolve_icon(name: str | None) -> tuple[str, bool]:
    """(the Lucide name to draw, whether `name` was known); None asks for the neutral dot."""
    if not name:
        return FALLBACK_ICON, True
    candidate = ALIASES.get(name, name)
    if _svg(candidate, 20) is not None:
        return candidate, True
    return FALLBACK_ICON, False


def icon_svg(name: str | None, size: int = 20) -> Markup:
    """The inline <svg> for `name` (after aliases), or the fallback dot."""
    resolved, _known = resolve_icon(name)
    svg = _svg(resolved, size)
    if svg is None:  # pragma: no cover - the fallback ships with every Lucide release
        raise RuntimeError(f"the Lucide package lacks its {FALLBACK_ICON!r} icon")
    return svg
