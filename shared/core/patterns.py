"""Operator regular expressions matched against names a registry chose (tracked-images and replication rules).

The operator writes the pattern; the registry writes the tags it is matched against, so it picks the input
that makes a pattern slow. Python's `re` backtracks and has no timeout, so the cost of a match is bounded
in two ways, one for each side:
- the names: only valid tags (the distribution spec's `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) reach a
  pattern; anything else a registry lists is dropped before matching, and counted (`valid_tags`);
- the patterns: those whose backtracking is exponential in the input are refused when the configuration
  loads, naming the construct (a variable quantifier inside another, an alternation repeated more than
  once, a backreference). These are the shapes behind catastrophic backtracking; a 128-character tag makes
  every other pattern polynomial (measured: `\\d+\\.\\d+\\.\\d+-.*` takes under a microsecond, `.*.*.*x` under
  a millisecond on the worst tag). Possessive quantifiers (`++`, `*+`) and atomic groups (`(?>...)`) never
  backtrack, so nesting inside them is allowed: `v(\\d+\\.)+\\d+` is refused, `v(?:\\d+\\.)++\\d+` matches the
  same tags and is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The parser is the only way to see a pattern's structure. typeshed types the same modules only under their
# deprecated 3.10 names (sre_constants, sre_parse), hence the ignores.
from re import _constants as sre  # type: ignore[attr-defined]  # private module, untyped in typeshed
from re import _parser as sre_parse  # type: ignore[attr-defined]  # likewise
from typing import Any

from shared.core.reference import is_tag

MAX_PATTERN_LENGTH = 1000


class UnsafePattern(ValueError):
    """A pattern that is not a regular expression, or one whose matching cost a registry could blow up."""


def compile_pattern(text: str) -> re.Pattern[str]:
    """The compiled pattern, or UnsafePattern with a sentence saying what is wrong and how to write it."""
    if not isinstance(text, str):
        raise UnsafePattern("is not a string")
    if len(text) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"is {len(text)} characters long, the limit is {MAX_PATTERN_LENGTH}")
    try:
        compiled = re.compile(text)
        tree = sre_parse.parse(text)
    except (re.error, RecursionError, OverflowError) as err:
        raise UnsafePattern(f"is not a regular expression: {err}") from None
    problem = _exponential(tree.data, repeated=False)
    if problem:
        raise UnsafePattern(f"{problem}: a registry could list tags that make matching it take exponential "
                            "time; make the inner part possessive (++, *+) or atomic ((?>...)), or simplify it")
    return compiled


MAX_SMALL_REPEAT = 3  # `(\.[0-9]+){0,2}`: a body repeated this often at most costs a small power, not 2^n


def _many(high: int) -> bool:
    return high > MAX_SMALL_REPEAT


def _variable(low: int, high: int) -> bool:
    return high > 1 and low != high


def _exponential(items: Iterable[tuple[Any, Any]], *, repeated: bool) -> str:
    """What makes the pattern backtrack exponentially, or ''. `repeated`: inside a quantifier that can
    match its body more than MAX_SMALL_REPEAT times."""
    for op, av in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, body = av
            if repeated and _variable(low, high):
                return "has a quantifier inside another quantifier"
            found = _exponential(body, repeated=repeated or _many(high))
        elif op is sre.POSSESSIVE_REPEAT:
            found = _exponential(av[2], repeated=False)
        elif op is sre.ATOMIC_GROUP:
            found = _exponential(av, repeated=False)
        elif op is sre.BRANCH:
            if repeated:
                return "repeats an alternation (a|b) with a quantifier"
            found = next((f for branch in av[1] if (f := _exponential(branch, repeated=False))), "")
        elif op is sre.SUBPATTERN:
            found = _exponential(av[3], repeated=repeated)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            found = _exponential(av[1], repeated=repeated)
        elif op is sre.GROUPREF_EXISTS:
            found = _exponential(av[1], repeated=repeated) or (_exponential(av[2], repeated=repeated)
                                                                if av[2] else "")
        elif op is sre.GROUPREF:
            found = "uses a backreference"
        else:
            found = ""
        if found:
            return found
    return ""


def valid_tags(listed: Iterable[object]) -> tuple[list[str], int]:
    """The listed names that are valid tags (the only ones any pattern sees), and how many were dropped."""
    kept, dropped = [], 0
    for name in listed:
        if isinstance(name, str) and is_tag(name):
            kept.append(name)
        else:
            dropped += 1
    return kept, dropped
