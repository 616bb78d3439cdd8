"""Compare two Catalogs entity by entity: what changed, field by field, and what it means for customers.

`tariff diff` (config vs config) and `tariff plan` (config vs live) both explain a change set with this
module, so the labels below are the vocabulary reviewers see in pull requests.

Entities are keyed by what they are, never by file or line: ``plan:pro``, ``price:pro/monthly/EUR@EU``,
``package-price:extra-500/INR``, ``token-rules``.  Singletons (``project``, ``token-rules``,
``payment-rules``, ``settings``) use the kind as key and id.

Actions
    added, changed, retired (status set to retired, or an active/draft plan, package, promotion or
    feature left the config, which means it will be retired: nothing sold is deleted), reactivated
    (retired → active/draft), removed (anything else that left the config, e.g. a price version that
    stops being sold, a region, an already-retired plan).

Impact labels, from most to least severe (an entity with several field changes takes the most severe):
    destructive     something vanished from config with no retirement: a currency, cycle, region, pool,
                    page or model; a plan or package on sale deleted from the files; a price removed with
                    no base price to fall back to.
    breaking        existing subscribers lose something: a feature removed or lowered on a plan, an
                    allowance or limit lowered, a plan or package retired, a trial shortened, a model
                    charging more credits, a region's currency or countries changed.
    price_increase  an amount went up (with the percent); also a new region override above the base
                    price the region paid before, and a removed override whose base price is higher.
    price_decrease  the mirror image.
    neutral         settings that change behaviour but neither add nor take away: promotion limits,
                    schedules and discounts, grandfathering rules, provider costs, tax, project settings.
                    Promotions: a new or reactivated promotion is additive; one that ends, is retired or
                    leaves the config is neutral, because customers who redeemed it keep their discount
                    and nobody loses what they pay for.  Changes to anything never sold (a draft plan,
                    an already-retired package) are neutral too.
    additive        new things and more of them: new plans, prices, features, promotions; features
                    added to a plan; limits raised.
    copy_only       names, descriptions, labels, icons, badges and all pricing-page content: nothing
                    that changes what is sold or its price.  A new page is copy_only as well.

Comparisons: `unlimited` (and an absent limit, which means no limit) is greater than any number,
True > False, enum values rank in the order the feature lists them (the schema's display order, which
by convention runs from least to most), and for lists that act as sets (set features, countries,
purchasable_by) removing a member is breaking while adding one is additive.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from compiler.canonical import fingerprint, to_plain
from compiler.catalog import UNLIMITED, Catalog, Feature, Plan, Price, TokenPackage
from compiler.diagnostics import Diagnostic, Severity
from compiler.money import percent_change, plain
from compiler.timeutil import Duration

PRICE_POLICY: Final = "max_price_increase_percent"


class Action(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    RETIRED = "retired"
    REACTIVATED = "reactivated"
    REMOVED = "removed"


class Impact(StrEnum):
    ADDITIVE = "additive"
    PRICE_INCREASE = "price_increase"
    PRICE_DECREASE = "price_decrease"
    BREAKING = "breaking"
    COPY_ONLY = "copy_only"
    DESTRUCTIVE = "destructive"
    NEUTRAL = "neutral"


# Ranking decides the label of an entity with mixed field changes: the worst news wins.
IMPACT_RANK: Final[Mapping[Impact, int]] = {
    Impact.COPY_ONLY: 0,
    Impact.ADDITIVE: 1,
    Impact.NEUTRAL: 2,
    Impact.PRICE_DECREASE: 3,
    Impact.PRICE_INCREASE: 4,
    Impact.BREAKING: 5,
    Impact.DESTRUCTIVE: 6,
}
IMPACTS_BY_SEVERITY: Final = tuple(sorted(Impact, key=lambda i: -IMPACT_RANK[i]))

KIND_ORDER: Final = (
    "project",
    "currency",
    "cycle",
    "region",
    "feature",
    "plan",
    "price",
    "package",
    "package-price",
    "model",
    "token-rules",
    "payment-rules",
    "pool",
    "promotion",
    "page",
    "settings",
)
PRICE_KINDS: Final = ("price", "package-price")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One leaf that differs; `old`/`new` are plain JSON values (None when absent on that side)."""

    field: str
    old: Any
    new: Any
    percent: Decimal | None = None
    impact: Impact = Impact.NEUTRAL


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    kind: str
    id: str
    action: Action
    impact: Impact
    fields: tuple[FieldChange, ...] = ()
    summary: str = ""
    label: str = ""
    """Display name of the entity, or of the plan/package that owns a price."""
    owner: str | None = None
    cycle: str | None = None
    currency: str | None = None
    region: str | None = None
    old_amount: Decimal | None = None
    new_amount: Decimal | None = None
    percent: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    changes: tuple[Change, ...]
    base_fingerprint: str
    head_fingerprint: str
    findings: list[Diagnostic] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def has_errors(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.findings)

    def by_impact(self) -> dict[str, int]:
        """Count of changes per impact label, every label present, most severe first."""
        counts = {impact.value: 0 for impact in IMPACTS_BY_SEVERITY}
        for change in self.changes:
            counts[change.impact.value] += 1
        return counts


