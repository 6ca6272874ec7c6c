"""IAM ``SimulatePrincipalPolicy`` for the lab: moto does not implement it (its server answers 500).

The lab does not enforce IAM on API calls, but a tool may ask IAM what it *would* decide, as
``aws iam simulate-principal-policy`` does. This reads the identity-based policies of a user (its own, its
groups') or a role (inline and attached managed policies, default versions) and their permissions boundary from
moto, and judges each action and resource asked, with the context entries given, with the collection's one IAM
evaluator, ``plugins/module_utils/_iam_policy.py`` (loaded from the repository, as ``codec.py`` loads the data
channel's codec; its docstring lists the rules): an explicit Deny wins, else an Allow allows, else implicitDeny;
the boundary must allow as well; every condition key the context lacks is listed in ``MissingContextValues`` (of
the statements that match the action and resource); the policy variables ``aws:username``, ``aws:userid``,
``aws:PrincipalArn`` and ``aws:PrincipalTag/KEY`` come from the principal.

``decide``, ``statements``, ``parse_policy``, ``UnsupportedPolicy`` and the decisions are the engine's, named here
for the lab's callers (its reachability, the role tests). As on AWS, the caller needs
``iam:SimulatePrincipalPolicy`` on the principal: a caller that is an IAM user or role whose own policies do not
allow it gets ``AccessDenied``. The lab's default credentials (a caller IAM does not know) act as the account's
administrator.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any
from xml.sax.saxutils import escape

from moto.backends import get_backend

from ..collection import load_collection_module

engine = load_collection_module("_iam_policy.py", "bastionless_iam_policy", "module_utils")
ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY = engine.ALLOWED, engine.EXPLICIT_DENY, engine.IMPLICIT_DENY
UnsupportedPolicy = engine.UnsupportedPolicy
decide = engine.decide
statements = engine.statements
parse_policy = engine.policy_document
_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


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


def _principal_tags(iam, entity, kind: str) -> dict:
    """The tags of an IAM user or role as the facts ``aws:PrincipalTag/KEY`` (for conditions and policy variables
    such as ``${aws:PrincipalTag/SSMSessionRunAs}``)."""
    try:
        listed = iam.list_user_tags(entity.name) if kind == "user" else entity.tags
        if isinstance(listed, dict) and "Tags" in listed:
            listed = listed["Tags"]
        if isinstance(listed, dict):  # older moto: {key: {"Key": ..., "Value": ...}} or {key: value}
            listed = [v if isinstance(v, dict) else {"Key": k, "Value": v} for k, v in listed.items()]
        return {f"aws:principaltag/{t['Key']}".lower(): [t["Value"]] for t in listed or []}
    except Exception:  # noqa: BLE001 - no tags to read
        return {}


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
                 "aws:principalarn": [user.arn], **_principal_tags(iam, user, "user")}
    elif kind == "role":
        role = next((r for r in iam.roles.values() if r.name == name), None)
        if role is None:
            raise SimulationError(404, "NoSuchEntity", f"The role with name {name} cannot be found.")
        policies += [(n, "role", d) for n, d in role.policies.items()]
        policies += [(p.name, _managed_type(a), _document(p)) for a, p in role.managed_policies.items()]
        boundary_arn = role.permissions_boundary_arn or None
        facts = {"aws:userid": [getattr(role, "id", role.name)], "aws:principalarn": [role.arn],
                 **_principal_tags(iam, role, "role")}
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


def evaluate(account_id: str, request: dict) -> list[dict]:
    """One result per action and resource: EvalActionName, EvalResourceName, EvalDecision, MatchedStatements,
    MissingContextValues, PermissionsBoundaryDecisionDetail."""
    policies, boundary, facts = principal_policies(account_id, request["principal"])
    context = {**facts, **request["context"]}
    results = []
    for action in request["actions"]:
        for resource in request["resources"]:
            missing: set = set()
            decision, matched = engine.evaluate(policies, action, resource, context, missing)
            result = {"EvalActionName": action, "EvalResourceName": resource, "EvalDecision": decision,
                      "MatchedStatements": matched, "MissingContextValues": sorted(missing)}
            if boundary is not None:
                in_boundary = engine.evaluate([("PermissionsBoundary", "permissions-boundary", boundary)], action, resource,
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
    decision, _ = engine.evaluate(policies, "iam:SimulatePrincipalPolicy", principal_arn, context, set())
    if decision == ALLOWED and boundary is not None:
        decision = engine.evaluate([("b", "b", boundary)], "iam:SimulatePrincipalPolicy", principal_arn, context, set())[0]
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
