"""Page colours from the content theme, checked for WCAG contrast so text stays readable."""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.catalog import Theme
from compiler.colors import contrast_ratio

MIN_CONTRAST = 4.5  # WCAG 2.x AA for body text
WHITE = "#ffffff"
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")


def checked_color(value: str | None, default: str) -> str:
    """`value` as `#rrggbb` when it is a hex colour, else `default`.

    Colours go into the page's <style> block; the schema already allows only hex, but a catalog read
    back from the database did not pass the schema, so the renderer does not trust it.
    """
    if value is None or not _HEX.fullmatch(value):
        return default
    digits = value[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return f"#{digits.lower()}"


def mix(first: str, second: str, weight: float) -> str:
    """`weight` of `first` blended with the rest of `second` (both `#rrggbb`)."""
    channels = []
    for index in (1, 3, 5):
        a, b = int(first[index : index + 2], 16), int(second[index : index + 2], 16)
        channels.append(round(a * weight + b * (1 - weight)))
    return "#" + "".join(f"{c:02x}" for c in channels)


def readable_on(background: str, *candidates: str) -> str:
    """The candidate with the highest contrast on `background`."""
    return max(candidates, key=lambda c: contrast_ratio(c, background))


@dataclass(frozen=True, slots=True)
class Palette:
    background: str
    text: str
    muted: str  # secondary text, still AA on the background
    accent: str
    on_accent: str  # text on accent-coloured badges
    link: str
    border: str
    tint: str  # faint accent wash behind the recommended card and callouts

    @classmethod
    def from_theme(cls, theme: Theme, warnings: list[str], where: str) -> Palette:
        background = checked_color(theme.background, WHITE)
        text = checked_color(theme.text, "#111827")
        accent = checked_color(theme.accent, "#4f46e5")
        ratio = contrast_ratio(text, background)
        if ratio < MIN_CONTRAST:
            warnings.append(
                f"{where}: theme text {text} on background {background} has contrast {ratio:.2f}:1, "
                f"below {MIN_CONTRAST}:1; fix `theme` in the content file"
            )
        muted = mix(text, background, 0.75)
        if contrast_ratio(muted, background) < MIN_CONTRAST:
            muted = text
        link = accent if contrast_ratio(accent, background) >= MIN_CONTRAST else text
        return cls(
            background=background,
            text=text,
            muted=muted,
            accent=accent,
            on_accent=readable_on(accent, WHITE, "#111111"),
            link=link,
            border=mix(text, background, 0.18),
            tint=mix(accent, background, 0.07),
        )