def diff_catalogs(
    old: Catalog, new: Catalog, *, locations: Mapping[str, tuple[str, int | None]] | None = None
) -> CatalogDiff:
    """Every change from `old` to `new`, sorted by kind then id, plus the price-increase policy findings.

    `locations` maps entity keys as the compiler remembers them (``plan:pro``, ``price:pro/monthly``)
    to (file, line) in the head config so findings point at the line to edit.
    """
    changes = [
        *_singleton("project", _project_plain(old), _project_plain(new), _PROJECT_RULES),
        *_entities("currency", old.currencies, new.currencies, _CURRENCY_RULES, exclude=("code",)),
        *_entities("cycle", old.cycles, new.cycles, _CYCLE_RULES, exclude=("id",)),
        *_entities("region", old.regions, new.regions, _REGION_RULES, exclude=("code",)),
        *_feature_changes(old, new),
        *_plan_changes(old, new),
        *_price_changes("price", old.plans, new.plans),
        *_entities("package", old.packages, new.packages, _PACKAGE_RULES, exclude=("id", "prices")),
        *_price_changes("package-price", old.packages, new.packages),
        *_entities("model", old.models, new.models, _MODEL_RULES, exclude=("id",)),
        *_singleton("token-rules", to_plain(old.token_rules), to_plain(new.token_rules), _TOKEN_RULES),
        *_singleton(
            "payment-rules", to_plain(old.payment_rules), to_plain(new.payment_rules), _PAYMENT_RULES
        ),
        *_entities("pool", old.pools, new.pools, _POOL_RULES, exclude=("id",)),
        *_entities(
            "promotion",
            old.promotions,
            new.promotions,
            _PROMOTION_RULES,
            exclude=("id",),
            removal_impact=Impact.NEUTRAL,
        ),
        *_entities("page", old.pages, new.pages, _PAGE_RULES, exclude=("id",)),
        *_singleton("settings", to_plain(old.settings), to_plain(new.settings), _SETTINGS_RULES),
    ]
    changes.sort(key=lambda c: (KIND_ORDER.index(c.kind), c.id))
    return CatalogDiff(
        changes=tuple(changes),
        base_fingerprint=old.fingerprint or fingerprint(old),
        head_fingerprint=new.fingerprint or fingerprint(new),
        findings=price_increase_findings(changes, new, locations or {}),
    )


# ---------------------------------------------------------------------------------------------- rules

Rule = Callable[[Any, Any], Impact]


def _copy(_old: Any, _new: Any) -> Impact:
    return Impact.COPY_ONLY


def _neutral(_old: Any, _new: Any) -> Impact:
    return Impact.NEUTRAL


def _breaking(_old: Any, _new: Any) -> Impact:
    return Impact.BREAKING


def _breaking_once_set(old: Any, _new: Any) -> Impact:
    """Changing a setting customers already depend on breaks them; setting it the first time does not."""
    return Impact.ADDITIVE if old is None else Impact.BREAKING


def _ranked(old: float, new: float) -> Impact:
    if new > old:
        return Impact.ADDITIVE
    if new < old:
        return Impact.BREAKING
    return Impact.NEUTRAL


def _more_is_better(old: Any, new: Any) -> Impact:
    """Counts where absent means none (trial days, credits in a package)."""
    return _ranked(_number(old, none=0), _number(new, none=0))


def _fewer_is_better(old: Any, new: Any) -> Impact:
    """Costs to the customer, such as credits charged per request."""
    return _ranked(-_number(old, none=0), -_number(new, none=0))


def _cap(old: Any, new: Any) -> Impact:
    """Limits where absent or `unlimited` means no limit at all."""
    return _ranked(_number(old, none=float("inf")), _number(new, none=float("inf")))


