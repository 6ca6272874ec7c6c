"""IAM ``SimulatePrincipalPolicy`` for the lab: moto does not implement it (its server answers 500).

The lab does not enforce IAM on API calls, but a tool may ask IAM what it *would* decide, as
``aws iam simulate-principal-policy`` does. This evaluates the identity-based policies of a user (its own, its
groups') or a role (inline and attached managed policies, default versions) and their permissions boundary, for each
action and resource asked, with the context entries given:

* an explicit Deny wins, else an Allow allows, else implicitDeny; the boundary must allow as well;
* Action/NotAction (case-insensitive wildcards), Resource/NotResource (case-sensitive wildcards);
* Condition operators String*, Arn*, Bool, Null and Numeric*, with ``IfExists`` and the ``ForAnyValue:`` /
  ``ForAllValues:`` set qualifiers; keys match case-insensitively; a key missing from the context fails a
  positive operator and passes a negated one and ``IfExists``; every condition key the context lacks is listed in
  ``MissingContextValues`` (of the statements that match the action and resource);
* policy variables ``${key}`` from the context (plus ``aws:username``, ``aws:userid`` and ``aws:PrincipalArn``).

Other operators (Date*, IpAddress, ...) never hold. As on AWS, the caller needs ``iam:SimulatePrincipalPolicy`` on the
principal: a caller that is an IAM user or role whose own policies do not allow it gets ``AccessDenied``. The lab's
default credentials (a caller IAM does not know) act as the account's administrator.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from typing import Any
from xml.sax.saxutils import escape

from moto.backends import get_backend

ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY = "allowed", "explicitDeny", "implicitDeny"
_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
# A policy variable (${key}, ${*}, ...) or any one character.
_TOKEN = re.compile(r"\$\{([^}]*)\}|.", re.DOTALL)
_VARIABLE_NAMES = re.compile(r"\$\{([^}]*)\}")


class SimulationError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --- request ---------------------------------------------------------------------------------------------


def parse_request(body: bytes) -> dict:
    """The query-protocol form of SimulatePrincipalPolicy as a dict."""
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def members(prefix: str) -> list[str]:
        keys = sorted((k for k in form if re.fullmatch(re.escape(prefix) + r"\.member\.\d+", k)),
                      key=lambda k: int(k.rsplit(".", 1)[1]))
        return [form[k][0] for k in keys]

    context: dict[str, list[str]] = {}
    index = 1
    while f"ContextEntries.member.{index}.ContextKeyName" in form:
        name = form[f"ContextEntries.member.{index}.ContextKeyName"][0]
        context[name.lower()] = members(f"ContextEntries.member.{index}.ContextKeyValues")
        index += 1
    return {
        "principal": (form.get("PolicySourceArn") or [""])[0],
        "actions": members("ActionNames"),
        "resources": members("ResourceArns") or ["*"],
        "context": context,
    }


# --- policies of a principal -----------------------------------------------------------------------------


def _iam(account_id: str):
    return get_backend("iam")[account_id]["global"]


def _document(policy: Any) -> Any:
    """The default version's document of a moto managed policy."""
    versions = list(getattr(policy, "versions", None) or [])
    for version in versions:
        if getattr(version, "is_default", False):
            return version.document
    return versions[0].document if versions else getattr(policy, "document", "{}")


def _managed_type(arn: str) -> str:
    return "aws-managed" if ":iam::aws:policy/" in arn else "user-managed"


