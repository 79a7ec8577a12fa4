"""Per-site tiering and retention rules of one deployment, read from a JSON rules file.

A rules file looks like this::

    {"rules": [
      {"site": "north", "modality": "CT",
       "transitions": [{"days": 30, "storage_class": "STANDARD_IA"},
                       {"days": 180, "storage_class": "GLACIER_IR"}],
       "retain_years": 10},
      {"site": "north", "retain_days": 3650}
    ]}

A rule without ``modality`` applies to every object of its site. Transitions become S3
lifecycle rules that filter on the site's key prefix and, with a modality, on the object tag
``modality`` that the write path sets (``cirrus.storage.tags``). S3 counts their days from the
object's creation, that is from the day the instance was archived.

Retention counts from the study's StudyDate (0008,0020) instead, because a retention period
runs from the examination. ``cirrus.lifecycle.retention`` deletes such studies through the
archive's delete path, never by S3 expiration. Only storage classes that serve a GET in
milliseconds are accepted, so WADO-RS reads a tiered object as any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from cirrus.storage.keys import site_prefix, validate_site
from cirrus.storage.tags import MODALITY_TAG

# Storage classes whose objects a GET reads at once, with the minimum days an object must be
# in S3 before a transition to the class (S3 rejects a lifecycle rule with fewer).
INSTANT_CLASSES: Final[Mapping[str, int]] = {
    "STANDARD_IA": 30,
    "ONEZONE_IA": 30,
    "INTELLIGENT_TIERING": 0,
    "GLACIER_IR": 0,
}
# Classes whose objects must be restored before a GET, so a WADO-RS retrieve would fail.
ARCHIVE_CLASSES: Final = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# S3 bills an object in STANDARD_IA or ONEZONE_IA for at least 30 days, and a lifecycle rule
# must keep it there that long before the next transition.
_INFREQUENT_ACCESS_MINIMUM_DAYS: Final = 30
# Modality (0008,0060) is a CS value: at most 16 upper-case letters, digits, spaces or '_'.
_MODALITY: Final = re.compile(r"[A-Z0-9_][A-Z0-9_ ]{0,15}")
# S3 takes at most 1,000 rules in one lifecycle configuration.
MAX_S3_RULES: Final = 1000
_RULE_KEYS: Final = frozenset({"site", "modality", "transitions", "retain_days", "retain_years"})


# The maximum retention accepted. Today minus it must stay a valid date (year 1 or later),
# and no archive keeps studies longer.
MAX_RETAIN_YEARS: Final = 1000
MAX_RETAIN_DAYS: Final = 365 * MAX_RETAIN_YEARS


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the rule and the value."""


@dataclass(frozen=True)
class Transition:
    days: int
    storage_class: str


@dataclass(frozen=True)
class SiteRule:
    """The tiering and retention of one site's objects, or of one modality in it."""

    site: str
    modality: str | None
    transitions: tuple[Transition, ...] = ()
    retain_days: int | None = None
    retain_years: int | None = None

    @property
    def name(self) -> str:
        return f"{self.site}-{self.modality}" if self.modality else f"{self.site}-all"

    @property
    def has_retention(self) -> bool:
        return self.retain_days is not None or self.retain_years is not None

    def expires_before(self, today: date) -> date:
        """Return the first StudyDate that is still retained on ``today``.

        A study dated before it is past retention. Years are calendar years, so 29 February
        plus one year is 28 February. A retention that reaches before year 1 returns
        ``date.min``, which keeps every study; ``parse_rules`` rejects such retentions.
        """
        if self.retain_days is not None:
            if self.retain_days >= (today - date.min).days:
                return date.min
            return today - timedelta(days=self.retain_days)
        year = today.year - (self.retain_years or 0)
        if year < date.min.year:
            return date.min
        try:
            return today.replace(year=year)
        except ValueError:
            return today.replace(year=year, day=28)

    def describe_retention(self) -> str:
        if self.retain_days is not None:
            return f"{self.retain_days} days"
        if self.retain_years is not None:
            return f"{self.retain_years} years"
        return "kept"

    def s3_rule(self) -> dict[str, Any] | None:
        """Return the S3 lifecycle rule of the transitions, or None without transitions."""
        if not self.transitions:
            return None
        prefix = site_prefix(self.site)
        rule_filter: dict[str, Any] = {"Prefix": prefix}
        if self.modality is not None:
            tag = {"Key": MODALITY_TAG, "Value": self.modality}
            rule_filter = {"And": {"Prefix": prefix, "Tags": [tag]}}
        return {
            "ID": f"tier-{self.name}",
            "Status": "Enabled",
            "Filter": rule_filter,
            "Transitions": [
                {"Days": step.days, "StorageClass": step.storage_class} for step in self.transitions
            ],
        }