def _number(value: Any, *, none: float) -> float:
    if value is None:
        return none
    if value == UNLIMITED:
        return float("inf")
    if isinstance(value, bool):
        return float(value)
    try:
        return float(Decimal(str(value)))
    except ArithmeticError:
        return none


def _presence(old: Any, new: Any) -> Impact:
    """A block whose existence is the benefit (an allowance, rollover)."""
    if old is None and new is not None:
        return Impact.ADDITIVE
    if old is not None and new is None:
        return Impact.BREAKING
    return Impact.NEUTRAL


def _members(old: Any, new: Any) -> Impact:
    """Lists that behave as sets; absent means empty."""
    before, after = set(old or ()), set(new or ())
    if before - after:
        return Impact.BREAKING
    return Impact.ADDITIVE if after - before else Impact.NEUTRAL


def _members_or_all(old: Any, new: Any) -> Impact:
    """Restriction lists where absent means everyone (purchasable_by, a model's plans)."""
    if old is None and new is None:
        return Impact.NEUTRAL
    if old is None:
        return Impact.BREAKING
    if new is None:
        return Impact.ADDITIVE
    return _members(old, new)


def _longer_is_better(old: Any, new: Any) -> Impact:
    """Expiry periods; when either side is absent its meaning depends on context, so stay neutral."""
    if old is None or new is None:
        return Impact.NEUTRAL
    return _ranked(_approx_seconds(old), _approx_seconds(new))


def _approx_seconds(text: str) -> float:
    duration = Duration.parse(text)
    if duration.months:
        return duration.months * 30.4375 * 86400
    return duration.fixed.total_seconds()


def _status(old: Any, new: Any) -> Impact:
    """Status of things that are sold: only the `active` state is on sale."""
    if new == "active" and old != "active":
        return Impact.ADDITIVE
    if old == "active":
        return Impact.BREAKING
    return Impact.NEUTRAL


def _promotion_status(old: Any, new: Any) -> Impact:
    return Impact.ADDITIVE if new == "active" and old != "active" else Impact.NEUTRAL


def _bool_gain(old: Any, new: Any) -> Impact:
    return _ranked(float(bool(old)), float(bool(new)))


Rules = tuple[tuple[str, Rule], ...]

_PROJECT_RULES: Rules = (("name", _copy), ("default_region", _breaking_once_set), ("*", _neutral))
_CURRENCY_RULES: Rules = (("symbol", _copy), ("*", _neutral))
_CYCLE_RULES: Rules = (("label", _copy), ("every", _breaking), ("unit", _breaking), ("*", _neutral))
_REGION_RULES: Rules = (
    ("name", _copy),
    ("locale", _copy),
    ("countries", _members),
    ("currency", _breaking),
    ("*", _neutral),
)
_FEATURE_RULES: Rules = (
    ("label", _copy),
    ("description", _copy),
    ("unit", _copy),
    ("icon", _copy),
    ("value_labels*", _copy),
    ("status", _status),
    ("type", _breaking),
    ("unlimited_allowed", _bool_gain),
    ("values", _members),
    ("*", _neutral),
)
_PLAN_RULES: Rules = (
    ("name", _copy),
    ("description", _copy),
    ("payu.productinfo", _copy),
    ("status", _status),
    ("trial_days", _more_is_better),
    ("tokens.allowance", _presence),
    ("tokens.allowance.amount", _more_is_better),
    ("tokens.allowance.expires_after", _longer_is_better),
    ("tokens.rollover", _presence),
    ("tokens.rollover.max_*", _cap),
    ("tokens.rollover.expires_after", _longer_is_better),
    ("tokens.limits.*", _cap),
    ("tokens.throttle.*", _cap),
    ("*", _neutral),
)
_PACKAGE_RULES: Rules = (
    ("name", _copy),
    ("description", _copy),
    ("status", _status),
    ("tokens", _more_is_better),
    ("validity_days", _cap),
    ("purchasable_by", _members_or_all),
    ("*", _neutral),
)
_MODEL_RULES: Rules = (
    ("label", _copy),
    ("status", _status),
    ("credits_*", _fewer_is_better),
    ("plans", _members_or_all),
    ("*", _neutral),
)
_TOKEN_RULES: Rules = (("rollover_max_tokens", _cap), ("*", _neutral))
_PAYMENT_RULES: Rules = (("*", _neutral),)
_POOL_RULES: Rules = (
    ("name", _copy),
    ("plans", _members),
    ("max_members", _cap),
    ("member_*", _cap),
    ("*", _neutral),
)
_PROMOTION_RULES: Rules = (
    ("name", _copy),
    ("description", _copy),
    ("badge", _copy),
    ("strikethrough", _copy),
    ("show_end_date", _copy),
    ("status", _promotion_status),
    ("*", _neutral),
)
_PAGE_RULES: Rules = (("*", _copy),)
_SETTINGS_RULES: Rules = (("*", _neutral),)


