"""Tracked images: the refresh's configuration, and which upstream tags each entry selects.

The configuration is JSON (schema `shared/schemas/tracked-images.v1.json`) so the app validates it with
the jsonschema it already ships, with no YAML parser to deploy. A bad entry is reported with its index
and field and left out; the others still run, so one typo never stops every refresh.

Version ranges use `node-semver` (the Python port of npm's semver): it parses the range syntax people
already write (`>=1.25 <2`, `^8.0`, `~1.27`, `1.x || 2.x`), and its loose mode reads Docker-style tags
(`1.27`, `v1.30.1`) as versions, where `semver`/`packaging` accept single comparisons or PEP 440 only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any

from shared.azure.config_source import (
    APP_ROOT,  # noqa: F401 (where relative paths start; tests use it)
    ConfigUnavailable,
    read_config,
)
from shared.core import policy
from shared.core.outcome import Problem
from shared.core.patterns import UnsafePattern, compile_pattern
from shared.core.reference import ImageReference, InvalidReference, Repository, parse_reference, parse_repository
from shared.core.referrers import ReferrerChoice, parse_choice
from shared.core.request import field_path
from shared.core.resource_ids import RegistryId, parse_registry_id
from shared.core.settings import REFRESH, Settings
from shared.schemas import validator

# nodesemver is imported only for entries that use a semver range: the timer alone pays for it.

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from nodesemver import SemVer


class TrackedConfigError(ValueError):
    """The configuration as a whole cannot be read (missing file, not JSON, no `images`)."""


@dataclass(frozen=True)
class TagRule:
    tags: tuple[str, ...] = ()
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    semver: str | None = None
    prereleases: bool = False
    newest: int | None = None

    @property
    def needs_listing(self) -> bool:
        """Whether the upstream's tag list is needed, or the explicit tags suffice (HEADs only)."""
        return bool(self.include or self.semver or self.newest)


@dataclass(frozen=True)
class TrackedImage:
    """One valid entry. `source` is the repository (its tag is meaningless here)."""

    index: int
    name: str
    source: ImageReference
    target: RegistryId
    target_repository: Repository
    credential: str | None
    rule: TagRule
    referrers: ReferrerChoice | None = None  # the entry's `referrers`; None: the REFERRERS settings decide

    @property
    def label(self) -> str:
        return f"images[{self.index}] ({self.name})"


@dataclass(frozen=True)
class TrackedConfig:
    images: tuple[TrackedImage, ...]
    problems: tuple[Problem, ...]  # field paths like images[2].semver


def _validator() -> Draft202012Validator:
    return validator("tracked-images.v1.json")


def read_config_text(location: str, settings: Settings | None = None) -> str:
    """The configuration's text from a path (relative to the app root) or an https URL (a blob)."""
    try:
        return read_config("TRACKED_IMAGES", location, settings)
    except ConfigUnavailable as err:
        raise TrackedConfigError(str(err)) from None


def load_config_text(settings: Settings) -> str:
    """TRACKED_IMAGES' text, or TrackedConfigError naming the setting that stops the refresh."""
    blocked = settings.problems_for(REFRESH)
    if blocked:
        raise TrackedConfigError("settings stop the refresh: " + "; ".join(str(p) for p in blocked))
    return read_config_text(settings.tracked_images, settings)


