# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The collection's one IAM policy evaluator: what IAM would decide for identity-based policies and one request.

bastionless.ssm.ssm_preflight judges an instance role's policies and trust policy with it (conditions counted as
satisfied, since it knows no request context), and the offline lab under ``tests/lab`` loads this file from the
repository for its ``SimulatePrincipalPolicy`` and its judgement of a node's role, so that the rules below are
written once. Standard library only, no import of the rest of the collection: the lab loads it by its path.

The rules, as AWS documents its evaluation logic:

* an explicit Deny wins, else an Allow allows, else the decision is an implicit deny;
* Action/NotAction match case-insensitively, Resource/NotResource case-sensitively, with the wildcards ``*`` and
  ``?``; a request without a resource (``None``: sts:AssumeRole against a trust policy) matches on its action;
* the condition operators String*, Arn*, Bool, Null and Numeric*, with ``IfExists`` and the ``ForAnyValue:`` /
  ``ForAllValues:`` qualifiers; condition keys match case-insensitively; a key the context lacks fails a positive
  operator and passes a negated one and ``IfExists``; other operators (Date*, IpAddress, ...) never hold;
* policy variables ``${key}`` take their value from the context and match it literally; ``${*}``, ``${?}`` and
  ``${$}`` are the literal characters; a variable without a value matches nothing;
* strict mode raises UnsupportedPolicy for what is not implemented (other operators, Principal elements, variables
  with a default value, a Version other than 2012-10-17) rather than guess;
* ``assume_conditions`` counts every Condition as satisfied, for a caller that knows no request context.

Nothing here calls AWS; documents may be dicts, JSON text or URL-encoded JSON text (as the IAM API returns them).
"""

import functools
import json
import re
from urllib.parse import unquote

ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY = "allowed", "explicitDeny", "implicitDeny"

# A policy variable (${key}, ${*}, ...) or any one character.
_TOKEN = re.compile(r"\$\{([^}]*)\}|.", re.DOTALL)
_VARIABLE_NAMES = re.compile(r"\$\{([^}]*)\}")
_STATEMENT_ELEMENTS = frozenset({"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"})
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
            "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike",
            "NumericNotEquals": "NumericEquals"}
_OPERATORS = frozenset({"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike", "Bool",
                        "Null", "NumericEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan",
                        "NumericGreaterThanEquals"}) | frozenset(_NEGATED)
_QUALIFIERS = ("ForAnyValue", "ForAllValues")


class UnsupportedPolicy(ValueError):
    """A policy uses what this evaluator does not implement (strict mode: raised rather than guessed)."""


def as_list(value):
    """A policy element's value as a list (IAM takes a single value or a list)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _loads(document):
    """The JSON value of a document (a dict, JSON text or URL-encoded JSON text); ValueError when unreadable."""
    if isinstance(document, (bytes, bytearray)):
        document = document.decode("utf-8", "replace")
    if isinstance(document, str):
        try:
            return json.loads(document)
        except ValueError:
            return json.loads(unquote(document))
    return document


def policy_document(document):
    """A policy document as a dict, from a dict, JSON text or URL-encoded JSON text ({} when unreadable)."""
    try:
        document = _loads(document)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def statements(document):
    """The statements of a policy document (a dict, JSON text or URL-encoded JSON text) that are objects."""
    return [s for s in as_list(policy_document(document).get("Statement")) if isinstance(s, dict)]


def context_values(context):
    """A request context (condition key to a value or a list of values) as IAM compares it: keys in lower case,
    values as lists of strings."""
    return {str(key).lower(): [str(v) for v in as_list(value)] for key, value in (context or {}).items()}


# --- matching --------------------------------------------------------------------------------------------