def _classify(rules: Rules, path: str, old: Any, new: Any) -> Impact:
    for pattern, rule in rules:
        if fnmatch.fnmatchcase(path, pattern):
            return rule(old, new)
    return Impact.NEUTRAL


def worst(impacts: Iterable[Impact], default: Impact = Impact.NEUTRAL) -> Impact:
    return max(impacts, key=IMPACT_RANK.__getitem__, default=default)


# ------------------------------------------------------------------------------------- field walking


def walk(old: Any, new: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, old, new) for every differing leaf of two plain values.

    Lists of scalars are leaves (a reordered list is a change worth showing). Lists of mappings
    with an identifying key (page cards by `plan`, FAQ entries by `question`…) are compared item
    by item, so one edited card shows as `cards[plan=pro].tagline`, not as the whole list. A block
    that appears or disappears is reported once at its own path.
    """
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*old, *(k for k in new if k not in old)]
        for key in keys:
            yield from walk(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return
    if isinstance(old, list) and isinstance(new, list):
        old_by, new_by = _by_identity(old), _by_identity(new)
        if old_by is not None and new_by is not None:
            yield from _walk_keyed(old_by, new_by, path)
            return
    yield path, old, new


_IDENTITY_KEYS = ("plan", "id", "question", "title", "feature", "text")


def _by_identity(items: list[Any]) -> dict[str, Any] | None:
    """Items keyed `plan=pro`, `feature=ai_chat`…, or None when some item has no unique name."""
    keyed: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        name = next((f"{k}={item[k]}" for k in _IDENTITY_KEYS if isinstance(item.get(k), str)), None)
        if name is None or name in keyed:
            return None
        keyed[name] = item
    return keyed


def _walk_keyed(old_by: dict[str, Any], new_by: dict[str, Any], path: str) -> Iterator[tuple[str, Any, Any]]:
    for name in [*old_by, *(n for n in new_by if n not in old_by)]:
        yield from walk(old_by.get(name), new_by.get(name), f"{path}[{name}]")
    common_old = [n for n in old_by if n in new_by]
    common_new = [n for n in new_by if n in old_by]
    if common_old != common_new:
        yield f"{path} (order)", common_old, common_new


def _field_changes(old: Any, new: Any, rules: Rules) -> list[FieldChange]:
    return [FieldChange(path, o, n, None, _classify(rules, path, o, n)) for path, o, n in walk(old, new)]


def _plain_without(value: Any, exclude: Iterable[str]) -> dict[str, Any]:
    data: dict[str, Any] = to_plain(value)
    for name in exclude:
        data.pop(name, None)
    return data


def _differing_plain(old: Any, new: Any, exclude: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plain forms of two entities, limited to the fields whose values differ.

    A large catalog's plan compares thousands of entities that are mostly unchanged, and converting each
    whole entity to plain data dominated the diff. Equal values have equal plain forms (Decimals and
    instants compare by value, which is what their plain spelling encodes), and `walk` reports nothing
    for equal fields, so leaving them out changes nothing in the result, its order included.
    """
    if type(old) is not type(new) or not dataclasses.is_dataclass(old):
        return _plain_without(old, exclude), _plain_without(new, exclude)
    names = [f.name for f in dataclasses.fields(old) if f.name not in exclude]
    differing = [name for name in names if getattr(old, name) != getattr(new, name)]
    return (
        {name: to_plain(getattr(old, name)) for name in differing},
        {name: to_plain(getattr(new, name)) for name in differing},
    )


# ------------------------------------------------------------------------------------------ entities

_KIND_TITLES: Final = {
    "project": "Project",
    "currency": "Currency",
    "cycle": "Billing cycle",
    "region": "Region",
    "feature": "Feature",
    "plan": "Plan",
    "package": "Package",
    "model": "Model",
    "token-rules": "Token rules",
    "payment-rules": "Payment rules",
    "pool": "Pool",
    "promotion": "Promotion",
    "page": "Page",
    "settings": "Settings",
}
# Kinds whose disappearance means "it will be retired" rather than "it is gone".
_RETIRE_ON_REMOVAL: Final = ("plan", "package", "promotion", "feature")