def principal_policies(account_id: str, principal_arn: str) -> tuple[list[tuple[str, str, Any]], Any, dict]:
    """([(policy id, policy type, document)], boundary document or None, facts for policy variables).

    Raises SimulationError NoSuchEntity (404) when IAM does not know the principal."""
    iam = _iam(account_id)
    resource = principal_arn.split(":", 5)[-1] if principal_arn.count(":") >= 5 else ""
    kind, _, rest = resource.partition("/")
    name = rest.rsplit("/", 1)[-1]
    policies: list[tuple[str, str, Any]] = []
    boundary_arn = None
    if kind == "user":
        user = next((u for u in iam.users.values() if u.name == name), None)
        if user is None:
            raise SimulationError(404, "NoSuchEntity", f"The user with name {name} cannot be found.")
        policies += [(n, "user", d) for n, d in user.policies.items()]
        policies += [(p.name, _managed_type(a), _document(p)) for a, p in user.managed_policies.items()]
        for group in iam.groups.values():
            if user in group.users:
                policies += [(n, "group", d) for n, d in group.policies.items()]
                policies += [(p.name, _managed_type(a), _document(p)) for a, p in group.managed_policies.items()]
        boundary_arn = getattr(user, "permissions_boundary_arn", None) or None
        facts = {"aws:username": [user.name], "aws:userid": [getattr(user, "id", user.name)],
                 "aws:principalarn": [user.arn]}
    elif kind == "role":
        role = next((r for r in iam.roles.values() if r.name == name), None)
        if role is None:
            raise SimulationError(404, "NoSuchEntity", f"The role with name {name} cannot be found.")
        policies += [(n, "role", d) for n, d in role.policies.items()]
        policies += [(p.name, _managed_type(a), _document(p)) for a, p in role.managed_policies.items()]
        boundary_arn = role.permissions_boundary_arn or None
        facts = {"aws:userid": [getattr(role, "id", role.name)], "aws:principalarn": [role.arn]}
    elif kind == "group":
        group = next((g for g in iam.groups.values() if g.name == name), None)
        if group is None:
            raise SimulationError(404, "NoSuchEntity", f"The group with name {name} cannot be found.")
        policies += [(n, "group", d) for n, d in group.policies.items()]
        policies += [(p.name, _managed_type(a), _document(p)) for a, p in group.managed_policies.items()]
        facts = {}
    else:
        raise SimulationError(400, "InvalidInput", f"PolicySourceArn {principal_arn} is not a user, group or role ARN.")
    boundary = None
    if boundary_arn:
        policy = iam.managed_policies.get(boundary_arn)
        boundary = _document(policy) if policy is not None else {"Statement": []}
    return policies, boundary, facts


# --- evaluation ------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_policy(document: Any) -> Any:
    """A policy document given as a dict, JSON text or URL-encoded JSON text (as moto keeps some), as a dict."""
    if isinstance(document, (bytes, bytearray)):
        document = document.decode()
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            document = json.loads(urllib.parse.unquote(document))
    return document


def statements(document: Any) -> list[dict]:
    """The statements of a policy document (a dict, JSON text or URL-encoded JSON text)."""
    document = parse_policy(document)
    if not isinstance(document, dict):
        return []
    return [s for s in _as_list(document.get("Statement")) if isinstance(s, dict)]


def _expand(value: str, context: dict, wildcards: bool) -> str | None:
    """``value`` with its policy variables replaced from the context, as a regular expression when ``wildcards``
    (``*`` and ``?`` of the policy are wildcards, a variable's value and the escapes ``${*}``, ``${?}``, ``${$}``
    match literally), else as a plain string. None when a variable has no value (the value then matches nothing)."""
    out = []
    for match in _TOKEN.finditer(value):
        key, char = match.group(1), match.group(0)
        if key is None:
            out.append((".*" if char == "*" else "." if char == "?" else re.escape(char)) if wildcards else char)
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
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """A pattern without policy variables, compiled once: the lab's reachability judges every node's role often."""
    return re.compile(_expand(pattern, {}, wildcards=True), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _glob(pattern: str, value: str, ignore_case: bool, context: dict) -> bool:
    if "${" not in pattern:
        return _compiled(pattern, ignore_case).fullmatch(value) is not None
    regex = _expand(pattern, context, wildcards=True)
    return regex is not None and re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _matches(patterns: Any, value: str, ignore_case: bool, context: dict) -> bool:
    return any(isinstance(pattern, str) and _glob(pattern, value, ignore_case, context)
               for pattern in _as_list(patterns))


def _covers(statement: dict, action: str, resource: str | None, context: dict) -> bool:
    """Action/NotAction (case-insensitive) and Resource/NotResource (case-sensitive) match the request; a request
    without a resource (None: sts:AssumeRole against a trust policy, which has no Resource element) matches on its
    action alone."""
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


def _compare(base: str, expected: str, actual: str, context: dict) -> bool:
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


_NEGATED = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
            "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike",
            "NumericNotEquals": "NumericEquals"}
_OPERATORS = {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike", "Bool", "Null",
              "NumericEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan",
              "NumericGreaterThanEquals", *_NEGATED}


def _condition_holds(operator: str, key: str, expected: Any, context: dict, missing: set) -> bool:
    qualifier = ""
    if ":" in operator and operator.split(":", 1)[0] in ("ForAnyValue", "ForAllValues"):
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator[: -len("IfExists")] if if_exists else operator
    actual = context.get(key.lower())
    if not actual:
        missing.add(key)  # every condition key the request did not give, as IAM lists them
    if operator == "Null":
        want_absent = str(_as_list(expected)[0]).lower() == "true" if _as_list(expected) else True
        return (not actual) == want_absent
    expected_values = [str(v) for v in _as_list(expected)]
    negated = operator in _NEGATED
    base = _NEGATED.get(operator, operator)
    if not actual:
        return if_exists or negated or qualifier == "ForAllValues"

    def one(value: str) -> bool:
        return any(_compare(base, e, value, context) for e in expected_values)

    if qualifier == "ForAllValues":
        result = all(one(v) for v in actual)
    else:
        result = any(one(v) for v in actual)
    return not result if negated else result


