"""A small evaluator of IAM identity policies, for tests: does this set of policies allow this request?

The lab (moto) does not enforce IAM, so the tests of the operator_access role ask this instead. It follows the
IAM policy evaluation logic for identity-based policies of one account: an explicit Deny wins, else an Allow
allows, else the request is implicitly denied. No permissions boundaries, SCPs, session policies or resource
policies.

What it understands, and nothing more (anything else raises UnsupportedPolicy rather than guessing):

- Effect Allow/Deny; Action and NotAction; Resource and NotResource; wildcards ``*`` and ``?`` (actions match
  case-insensitively, resources case-sensitively).
- Policy variables ``${aws:username}``, ``${aws:userid}`` and any other key of the request context, and the
  literal escapes ``${*}``, ``${?}``, ``${$}``. A variable the context lacks makes that value match nothing.
- Condition operators StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringLike, StringNotLike and Bool,
  each also with IfExists. Condition key names match case-insensitively. Blocks, keys and the operators in a
  Condition are ANDed; the values listed for one key are ORed. A key missing from the context fails the
  condition, except under IfExists (passes) and the negated operators (pass).
- Single-valued context keys only: ForAnyValue/ForAllValues are not supported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

ALLOW, EXPLICIT_DENY, IMPLICIT_DENY = "Allow", "ExplicitDeny", "ImplicitDeny"

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_ESCAPES = {"*": "*", "?": "?", "$": "$"}
_STRING_OPERATORS = {"StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringLike", "StringNotLike"}
_NEGATED = {"StringNotEquals", "StringNotLike"}


class UnsupportedPolicy(ValueError):
    """The policy uses something this evaluator does not implement."""


class _Missing(Exception):
    """A policy variable has no value in the request context."""


@dataclass
class Request:
    action: str
    resource: str
    context: dict = field(default_factory=dict)

    def key(self, name: str):
        """The context value of a condition key (names match case-insensitively), or None when absent."""
        for key, value in self.context.items():
            if key.lower() == name.lower():
                return value
        return None


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _substitute(text: str, request: Request, wildcards: bool) -> str:
    """Replace the policy variables in ``text``. With ``wildcards`` the result is a glob pattern, so the value of
    a variable is matched literally (its own * and ? escaped) while the escapes ${*} ${?} stay literal too."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in _ESCAPES:
            found = _ESCAPES[name]
        else:
            if "," in name or "'" in name:
                raise UnsupportedPolicy(f"policy variable with a default value: ${{{name}}}")
            found = request.key(name)
            if found is None:
                raise _Missing(name)
            if isinstance(found, list):
                raise UnsupportedPolicy(f"multi-valued context key in a policy variable: {name}")
            found = str(found)
        return re.sub(r"([*?])", r"\\\1", found) if wildcards else found

    return _VARIABLE.sub(value, text)


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcard match: * any run of characters (also : and /), ? one character; \\* and \\? are literal (only
    produced by _substitute)."""
    parts, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        i += 1
    return re.fullmatch("".join(parts), value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _matches_any(patterns, value: str, request: Request, ignore_case: bool) -> bool:
    for pattern in _as_list(patterns):
        try:
            if _glob(_substitute(pattern, request, wildcards=True), value, ignore_case):
                return True
        except _Missing:
            continue
    return False


def _string_test(operator: str, wanted: list, actual: str, request: Request) -> bool:
    """One string operator (without IfExists and negation) against one context value: any wanted value matches."""
    for raw in wanted:
        try:
            if operator in ("StringLike", "StringNotLike"):
                if _glob(_substitute(str(raw), request, wildcards=True), actual):
                    return True
            else:
                expected = _substitute(str(raw), request, wildcards=False)
                if operator == "StringEqualsIgnoreCase":
                    if expected.lower() == actual.lower():
                        return True
                elif expected == actual:
                    return True
        except _Missing:
            continue
    return False


def _condition_holds(operator: str, key: str, wanted, request: Request) -> bool:
    if operator.startswith(("ForAnyValue:", "ForAllValues:")):
        raise UnsupportedPolicy(f"set operator {operator}")
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    if base not in _STRING_OPERATORS and base != "Bool":
        raise UnsupportedPolicy(f"condition operator {operator}")
    actual = request.key(key)
    if actual is None:
        return if_exists or base in _NEGATED
    if isinstance(actual, list):
        raise UnsupportedPolicy(f"multi-valued context key {key} (needs ForAnyValue/ForAllValues)")
    wanted = _as_list(wanted)
    if base == "Bool":
        actual = str(actual).lower()
        return any(str(value).lower() == actual for value in wanted)
    if base in _NEGATED:
        positive = "StringEquals" if base == "StringNotEquals" else "StringLike"
        return not _string_test(positive, wanted, str(actual), request)
    return _string_test(base, wanted, str(actual), request)


def statement_matches(statement: dict, request: Request) -> bool:
    """Whether one statement applies to the request (its Effect aside)."""
    known = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
    if set(statement) - known:
        raise UnsupportedPolicy(f"statement elements {sorted(set(statement) - known)} (identity policies only)")
    if ("Action" in statement) == ("NotAction" in statement):
        raise UnsupportedPolicy("a statement needs exactly one of Action and NotAction")
    if ("Resource" in statement) == ("NotResource" in statement):
        raise UnsupportedPolicy("a statement needs exactly one of Resource and NotResource")

    if "Action" in statement:
        if not _matches_any(statement["Action"], request.action, request, ignore_case=True):
            return False
    elif _matches_any(statement["NotAction"], request.action, request, ignore_case=True):
        return False

    if "Resource" in statement:
        if not _matches_any(statement["Resource"], request.resource, request, ignore_case=False):
            return False
    elif _matches_any(statement["NotResource"], request.resource, request, ignore_case=False):
        return False

    for operator, keys in (statement.get("Condition") or {}).items():
        for key, wanted in keys.items():
            if not _condition_holds(operator, key, wanted, request):
                return False
    return True


def evaluate(policies, action: str, resource: str, context: dict | None = None) -> str:
    """ALLOW, EXPLICIT_DENY or IMPLICIT_DENY for a request against identity policies (dicts or JSON strings)."""
    request = Request(action, resource, dict(context or {}))
    allowed = False
    for policy in policies:
        document = json.loads(policy) if isinstance(policy, str) else policy
        if document.get("Version") != "2012-10-17":
            raise UnsupportedPolicy("policy variables need Version 2012-10-17")
        for statement in _as_list(document["Statement"]):
            if not statement_matches(statement, request):
                continue
            if statement["Effect"] == "Deny":
                return EXPLICIT_DENY
            if statement["Effect"] != "Allow":
                raise UnsupportedPolicy(f"Effect {statement['Effect']!r}")
            allowed = True
    return ALLOW if allowed else IMPLICIT_DENY