def _display(entity_id: str, *objects: Any) -> str:
    for obj in objects:
        for attr in ("name", "label"):
            value = getattr(obj, attr, None)
            if isinstance(value, str) and value:
                return value
    return entity_id


def _entities(
    kind: str,
    old_map: Mapping[str, Any],
    new_map: Mapping[str, Any],
    rules: Rules,
    *,
    exclude: Iterable[str] = (),
    removal_impact: Impact | None = None,
) -> Iterator[Change]:
    exclude = tuple(exclude)
    for entity_id in _union(old_map, new_map):
        change = _entity_change(
            kind,
            entity_id,
            old_map.get(entity_id),
            new_map.get(entity_id),
            rules,
            exclude=exclude,
            removal_impact=removal_impact,
        )
        if change is not None:
            yield change


def _union(old_map: Mapping[str, Any], new_map: Mapping[str, Any]) -> list[str]:
    return sorted(set(old_map) | set(new_map))


def _entity_change(
    kind: str,
    entity_id: str,
    old: Any,
    new: Any,
    rules: Rules,
    *,
    exclude: tuple[str, ...],
    extra: Iterable[FieldChange] = (),
    removal_impact: Impact | None = None,
) -> Change | None:
    key = f"{kind}:{entity_id}"
    label = _display(entity_id, new, old)
    title = _KIND_TITLES[kind]
    if old is None:
        impact = Impact.COPY_ONLY if kind == "page" else Impact.ADDITIVE
        status = getattr(new, "status", None)
        suffix = f" ({status})" if status not in (None, "active") else ""
        return Change(key, kind, entity_id, Action.ADDED, impact, (), f"{title} {label} added{suffix}", label)
    if new is None:
        return _removal(kind, entity_id, old, label, removal_impact)
    fields = [*_field_changes(*_differing_plain(old, new, exclude), rules), *extra]
    if not fields:
        return None
    old_status = getattr(old, "status", None)
    if old_status == "draft":
        # Nobody holds a draft, so its edits cannot add or take away anything from customers.
        fields = [
            f if f.impact is Impact.COPY_ONLY or f.field == "status" else _with_impact(f, Impact.NEUTRAL)
            for f in fields
        ]
    action = _status_action(old_status, getattr(new, "status", None))
    summary = _changed_summary(f"{title} {label}", action, fields)
    impact = worst(f.impact for f in fields)
    return Change(key, kind, entity_id, action, impact, tuple(fields), summary, label)


def _with_impact(change: FieldChange, impact: Impact) -> FieldChange:
    return FieldChange(change.field, change.old, change.new, change.percent, impact)


def _status_action(old_status: str | None, new_status: str | None) -> Action:
    if old_status == new_status:
        return Action.CHANGED
    if new_status == "retired":
        return Action.RETIRED
    if old_status == "retired":
        return Action.REACTIVATED
    return Action.CHANGED


def _removal(kind: str, entity_id: str, old: Any, label: str, impact: Impact | None) -> Change:
    title = _KIND_TITLES[kind]
    status = getattr(old, "status", None)
    if kind in _RETIRE_ON_REMOVAL and status in ("active", "draft"):
        if impact is None:
            impact = Impact.DESTRUCTIVE if status == "active" else Impact.NEUTRAL
        summary = f"{title} {label} removed from config; it will be retired"
        action = Action.RETIRED
    else:
        if impact is None:
            impact = Impact.NEUTRAL if status in ("retired", "draft") else Impact.DESTRUCTIVE
        summary = f"{title} {label} removed from config"
        action = Action.REMOVED
    fields = (FieldChange("status", status, None, None, impact),) if status else ()
    return Change(f"{kind}:{entity_id}", kind, entity_id, action, impact, fields, summary, label)


def _changed_summary(subject: str, action: Action, fields: list[FieldChange]) -> str:
    if action is Action.RETIRED:
        return f"{subject} retired"
    if action is Action.REACTIVATED:
        return f"{subject} reactivated"
    if len(fields) == 1:
        only = fields[0]
        return f"{subject}: {only.field} {short_value(only.old)} → {short_value(only.new)}"
    names = ", ".join(f.field for f in fields[:4]) + (", …" if len(fields) > 4 else "")
    return f"{subject}: {len(fields)} fields changed ({names})"


