"""Feature values in words: the same rules for card highlights and comparison cells, so they agree."""

from __future__ import annotations

from dataclasses import dataclass

from compiler.catalog import UNLIMITED, Feature, FeatureValue
from publishers.site.formatting import format_number

YES = "✓"
NO = "—"


@dataclass(frozen=True, slots=True)
class Described:
    text: str
    included: bool


def included(feature: Feature, value: FeatureValue) -> bool:
    """Whether the plan offers the feature at all (a 0 limit or an empty set does not)."""
    return value != feature.off_value()


def _labels(feature: Feature, values: tuple[str, ...]) -> str:
    return ", ".join(feature.value_labels.get(v, v) for v in values)


def _number(feature: Feature, value: FeatureValue, locale: str) -> str:
    if value == UNLIMITED:
        return "Unlimited"
    return format_number(value, locale) if isinstance(value, int) else str(value)


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def unit_for(amount: FeatureValue, unit: str) -> str:
    """Units are written plural (`strategies / month`); one of them reads `1 strategy / month`."""
    if amount != 1 or isinstance(amount, bool):
        return unit
    noun, slash, rest = unit.partition(" / ")
    words = noun.split(" ")
    words[-1] = _singular(words[-1])
    return " ".join(words) + (slash + rest if slash else "")


def highlight_text(feature: Feature, value: FeatureValue, locale: str) -> Described:
    """A card line: `AI chat assistant`, `50 strategies / month`, `Unlimited scripts`, `Email support`."""
    on = included(feature, value)
    if feature.type == "boolean":
        return Described(feature.label, on)
    if feature.type == "number":
        amount = _number(feature, value, locale)
        if feature.unit:
            return Described(f"{amount} {unit_for(value, feature.unit)}", on)
        if value == UNLIMITED:
            return Described(f"{amount} {feature.label.lower()}", on)
        return Described(f"{feature.label}: {amount}", on)
    if feature.type == "enum":
        return Described(feature.value_labels.get(str(value), str(value)) if on else feature.label, on)
    values = value if isinstance(value, tuple) else ()
    return Described(f"{feature.label}: {_labels(feature, values)}" if on else feature.label, on)


def matrix_text(feature: Feature, value: FeatureValue, locale: str) -> Described:
    """A comparison cell: ✓ / — / `50 strategies / month` / `Unlimited` / the value's label."""
    on = included(feature, value)
    if not on:
        return Described(NO, False)
    if feature.type == "boolean":
        return Described(YES, True)
    if feature.type == "number":
        amount = _number(feature, value, locale)
        if feature.unit and value != UNLIMITED:
            return Described(f"{amount} {unit_for(value, feature.unit)}", True)
        return Described(amount, True)
    if feature.type == "enum":
        return Described(feature.value_labels.get(str(value), str(value)), True)
    return Described(_labels(feature, value if isinstance(value, tuple) else ()), True)


def json_value(value: FeatureValue) -> bool | int | str | list[str]:
    return list(value) if isinstance(value, tuple) else value