def _conditions_hold(statement: dict, context: dict, missing: set) -> bool:
    condition = statement.get("Condition") or {}
    if not isinstance(condition, dict):
        return False
    holds = True
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        for key, expected in block.items():
            # Evaluate every condition so that every missing key is reported, as IAM does.
            holds = _condition_holds(operator, key, expected, context, missing) and holds
    return holds


def _decide(policies: list[tuple[str, str, Any]], action: str, resource: str | None, context: dict, missing: set,
            assume_conditions: bool = False):
    """(decision, [(policy id, type)] of the statements that decided it). ``assume_conditions``: every Condition
    counts as satisfied."""
    allows, denies = [], []
    for policy_id, policy_type, document in policies:
        for statement in statements(document):
            if not _covers(statement, action, resource, context):
                continue
            if not assume_conditions and not _conditions_hold(statement, context, missing):
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


class UnsupportedPolicy(ValueError):
    """A policy uses what this evaluator does not implement (strict mode: raised rather than guessed)."""


_STATEMENT_ELEMENTS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}


def _check_supported(document: dict) -> None:
    if document.get("Version") != "2012-10-17":
        raise UnsupportedPolicy("policy variables need Version 2012-10-17")
    for statement in _as_list(document.get("Statement")):
        extra = set(statement) - _STATEMENT_ELEMENTS
        if extra:
            raise UnsupportedPolicy(f"statement elements {sorted(extra)} (identity policies only)")
        if str(statement.get("Effect")) not in ("Allow", "Deny"):
            raise UnsupportedPolicy(f"Effect {statement.get('Effect')!r}")
        if ("Action" in statement) == ("NotAction" in statement):
            raise UnsupportedPolicy("a statement needs exactly one of Action and NotAction")
        if ("Resource" in statement) == ("NotResource" in statement):
            raise UnsupportedPolicy("a statement needs exactly one of Resource and NotResource")
        for operator in statement.get("Condition") or {}:
            base = operator.split(":", 1)[-1]
            base = base[: -len("IfExists")] if base.endswith("IfExists") else base
            if base not in _OPERATORS:
                raise UnsupportedPolicy(f"condition operator {operator}")
        for variable in _VARIABLE_NAMES.findall(json.dumps(statement)):
            if "," in variable or "'" in variable:
                raise UnsupportedPolicy(f"policy variable with a default value: ${{{variable}}}")



def decide(documents: list, action: str, resource: str | None, context: dict | None = None, strict: bool = True,
           assume_conditions: bool = False) -> str:
    """ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY for identity policies (documents as dicts, JSON text or URL-encoded
    JSON text) and one request: its action, resource and context (condition key to a value or a list of values).
    The same evaluation as SimulatePrincipalPolicy, without a principal, and the lab's only one: the role tests
    judge policies with it (``strict`` raises UnsupportedPolicy for what it does not implement, for tests that must
    not be judged by a guess), and the lab's reachability judges a node's role with it (not strict, since it reads
    whatever policies a user stored; ``resource`` None for a trust policy's sts:AssumeRole; ``assume_conditions``
    because it knows no request context, so every Condition counts as satisfied)."""
    parsed = [parse_policy(d) for d in documents]
    if strict:
        for document in parsed:
            _check_supported(document)
    values = {str(key).lower(): [str(v) for v in (value if isinstance(value, list) else [value])]
              for key, value in (context or {}).items()}
    return _decide([(f"policy{n}", "IAM Policy", d) for n, d in enumerate(parsed)], action, resource, values, set(),
                   assume_conditions)[0]


def evaluate(account_id: str, request: dict) -> list[dict]:
    """One result per action and resource: EvalActionName, EvalResourceName, EvalDecision, MatchedStatements,
    MissingContextValues, PermissionsBoundaryDecisionDetail."""
    policies, boundary, facts = principal_policies(account_id, request["principal"])
    context = {**facts, **request["context"]}
    results = []
    for action in request["actions"]:
        for resource in request["resources"]:
            missing: set = set()
            decision, matched = _decide(policies, action, resource, context, missing)
            result = {"EvalActionName": action, "EvalResourceName": resource, "EvalDecision": decision,
                      "MatchedStatements": matched, "MissingContextValues": sorted(missing)}
            if boundary is not None:
                in_boundary = _decide([("PermissionsBoundary", "permissions-boundary", boundary)], action, resource,
                                      context, set())[0] == ALLOWED
                result["AllowedByPermissionsBoundary"] = in_boundary
                if decision == ALLOWED and not in_boundary:
                    result["EvalDecision"] = IMPLICIT_DENY
            results.append(result)
    return results