def _singleton(kind: str, old: dict[str, Any], new: dict[str, Any], rules: Rules) -> list[Change]:
    fields = _field_changes(old, new, rules)
    if not fields:
        return []
    title = _KIND_TITLES[kind]
    return [
        Change(
            kind,
            kind,
            kind,
            Action.CHANGED,
            worst(f.impact for f in fields),
            tuple(fields),
            _changed_summary(title, Action.CHANGED, fields),
            title,
        )
    ]


def _project_plain(catalog: Catalog) -> dict[str, Any]:
    names = ("project", "name", "timezone", "default_region")
    return {name: to_plain(getattr(catalog, name)) for name in names}


# ------------------------------------------------------------------------------------------ features


def _feature_changes(old: Catalog, new: Catalog) -> Iterator[Change]:
    for feature_id in _union(old.features, new.features):
        before, after = old.features.get(feature_id), new.features.get(feature_id)
        # Retiring a feature nobody had takes nothing away; retiring one that plans offered does.
        offered = before is not None and any(_offers(plan, before) for plan in old.plans.values())
        retire_impact = Impact.BREAKING if offered else Impact.NEUTRAL
        change = _entity_change(
            "feature",
            feature_id,
            before,
            after,
            _FEATURE_RULES,
            exclude=("id",),
            removal_impact=retire_impact,
        )
        if change is not None and change.action is Action.RETIRED and not offered:
            change = _relabel_status(change, Impact.NEUTRAL)
        if change is not None:
            yield change


def _offers(plan: Plan, feature: Feature | None) -> bool:
    if feature is None or plan.status == "draft":
        return False
    value = plan.features.get(feature.id)
    return value is not None and value != feature.off_value()


def _relabel_status(change: Change, impact: Impact) -> Change:
    fields = tuple(_with_impact(f, impact) if f.field == "status" else f for f in change.fields)
    return Change(
        change.key,
        change.kind,
        change.id,
        change.action,
        worst(f.impact for f in fields),
        fields,
        change.summary,
        change.label,
    )


def compare_feature_values(feature: Feature | None, old: Any, new: Any) -> Impact:
    """Additive when a plan's value for `feature` goes up, breaking when it goes down (plain values)."""
    if old == new:
        return Impact.NEUTRAL
    if isinstance(old, list) or isinstance(new, list) or (feature and feature.type == "set"):
        return _members(old, new)
    if isinstance(old, bool) or isinstance(new, bool) or (feature and feature.type == "boolean"):
        return _bool_gain(old, new)
    if feature is not None and feature.type == "enum":
        order = feature.values
        if old in order and new in order:
            return _ranked(order.index(old), order.index(new))
        if not new:
            return Impact.BREAKING
        return Impact.ADDITIVE if not old else Impact.NEUTRAL
    return _ranked(_number(old, none=0), _number(new, none=0))


def _off(feature: Feature | None) -> Any:
    return to_plain(feature.off_value()) if feature is not None else None


def _plan_feature_fields(old: Plan, new: Plan, old_cat: Catalog, new_cat: Catalog) -> list[FieldChange]:
    fields = []
    for feature_id in sorted(set(old.features) | set(new.features)):
        feature = new_cat.features.get(feature_id) or old_cat.features.get(feature_id)
        # A feature a plan does not list is off, so "absent" and "false" are the same thing.
        before = to_plain(old.features[feature_id]) if feature_id in old.features else _off(feature)
        after = to_plain(new.features[feature_id]) if feature_id in new.features else _off(feature)
        if before != after:
            impact = compare_feature_values(feature, before, after)
            fields.append(FieldChange(f"features.{feature_id}", before, after, None, impact))
    return fields


# --------------------------------------------------------------------------------------------- plans


def _plan_changes(old: Catalog, new: Catalog) -> Iterator[Change]:
    for plan_id in _union(old.plans, new.plans):
        before, after = old.plans.get(plan_id), new.plans.get(plan_id)
        extra = _plan_feature_fields(before, after, old, new) if before and after else []
        change = _entity_change(
            "plan", plan_id, before, after, _PLAN_RULES, exclude=("id", "prices", "features"), extra=extra
        )
        if change is not None:
            yield change


# -------------------------------------------------------------------------------------------- prices

Owner = Plan | TokenPackage


def price_id(kind: str, owner_id: str, price: Price) -> str:
    """`pro/monthly/EUR@EU` for plans; `extra-500/INR` for packages, whose prices have no cycle."""
    if kind == "price":
        return f"{owner_id}/{price.key}"
    scope = f"@{price.region}" if price.region else ""
    return f"{owner_id}/{price.currency}{scope}"