@dataclass(frozen=True)
class LifecycleRules:
    rules: tuple[SiteRule, ...]

    @property
    def sites(self) -> list[str]:
        return sorted({rule.site for rule in self.rules})

    def s3_rules(self) -> list[dict[str, Any]]:
        """Return the S3 lifecycle rules of every rule with transitions."""
        return [s3 for rule in self.rules if (s3 := rule.s3_rule()) is not None]

    def retention_of(self, site: str, modalities: Iterable[str]) -> SiteRule | None:
        """Return the rule that sets the retention of a study of ``site``, or None to keep it.

        Each modality of the study takes its own rule, or the site's rule without modality.
        The study is kept unless every modality has a retention, and then the longest one
        applies. A study without modalities takes the site's rule.
        """
        by_modality = {rule.modality: rule for rule in self.rules if rule.site == site}
        site_rule = by_modality.get(None)
        applicable = []
        wanted: list[str | None] = [*sorted(set(modalities))] or [None]
        for modality in wanted:
            rule = by_modality.get(modality, site_rule) if modality else site_rule
            if rule is None or not rule.has_retention:
                return None
            applicable.append(rule)
        today = date.today()
        return min(applicable, key=lambda rule: rule.expires_before(today))


def load_rules(path: Path) -> LifecycleRules:
    """Read and validate the rules file ``path``; raise ``RulesError`` naming what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"cannot read rules file {path}: {exc}") from exc
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "rules") -> LifecycleRules:
    """Parse and validate the JSON text of a rules file; raise ``RulesError``."""
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise RulesError(f"{source} is not valid JSON: {exc}") from exc
    except RulesError as exc:
        raise RulesError(f"{source}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RulesError(f'{source} must be a JSON object with a "rules" list')
    try:
        rules = tuple(_rule(entry, number) for number, entry in enumerate(document["rules"], 1))
        _check_unique(rules)
        _check_overlap(rules)
    except RulesError as exc:
        raise RulesError(f"{source}: {exc}") from exc
    if len([rule for rule in rules if rule.transitions]) > MAX_S3_RULES:
        raise RulesError(
            f"{source}: more than {MAX_S3_RULES} rules have transitions; S3 takes at most that"
        )
    return LifecycleRules(rules)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys, which would drop a rule without a word.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise RulesError(f"key {key!r} appears twice in one JSON object; keep one")
        document[key] = value
    return document


def _rule(entry: Any, number: int) -> SiteRule:
    where = f"rule {number}"
    if not isinstance(entry, dict):
        raise RulesError(f"{where} must be a JSON object")
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise RulesError(f"{where} has unknown keys {unknown}; allowed: {sorted(_RULE_KEYS)}")

    site = entry.get("site")
    if site is None:
        raise RulesError(f'{where} has no "site"; name the site it applies to')
    try:
        site = validate_site(site if isinstance(site, str) else "")
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from exc

    where = f"rule {number} (site {site!r})"
    modality = entry.get("modality")
    valid = isinstance(modality, str) and _MODALITY.fullmatch(modality)
    if modality is not None and not valid:
        raise RulesError(
            f"{where}: modality {modality!r} is invalid; use a Modality (0008,0060) value such "
            "as CT or MR, or leave it out for every modality"
        )
    if modality is not None:
        where = f"rule {number} (site {site!r}, modality {modality!r})"

    transitions = _transitions(entry.get("transitions", []), where)
    retain_days = _positive(entry, "retain_days", where, MAX_RETAIN_DAYS)
    retain_years = _positive(entry, "retain_years", where, MAX_RETAIN_YEARS)
    if retain_days is not None and retain_years is not None:
        raise RulesError(f"{where}: give retain_days or retain_years, not both")
    if not transitions and retain_days is None and retain_years is None:
        raise RulesError(f"{where} has neither transitions nor a retention")
    return SiteRule(site, modality, transitions, retain_days, retain_years)


def _positive(entry: dict[str, Any], name: str, where: str, maximum: int) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise RulesError(
            f"{where}: {name} must be a whole number from 1 to {maximum:,}, not {value!r}"
        )
    return value


def _transitions(entries: Any, where: str) -> tuple[Transition, ...]:
    if not isinstance(entries, list):
        raise RulesError(f"{where}: transitions must be a list")
    steps: list[Transition] = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"days", "storage_class"}:
            raise RulesError(f'{where}: each transition needs exactly "days" and "storage_class"')
        storage_class, days = entry["storage_class"], entry["days"]
        if storage_class in ARCHIVE_CLASSES:
            raise RulesError(
                f"{where}: storage class {storage_class} is rejected because its objects must "
                "be restored before they can be read, so a WADO-RS retrieve or C-MOVE of a tiered "
                f"instance would fail; use one of {sorted(INSTANT_CLASSES)}"
            )
        if storage_class not in INSTANT_CLASSES:
            raise RulesError(
                f"{where}: storage class {storage_class!r} is unknown; use one of "
                f"{sorted(INSTANT_CLASSES)}"
            )
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise RulesError(f"{where}: days must be a whole number of at least 0, not {days!r}")
        minimum = INSTANT_CLASSES[storage_class]
        if days < minimum:
            raise RulesError(
                f"{where}: S3 moves objects to {storage_class} only after {minimum} days or more, "
                f"not {days}"
            )
        if steps:
            _check_after(steps[-1], Transition(days, storage_class), where)
        steps.append(Transition(days, storage_class))
    return tuple(steps)


def _check_after(previous: Transition, step: Transition, where: str) -> None:
    if step.days <= previous.days:
        raise RulesError(
            f"{where}: transitions must be in increasing days; {step.days} follows {previous.days}"
        )
    if step.storage_class == previous.storage_class:
        raise RulesError(f"{where}: two transitions to {step.storage_class}")
    if (
        previous.storage_class in ("STANDARD_IA", "ONEZONE_IA")
        and step.days - previous.days < _INFREQUENT_ACCESS_MINIMUM_DAYS
    ):
        raise RulesError(
            f"{where}: S3 keeps objects in {previous.storage_class} at least "
            f"{_INFREQUENT_ACCESS_MINIMUM_DAYS} days before the next transition, so the "
            f"transition to {step.storage_class} must be on day {previous.days + 30} or later"
        )


def _check_unique(rules: tuple[SiteRule, ...]) -> None:
    seen: set[tuple[str, str | None]] = set()
    for rule in rules:
        key = (rule.site, rule.modality)
        if key in seen:
            which = f"modality {rule.modality}" if rule.modality else "every modality"
            raise RulesError(f"site {rule.site!r} has two rules for {which}; merge them")
        seen.add(key)


def _check_overlap(rules: tuple[SiteRule, ...]) -> None:
    """Reject transitions of a site-wide rule where modality rules of the site have some too.

    S3 would apply both lifecycle rules to an object of that modality, and pick the cheaper
    class, which is rarely what the file meant.
    """
    site_wide = {rule.site for rule in rules if rule.modality is None and rule.transitions}
    for rule in rules:
        if rule.modality is not None and rule.transitions and rule.site in site_wide:
            raise RulesError(
                f"site {rule.site!r} has transitions for every modality and for modality "
                f"{rule.modality}; S3 would apply both, so give transitions either per "
                "modality or for the whole site"
            )