def parse_config(text: str, settings: Settings) -> TrackedConfig:
    """Valid entries and one problem per bad field; raises only when nothing can be read at all."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise TrackedConfigError(f"tracked images: not JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise TrackedConfigError('tracked images: expected an object with an "images" list')
    problems: list[Problem] = []
    for error in _validator().iter_errors({k: v for k, v in doc.items() if k != "images"} | {"images": []}):
        problems.append(Problem(field_path(error.absolute_path), error.message[:200]))
    images = []
    for index, entry in enumerate(doc["images"]):
        found = parse_entry(index, entry, settings)
        if isinstance(found, TrackedImage):
            images.append(found)
        else:
            problems.extend(found)
    return TrackedConfig(tuple(images), tuple(problems))


def parse_entry(index: int, entry: Any, settings: Settings) -> TrackedImage | list[Problem]:
    prefix = f"images[{index}]"
    errors = list(_validator().iter_errors({"images": [entry]}))
    problems = [Problem(_entry_field(prefix, list(e.absolute_path)[2:]), e.message[:200]) for e in errors]
    if problems:
        return problems
    source = _source(entry["source"], prefix, problems)
    target = _target(entry.get("target"), settings, prefix, problems)
    rule = _rule(entry, prefix, problems)
    if "targetRepository" in entry and "targetPrefix" in entry:
        problems.append(Problem(f"{prefix}.targetPrefix", "give targetRepository or targetPrefix, not both"))
    target_repository: Repository | None = None
    if source is not None:
        named = entry.get("targetRepository") or f"{entry.get('targetPrefix', '')}{source.default_target_repository}"
        try:
            target_repository = parse_repository(named)
        except InvalidReference as err:
            field = "targetRepository" if "targetRepository" in entry else "targetPrefix"
            problems.append(Problem(f"{prefix}.{field}", err.reason))
    if source is not None:
        refusal = policy.source_refusal(source.registry, None, settings)
        if refusal:
            problems.append(Problem(f"{prefix}.source", refusal))
    if target is not None:
        refusal = policy.target_refusal(target, settings)
        if refusal:
            problems.append(Problem(f"{prefix}.target", refusal))
    referrers = parse_choice(entry["referrers"], f"{prefix}.referrers") if "referrers" in entry else None
    if isinstance(referrers, Problem):
        problems.append(referrers)
    credential = entry.get("credential")
    if credential and source is not None:
        refusal = policy.credential_refusal(credential, source.registry, settings)
        if refusal:
            problems.append(Problem(f"{prefix}.credential", refusal))
    if problems or source is None or target is None or rule is None or target_repository is None \
            or isinstance(referrers, Problem):
        return problems
    return TrackedImage(index, entry.get("name") or str(source).rsplit(":", 1)[0], source, target,
                        target_repository, credential, rule, referrers)


def _entry_field(prefix: str, parts: list[str | int]) -> str:
    return f"{prefix}.{field_path(parts)}" if parts else prefix


def _source(text: str, prefix: str, problems: list[Problem]) -> ImageReference | None:
    last = text.rsplit("/", 1)[-1]
    if "@" in text or ":" in last:
        problems.append(Problem(f"{prefix}.source", "name a repository without tag or digest; list tags in 'tags'"))
        return None
    try:
        return parse_reference(text)
    except InvalidReference as err:
        problems.append(Problem(f"{prefix}.source", err.reason))
        return None


def _target(text: str | None, settings: Settings, prefix: str, problems: list[Problem]) -> RegistryId | None:
    value = text or settings.target_registry
    if not value:
        problems.append(Problem(f"{prefix}.target", "is required when the TARGET_REGISTRY setting is not set"))
        return None
    try:
        return parse_registry_id(value)
    except (ValueError, KeyError):  # parse_registry_id raises KeyError for some partial ids
        problems.append(Problem(f"{prefix}.target", "must be a registry resource id (/subscriptions/<id>/"
                                                    "resourceGroups/<rg>/providers/Microsoft.ContainerRegistry/"
                                                    "registries/<name>)"))
        return None


def _patterns(entry: dict[str, Any], name: str, prefix: str, problems: list[Problem]) -> tuple[re.Pattern[str], ...]:
    out = []
    for i, text in enumerate(entry.get(name, [])):
        try:
            out.append(compile_pattern(text))
        except UnsafePattern as err:
            problems.append(Problem(f"{prefix}.{name}[{i}]", str(err)))
    return tuple(out)


def _rule(entry: dict[str, Any], prefix: str, problems: list[Problem]) -> TagRule | None:
    semver = entry.get("semver")
    if semver is not None and (problem := range_problem(semver)) is not None:
        problems.append(Problem(f"{prefix}.semver", problem))
    rule = TagRule(tuple(entry.get("tags", [])), _patterns(entry, "include", prefix, problems),
                   _patterns(entry, "exclude", prefix, problems), semver, bool(entry.get("prereleases", False)),
                   entry.get("newest"))
    if not entry.get("tags") and not any(k in entry for k in ("include", "semver", "newest")):
        problems.append(Problem(f"{prefix}.tags", "name tags, or select them with include, semver or newest"))
    return rule


def range_problem(text: Any) -> str | None:
    """Why `text` is not a version range, read strictly; None when it is one.

    Strict on purpose: node-semver's loose reading drops what it cannot parse, so `>=1.25 <<2` or
    `>=1.25 foo` would silently become `>=1.25` (every later major version) and `01.2.3` would become
    `1.2.3`. A typo must be reported, never widen what is imported. An empty range would select every
    version: `*` says that on purpose."""
    import nodesemver

    if not isinstance(text, str):
        return "is not a version range: must be a string"
    if not text.strip():
        return "is empty: write a range such as '>=1.25 <2' or '^1.27', or '*' for every version"
    try:
        nodesemver.make_range(text, loose=False)
    except (ValueError, TypeError) as err:
        return (f"is not a version range: {err} (npm range syntax, read strictly: comparators such as '>=1.25', "
                "'<2', '^1.27', '~1.27', '1.x', '1.2 - 1.4', joined by spaces, alternatives by '||')")
    return None


# --- tag selection -------------------------------------------------------------------------------------
def tag_version(tag: str, *, prereleases: bool) -> SemVer | None:
    """The tag as a version (loose: `1.27` is 1.27.0), or None; a suffix makes it a pre-release."""
    import nodesemver

    try:
        version = nodesemver.make_semver(tag, loose=True)
    except (ValueError, TypeError):
        return None
    if version.prerelease and not prereleases:
        return None
    return version


def select_tags(rule: TagRule, listed: Iterable[str] | None) -> list[str]:
    """The tags an entry tracks: its explicit tags plus the listed tags its patterns and range select,
    trimmed to the newest N by version; `exclude` wins over everything. Order: explicit first, then newest."""
    chosen = list(rule.tags)
    if rule.needs_listing:
        chosen += [t for t in _by_rule(rule, listed or []) if t not in chosen]
    return [t for t in chosen if not any(p.fullmatch(t) for p in rule.exclude)]


def _by_rule(rule: TagRule, listed: Iterable[str]) -> list[str]:
    import nodesemver

    candidates = [t for t in listed if not any(p.fullmatch(t) for p in rule.exclude)]
    if rule.include:
        candidates = [t for t in candidates if any(p.fullmatch(t) for p in rule.include)]
    if rule.semver is None and rule.newest is None:
        return candidates
    versioned = [(t, v) for t in candidates if (v := tag_version(t, prereleases=rule.prereleases)) is not None]
    if rule.semver is not None:
        versioned = [(t, v) for t, v in versioned
                     if nodesemver.satisfies(v.version, rule.semver, loose=False,
                                             include_prerelease=rule.prereleases)]
    def newest_first(a: tuple[str, SemVer], b: tuple[str, SemVer]) -> int:
        return int(b[1].compare(a[1])) or (a[0] > b[0]) - (a[0] < b[0])

    versioned.sort(key=cmp_to_key(newest_first))
    if rule.newest is not None:
        versioned = versioned[:rule.newest]
    return [t for t, _ in versioned]