def _price_changes(
    kind: str, old_owners: Mapping[str, Owner], new_owners: Mapping[str, Owner]
) -> Iterator[Change]:
    for owner_id in _union(old_owners, new_owners):
        before, after = old_owners.get(owner_id), new_owners.get(owner_id)
        old_prices = {price_id(kind, owner_id, p): p for p in (before.prices if before else ())}
        new_prices = {price_id(kind, owner_id, p): p for p in (after.prices if after else ())}
        context = _PriceContext(kind, owner_id, before, after, old_prices, new_prices)
        for pid in _union(old_prices, new_prices):
            change = context.change(pid)
            if change is not None:
                yield change


@dataclass(frozen=True, slots=True)
class _PriceContext:
    kind: str
    owner_id: str
    before: Owner | None
    after: Owner | None
    old_prices: Mapping[str, Price]
    new_prices: Mapping[str, Price]

    @property
    def label(self) -> str:
        return _display(self.owner_id, self.after, self.before)

    @property
    def sold_before(self) -> bool:
        """Whether anyone could have bought the old price (a draft or a new owner has no buyers)."""
        return self.before is not None and self.before.status != "draft"

    def change(self, pid: str) -> Change | None:
        old, new = self.old_prices.get(pid), self.new_prices.get(pid)
        if old is not None and new is not None:
            if old.amount == new.amount:
                return None
            impact = _amount_impact(old.amount, new.amount) if self.sold_before else Impact.NEUTRAL
            return self._make(pid, Action.CHANGED, impact, new, old.amount, new.amount, note="")
        if new is not None:
            return self._added(pid, new)
        assert old is not None
        return self._removed(pid, old)

    def _base(self, prices: Mapping[str, Price], price: Price) -> Price | None:
        """The currency-wide price a region falls back to when it has no override."""
        if price.region is None:
            return None
        base = Price(price.cycle, price.currency, price.amount)
        return prices.get(price_id(self.kind, self.owner_id, base))

    def _added(self, pid: str, new: Price) -> Change:
        base = self._base(self.old_prices, new) if self.sold_before else None
        if base is None:
            return self._make(pid, Action.ADDED, Impact.ADDITIVE, new, None, new.amount, note="new price")
        # The region paid the base price until now, so the override is a price change for it.
        impact = _amount_impact(base.amount, new.amount)
        return self._make(
            pid,
            Action.ADDED,
            impact,
            new,
            base.amount,
            new.amount,
            note=f"new {new.region} override; was the {new.currency} base price",
        )

    def _removed(self, pid: str, old: Price) -> Change:
        was_on_sale = self.before is not None and self.before.status == "active"
        owner_kept_on_sale = self.after is None or self.after.status == "active"
        base = self._base(self.new_prices, old)
        if not was_on_sale or not owner_kept_on_sale:
            impact, new_amount, note = Impact.NEUTRAL, None, "no longer offered"
        elif base is not None:
            impact, new_amount = _amount_impact(old.amount, base.amount), base.amount
            note = f"{old.region} override removed; the {old.currency} base price applies"
        else:
            impact, new_amount, note = Impact.DESTRUCTIVE, None, "removed without replacement"
        return self._make(pid, Action.REMOVED, impact, old, old.amount, new_amount, note=note)

    def _make(
        self,
        pid: str,
        action: Action,
        impact: Impact,
        price: Price,
        old_amount: Decimal | None,
        new_amount: Decimal | None,
        *,
        note: str,
    ) -> Change:
        percent = None
        if old_amount is not None and new_amount is not None:
            percent = percent_change(old_amount, new_amount)
        # Amounts are what the customer paid before and pays after, so an override shows its base price.
        plain_old = plain(old_amount) if old_amount is not None else None
        plain_new = plain(new_amount) if new_amount is not None else None
        fields = (FieldChange("amount", plain_old, plain_new, percent, impact),)
        cycle = price.cycle if self.kind == "price" else None
        summary = _price_summary(self.label, cycle, price, old_amount, new_amount, percent, note)
        return Change(
            f"{self.kind}:{pid}",
            self.kind,
            pid,
            action,
            impact,
            fields,
            summary,
            self.label,
            owner=self.owner_id,
            cycle=cycle,
            currency=price.currency,
            region=price.region,
            old_amount=old_amount,
            new_amount=new_amount,
            percent=percent,
        )