def _expand(value, context, wildcards):
    """``value`` with its policy variables replaced from the context, as a regular expression when ``wildcards``
    (``*`` and ``?`` of the policy are wildcards, a variable's value and the escapes ``${*}``, ``${?}``, ``${$}``
    match literally), else as a plain string. None when a variable has no value (the value then matches nothing)."""
    out = []
    for match in _TOKEN.finditer(value):
        key, char = match.group(1), match.group(0)
        if key is None:
            if wildcards:
                out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
            else:
                out.append(char)
            continue
        if key in ("*", "?", "$"):
            found = key
        else:
            values = context.get(key.lower())
            if not values:
                return None
            found = str(values[0])
        out.append(re.escape(found) if wildcards else found)
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern, ignore_case):
    """A pattern without policy variables, compiled once (the same managed policies are judged again and again)."""
    return re.compile(_expand(pattern, {}, wildcards=True), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _glob(pattern, value, ignore_case, context):
    if "${" not in pattern:
        return _compiled(pattern, ignore_case).fullmatch(value) is not None
    regex = _expand(pattern, context, wildcards=True)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return regex is not None and re.fullmatch(regex, value, flags) is not None


def _matches(patterns, value, ignore_case, context):
    return any(isinstance(pattern, str) and _glob(pattern, value, ignore_case, context)
               for pattern in as_list(patterns))


def covers(statement, action, resource, context=None):
    """Action/NotAction and Resource/NotResource of ``statement`` match the request (its Condition aside).
    ``resource`` None is a request against a document without Resource elements (a trust policy)."""
    context = context or {}
    if "Action" in statement:
        ok = _matches(statement["Action"], action, True, context)
    elif "NotAction" in statement:
        ok = not _matches(statement["NotAction"], action, True, context)
    else:
        return False
    if not ok or resource is None:
        return ok
    if "Resource" in statement:
        return _matches(statement["Resource"], resource, False, context)
    if "NotResource" in statement:
        return not _matches(statement["NotResource"], resource, False, context)
    return False


# --- conditions ------------------------------------------------------------------------------------------


def _compare(base, expected, actual, context):
    if base in ("StringLike", "ArnLike", "ArnEquals"):
        return _glob(expected, actual, False, context)
    literal = _expand(expected, context, wildcards=False)
    if literal is None:
        return False
    if base == "StringEquals":
        return literal == actual
    if base in ("StringEqualsIgnoreCase", "Bool"):
        return literal.lower() == actual.lower()
    if base.startswith("Numeric"):
        try:
            left, right = float(actual), float(literal)
        except ValueError:
            return False
        return {"NumericEquals": left == right, "NumericLessThan": left < right,
                "NumericLessThanEquals": left <= right, "NumericGreaterThan": left > right,
                "NumericGreaterThanEquals": left >= right}.get(base, False)
    return False


def _condition_holds(operator, key, expected, context, missing):
    qualifier = ""
    if ":" in operator and operator.split(":", 1)[0] in _QUALIFIERS:
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator[: -len("IfExists")] if if_exists else operator
    actual = context.get(key.lower())
    if not actual:
        missing.add(key)  # every condition key the request did not give, as IAM lists them
    if operator == "Null":
        wanted = as_list(expected)
        want_absent = str(wanted[0]).lower() == "true" if wanted else True
        return (not actual) == want_absent
    expected_values = [str(v) for v in as_list(expected)]
    negated = operator in _NEGATED
    base = _NEGATED.get(operator, operator)
    if not actual:
        return if_exists or negated or qualifier == "ForAllValues"

    def one(value):
        return any(_compare(base, e, value, context) for e in expected_values)

    if qualifier == "ForAllValues":
        result = all(one(v) for v in actual)
    else:
        result = any(one(v) for v in actual)
    return not result if negated else result


def conditions_hold(statement, context, missing=None):
    """Every Condition of ``statement`` holds for the context (as context_values gives it). Every condition is
    evaluated, so that ``missing`` (a set) receives every key the context lacks."""
    missing = set() if missing is None else missing
    condition = statement.get("Condition") or {}
    if not isinstance(condition, dict):
        return False
    holds = True
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        for key, expected in block.items():
            holds = _condition_holds(operator, key, expected, context, missing) and holds
    return holds


# --- decisions -------------------------------------------------------------------------------------------


def check_supported(document):
    """Raise UnsupportedPolicy when a parsed policy document uses what this evaluator does not implement."""
    if not isinstance(document, dict):
        raise UnsupportedPolicy("a policy document must be a JSON object, not %s" % type(document).__name__)
    if document.get("Version") != "2012-10-17":
        raise UnsupportedPolicy("policy variables need Version 2012-10-17, not %r" % document.get("Version"))
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, dict):
            raise UnsupportedPolicy("a statement must be a JSON object, not %r" % (statement,))
        extra = set(statement) - _STATEMENT_ELEMENTS
        if extra:
            raise UnsupportedPolicy("statement elements %s (identity policies only)" % sorted(extra))
        if str(statement.get("Effect")) not in ("Allow", "Deny"):
            raise UnsupportedPolicy("Effect %r" % statement.get("Effect"))
        if ("Action" in statement) == ("NotAction" in statement):
            raise UnsupportedPolicy("a statement needs exactly one of Action and NotAction")
        if ("Resource" in statement) == ("NotResource" in statement):
            raise UnsupportedPolicy("a statement needs exactly one of Resource and NotResource")
        for operator in statement.get("Condition") or {}:
            base = operator.split(":", 1)[-1]
            base = base[: -len("IfExists")] if base.endswith("IfExists") else base
            if base not in _OPERATORS:
                raise UnsupportedPolicy("condition operator %s" % operator)
        for variable in _VARIABLE_NAMES.findall(json.dumps(statement)):
            if "," in variable or "'" in variable:
                raise UnsupportedPolicy("policy variable with a default value: ${%s}" % variable)