def authorize_caller(account_id: str, caller_arn: str, principal_arn: str) -> None:
    """AccessDenied unless the caller may iam:SimulatePrincipalPolicy on the principal. A caller IAM does not know
    (the lab's default credentials) acts as the administrator."""
    caller = caller_arn
    if ":assumed-role/" in caller_arn:
        partition_account = caller_arn.split(":")[1], caller_arn.split(":")[4]
        role = caller_arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        caller = f"arn:{partition_account[0]}:iam::{partition_account[1]}:role/{role}"
    elif ":sts::" in caller_arn and ":user/" in caller_arn:
        return  # moto's identity for credentials IAM does not know
    try:
        policies, boundary, facts = principal_policies(account_id, caller)
    except SimulationError:
        return
    context = dict(facts)
    decision, _ = _decide(policies, "iam:SimulatePrincipalPolicy", principal_arn, context, set())
    if decision == ALLOWED and boundary is not None:
        decision = _decide([("b", "b", boundary)], "iam:SimulatePrincipalPolicy", principal_arn, context, set())[0]
    if decision != ALLOWED:
        raise SimulationError(
            403, "AccessDenied",
            f"User: {caller_arn} is not authorized to perform: iam:SimulatePrincipalPolicy on resource: {principal_arn}"
            + (" with an explicit deny in an identity-based policy" if decision == EXPLICIT_DENY else
               " because no identity-based policy allows the iam:SimulatePrincipalPolicy action"))


# --- response --------------------------------------------------------------------------------------------


def response_xml(results: list[dict]) -> str:
    members = []
    for result in results:
        matched = "".join(
            f"<member><SourcePolicyId>{escape(policy_id)}</SourcePolicyId>"
            f"<SourcePolicyType>{escape(policy_type)}</SourcePolicyType></member>"
            for policy_id, policy_type in result["MatchedStatements"])
        missing = "".join(f"<member>{escape(key)}</member>" for key in result["MissingContextValues"])
        boundary = ""
        if "AllowedByPermissionsBoundary" in result:
            boundary = ("<PermissionsBoundaryDecisionDetail><AllowedByPermissionsBoundary>"
                        f"{str(result['AllowedByPermissionsBoundary']).lower()}</AllowedByPermissionsBoundary>"
                        "</PermissionsBoundaryDecisionDetail>")
        members.append(
            f"<member><EvalActionName>{escape(result['EvalActionName'])}</EvalActionName>"
            f"<EvalResourceName>{escape(result['EvalResourceName'])}</EvalResourceName>"
            f"<EvalDecision>{result['EvalDecision']}</EvalDecision>"
            f"<MatchedStatements>{matched}</MatchedStatements>"
            f"<MissingContextValues>{missing}</MissingContextValues>{boundary}</member>")
    return (f'<SimulatePrincipalPolicyResponse xmlns="{_NS}"><SimulatePrincipalPolicyResult>'
            f"<IsTruncated>false</IsTruncated><EvaluationResults>{''.join(members)}</EvaluationResults>"
            "</SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>lab-simulate</RequestId>"
            "</ResponseMetadata></SimulatePrincipalPolicyResponse>")


def error_xml(error: SimulationError) -> str:
    kind = "Sender" if error.status < 500 else "Receiver"
    return (f'<ErrorResponse xmlns="{_NS}"><Error><Type>{kind}</Type><Code>{error.code}</Code>'
            f"<Message>{escape(error.message)}</Message></Error><RequestId>lab-simulate</RequestId></ErrorResponse>")


def handle(account_id: str, caller_arn: str, body: bytes) -> tuple[int, str]:
    """(HTTP status, XML body) for one SimulatePrincipalPolicy request."""
    try:
        request = parse_request(body)
        if not request["principal"] or not request["actions"]:
            raise SimulationError(400, "ValidationError", "PolicySourceArn and ActionNames are required.")
        authorize_caller(account_id, caller_arn, request["principal"])
        return 200, response_xml(evaluate(account_id, request))
    except SimulationError as error:
        return error.status, error_xml(error)