def _amount_impact(old: Decimal, new: Decimal) -> Impact:
    if new > old:
        return Impact.PRICE_INCREASE
    if new < old:
        return Impact.PRICE_DECREASE
    return Impact.NEUTRAL


def _price_summary(
    label: str,
    cycle: str | None,
    price: Price,
    old: Decimal | None,
    new: Decimal | None,
    percent: Decimal | None,
    note: str,
) -> str:
    scope = price.currency + (f"@{price.region}" if price.region else "")
    subject = " ".join(part for part in (label, cycle, scope) if part)
    if old is not None and new is not None:
        change = f" ({format_percent(percent)})" if percent is not None else ""
        tail = f"; {note}" if note else ""
        return f"{subject} {format_amount(old)} → {format_amount(new)}{change}{tail}"
    amount = format_amount(new if new is not None else old)
    return f"{subject} {amount} ({note})"


# ------------------------------------------------------------------------------------------- policy


def price_increase_findings(
    changes: Iterable[Change], new: Catalog, locations: Mapping[str, tuple[str, int | None]]
) -> list[Diagnostic]:
    """`max_price_increase_percent`: increases above the limit need an approval or a suppression."""
    policy = new.settings.policies.get(PRICE_POLICY)
    if policy is None or policy.severity == "off" or policy.limit is None:
        return []
    severity = Severity.ERROR if policy.severity == "error" else Severity.WARNING
    findings = []
    for change in changes:
        if change.impact is not Impact.PRICE_INCREASE or change.kind not in PRICE_KINDS:
            continue
        # From free to paid has no finite percent, so it exceeds any limit.
        over = change.percent is None or change.percent > policy.limit
        if not over or _approved(change, new) or _suppressed(change, new):
            continue
        findings.append(_finding(change, policy.limit, severity, locations))
    return findings


def owner_target(change: Change) -> str:
    return f"{'plan' if change.kind == 'price' else 'package'}:{change.owner}"


def _approved(change: Change, new: Catalog) -> bool:
    owners: Mapping[str, Owner] = new.plans if change.kind == "price" else new.packages
    owner = owners.get(change.owner or "")
    approval = owner.approval if owner is not None else None
    if approval is None:
        return False
    if approval.up_to_percent is None:
        return True
    return change.percent is not None and approval.up_to_percent >= change.percent


def _suppressed(change: Change, new: Catalog) -> bool:
    target = owner_target(change)
    return any(
        s.policy == PRICE_POLICY and fnmatch.fnmatchcase(target, s.target) for s in new.settings.suppressions
    )


def _finding(
    change: Change, limit: Decimal, severity: Severity, locations: Mapping[str, tuple[str, int | None]]
) -> Diagnostic:
    target = owner_target(change)
    rise = f"{format_percent(change.percent)}" if change.percent is not None else "from free to paid"
    where = locations.get(f"price:{change.owner}/{change.cycle}") or locations.get(target) or (None, None)
    block = f"prices.{change.cycle}" if change.kind == "price" else "prices"
    scope = f"by_region.{change.region}." if change.region else ""
    path = f"{block}.{scope}{change.currency}"
    needed = f", up_to_percent: {plain(change.percent)}" if change.percent is not None else ""
    owner_file = f" in {where[0]}" if where[0] else ""
    return Diagnostic(
        severity,
        f"policy.{PRICE_POLICY}",
        f"price increase {rise} is above the {plain(limit)}% limit: {change.summary}",
        file=where[0],
        line=where[1],
        path=path,
        hint=f"add `approval: {{approved_by: <who>, reason: <why>{needed}}}` to {target}{owner_file}, "
        f"or a suppression for policy {PRICE_POLICY!r} and target {target!r} with a reason",
    )


# ---------------------------------------------------------------------------------------- formatting


def format_amount(amount: Decimal | None) -> str:
    """`1,499`, `19.90`, `0.005`: thousands separators, whole amounts without decimals, cents kept."""
    if amount is None:
        return "—"
    value = amount.normalize()
    if value == value.to_integral_value():
        return f"{value.quantize(Decimal(1)):,f}"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(Decimal("0.01"))
    return f"{value:,f}"


def format_percent(percent: Decimal | None) -> str:
    return "—" if percent is None else f"{percent:+f}%"


def short_value(value: Any, limit: int = 60) -> str:
    """A plain value in one short line, for summaries."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        text = ", ".join(short_value(v, limit) for v in value) if value else "(none)"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {short_value(v, limit)}" for k, v in value.items() if v not in (None, [], {}))
        text = "{" + text + "}"
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