def evaluate(policies, action, resource, context=None, missing=None, assume_conditions=False):
    """(decision, [(policy id, policy type)] of the policies whose statements decided it) for ``policies``, a list
    of (policy id, policy type, document), and one request. ``context``: condition key to a value or a list of
    values; ``missing`` (a set) receives the condition keys the context lacks, of the statements that match the
    action and resource; ``assume_conditions``: every Condition counts as satisfied."""
    values = context_values(context)
    missing = set() if missing is None else missing
    allows, denies = [], []
    for policy_id, policy_type, document in policies:
        for statement in statements(document):
            if not covers(statement, action, resource, values):
                continue
            if not assume_conditions and not conditions_hold(statement, values, missing):
                continue
            effect = str(statement.get("Effect", "")).lower()
            if effect == "deny":
                denies.append((policy_id, policy_type))
            elif effect == "allow":
                allows.append((policy_id, policy_type))
    if denies:
        return EXPLICIT_DENY, denies
    if allows:
        return ALLOWED, allows
    return IMPLICIT_DENY, []


def decide(documents, action, resource, context=None, strict=True, assume_conditions=False):
    """ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY for identity policies (documents as dicts, JSON text or URL-encoded
    JSON text) and one request: its action, resource (None for a trust policy's sts:AssumeRole) and context.
    ``strict`` raises UnsupportedPolicy for what is not implemented (an unreadable document included), for callers
    that must not be judged by a guess; not strict, an unreadable document allows nothing."""
    if strict:
        parsed = []
        for document in documents:
            try:
                parsed.append(_loads(document))
            except ValueError as error:
                raise UnsupportedPolicy("a policy document that is not JSON: %s" % error)
        for document in parsed:
            check_supported(document)
    else:
        parsed = [policy_document(document) for document in documents]
    policies = [("policy%d" % n, "IAM Policy", document) for n, document in enumerate(parsed)]
    return evaluate(policies, action, resource, context, assume_conditions=assume_conditions)[0]


def allowed(documents, action, resource):
    """Not strict, conditions counted as satisfied: some Allow covers the request and no Deny does."""
    return decide(documents, action, resource, strict=False, assume_conditions=True) == ALLOWED


# --- trust policies --------------------------------------------------------------------------------------


def _principal_names(principal):
    """(wildcard, lower-case service names, AWS principals) of a Principal or NotPrincipal element."""
    if principal == "*":
        return True, set(), []
    if not isinstance(principal, dict):
        return False, set(), []
    aws = [str(a) for a in as_list(principal.get("AWS"))]
    return "*" in aws, {str(s).lower() for s in as_list(principal.get("Service"))}, aws


def principal_covers(statement, services=(), names_aws=None):
    """The statement's Principal is "*", {"AWS": "*"}, names one of ``services`` (service principals compare
    case-insensitively) or, with ``names_aws`` (a predicate of an AWS principal: an account id, an account's root, a
    role, a user, a session), an AWS principal it accepts; NotPrincipal the other way round."""
    services = {str(s).lower() for s in services}

    def named(element):
        wildcard, listed, aws = _principal_names(element)
        return wildcard or bool(listed & services) or (names_aws is not None and any(names_aws(a) for a in aws))

    if "Principal" in statement:
        return named(statement["Principal"])
    if "NotPrincipal" in statement:
        return not named(statement["NotPrincipal"])
    return False


def trusts(trust_document, services):
    """The trust policy lets one of ``services`` sts:AssumeRole (an explicit Deny wins, conditions counted as
    satisfied)."""
    covering = [s for s in statements(trust_document) if principal_covers(s, services)]
    return allowed([{"Statement": covering}], "sts:AssumeRole", None)
