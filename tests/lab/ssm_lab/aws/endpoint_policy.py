"""VPC endpoint policies on the path they guard: which endpoint a node's request goes through, and whether that
endpoint's policy lets the request's principal do the action on the resource.

An endpoint policy is a resource-based policy on the endpoint (AWS's PrivateLink guide): its statements name a
Principal, and it is evaluated in addition to the caller's identity-based policies; a request is refused when no
statement of the endpoint's policy allows it or one denies it. AWS says which policy refused, as
``User: ARN is not authorized to perform: ACTION on resource: RESOURCE because no VPC endpoint policy allows the
ACTION action`` (``... with an explicit deny in a VPC endpoint policy``).

Which endpoint a request goes through, as AWS routes it:

* an interface endpoint of the service with private DNS, in a VPC with DNS support on: the service's public name
  resolves to the endpoint inside the VPC (a NAT route does not matter then);
* for S3, first a gateway endpoint on the node's route table (its prefix-list route is more specific than any
  0.0.0.0/0 route), else an S3 interface endpoint with private DNS;
* otherwise the request leaves through the NAT or internet gateway and no endpoint policy applies.

The statements are judged with the collection's one IAM evaluator (``iamsim.engine``): a statement counts when its
principal element covers the caller (``principal_covers``, its rules in the collection), then its Action, Resource and Condition are matched as IAM does, with
the request context ``aws:PrincipalAccount``, ``aws:PrincipalArn``, ``aws:userid``, ``aws:username`` (IAM users),
``aws:PrincipalOrgID`` (when the account belongs to an organization the lab knows), ``aws:SourceVpce`` and
``aws:SourceVpc``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from moto.backends import get_backend

from . import iamsim

VPCE_POLICY = "VPC endpoint"


@dataclass(frozen=True)
class Principal:
    """Who makes a request: ``arn`` as AWS names it in a denial (an assumed-role session, a user), ``principal_arn``
    the IAM role or user (``aws:PrincipalArn``), ``account``, ``user_id`` (``aws:userid``) and, for IAM users,
    ``username``."""

    arn: str
    principal_arn: str
    account: str
    user_id: str
    username: str = ""


@dataclass(frozen=True)
class Denial:
    """An endpoint policy refused ``action`` on ``resource`` to ``principal``."""

    endpoint_id: str
    principal: Principal
    action: str
    resource: str
    decision: str

    def message(self, quoted: bool = False) -> str:
        resource = f'"{self.resource}"' if quoted else self.resource
        if self.decision == iamsim.EXPLICIT_DENY:
            why = f"with an explicit deny in a {VPCE_POLICY} policy"
        else:
            why = f"because no {VPCE_POLICY} policy allows the {self.action} action"
        return f"User: {self.principal.arn} is not authorized to perform: {self.action} on resource: {resource} {why}"


# An unsigned request (AWS's own agent buckets are public): only a Principal "*" covers it.
ANONYMOUS = Principal(arn="anonymous", principal_arn="", account="", user_id="anonymous")


def role_session(role_arn: str, role_id: str, session_name: str) -> Principal:
    """The principal of a role's session (an instance's credentials: the session is named after the instance)."""
    partition, account = role_arn.split(":")[1], role_arn.split(":")[4]
    name = role_arn.rsplit("/", 1)[-1]
    return Principal(arn=f"arn:{partition}:sts::{account}:assumed-role/{name}/{session_name}",
                     principal_arn=role_arn, account=account, user_id=f"{role_id}:{session_name}")


def from_caller(caller_arn: str, user_id: str) -> Principal:
    """The principal behind an STS caller identity (GetCallerIdentity's Arn and UserId)."""
    parts = caller_arn.split(":", 5)
    partition, account, resource = parts[1], parts[4], parts[5]
    if resource.startswith("assumed-role/"):
        role = resource.split("/")[1]
        return Principal(caller_arn, f"arn:{partition}:iam::{account}:role/{role}", account, user_id)
    username = resource.rsplit("/", 1)[-1] if resource.startswith("user/") else ""
    return Principal(caller_arn, caller_arn, account, user_id, username)


# --- which endpoint -----------------------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _live(ec2: Any, vpc_id: str, service_name: str) -> list[Any]:
    return [e for e in (getattr(ec2, "vpc_end_points", None) or {}).values()
            if e.vpc_id == vpc_id and e.service_name == service_name
            and str(getattr(e, "state", "")).lower() not in ("deleted", "deleting")]


def _is_interface(endpoint: Any) -> bool:
    return str(getattr(endpoint, "vpc_endpoint_type", None) or "Gateway").lower() == "interface"


def steering_endpoint(ec2: Any, vpc: Any, route_table_id: str | None, region: str, service: str) -> Any:
    """The endpoint the VPC's requests to ``service`` go through (see the module's docstring), or None."""
    service_name = f"com.amazonaws.{region}.{service}"
    endpoints = _live(ec2, vpc.id, service_name)
    if service == "s3":
        for endpoint in endpoints:
            if not _is_interface(endpoint) and route_table_id in (endpoint.route_table_ids or []):
                return endpoint
    if not _truthy(getattr(vpc, "enable_dns_support", False)):
        return None
    private = [e for e in endpoints if _is_interface(e) and _truthy(getattr(e, "private_dns_enabled", False))]
    return min(private, key=lambda e: e.id) if private else None


# --- the decision -------------------------------------------------------------------------------------------


def _names(value: str, who: Principal) -> bool:
    """An AWS principal of a policy (account id, account root, role, user, assumed-role session) covers ``who``."""
    if who is ANONYMOUS:
        return False
    if value in (who.account, who.principal_arn, who.arn):
        return True
    parts = value.split(":", 5)
    return len(parts) == 6 and parts[2] == "iam" and parts[4] == who.account and parts[5] == "root"


def principal_covers(statement: dict, who: Principal) -> bool:
    """The statement's principal element covers ``who`` (the collection's rules, with the AWS principals judged here)."""
    return iamsim.engine.principal_covers(statement, (), lambda value: _names(value, who))


def _org_id(account: str) -> str:
    """The organization of ``account`` if the lab's Organizations knows one ("" otherwise)."""
    try:
        backends = get_backend("organizations")[account]
        for partition in ("aws", "global"):
            org = getattr(backends[partition], "org", None) if partition in backends else None
            if org is not None:
                return org.id
    except Exception:  # noqa: BLE001 - no organization in the lab
        return ""
    return ""


def context(who: Principal, endpoint: Any) -> dict:
    found = {"aws:SourceVpce": endpoint.id, "aws:SourceVpc": endpoint.vpc_id}
    if who is ANONYMOUS:
        return found
    found.update({"aws:PrincipalAccount": who.account, "aws:PrincipalArn": who.principal_arn,
                  "aws:userid": who.user_id})
    if who.username:
        found["aws:username"] = who.username
    org = _org_id(who.account)
    if org:
        found["aws:PrincipalOrgID"] = org
    return found


@functools.lru_cache(maxsize=256)
def _statements(document: str) -> tuple:
    """The statements of a stored policy document, parsed once (a node's status is judged every second)."""
    return tuple(iamsim.statements(document))


def decide(document: Any, who: Principal, action: str, resource: str, request: dict | None = None) -> str:
    """ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY of one endpoint policy for one request (``request``: its context)."""
    parsed = _statements(document) if isinstance(document, str) else iamsim.statements(document)
    covering = [s for s in parsed if principal_covers(s, who)]
    policies = [("VpcEndpointPolicy", "vpc-endpoint", {"Statement": covering})]
    return iamsim.engine.evaluate(policies, action, resource, request or {}, set())[0]


def refusals(endpoint: Any, who: Principal, requests: list[tuple[str, str]]) -> list[Denial]:
    """The endpoint's refusals of the (action, resource) requests of ``who``, in their order (empty: all allowed)."""
    request = context(who, endpoint)
    found = []
    for action, resource in requests:
        decision = decide(endpoint.policy_document, who, action, resource, request)
        if decision != iamsim.ALLOWED:
            found.append(Denial(endpoint.id, who, action, resource, decision))
    return found


def check(endpoint: Any, who: Principal, action: str, resource: str) -> Denial | None:
    """The endpoint's refusal of the request, or None when its policy allows it."""
    found = refusals(endpoint, who, [(action, resource)])
    return found[0] if found else None
