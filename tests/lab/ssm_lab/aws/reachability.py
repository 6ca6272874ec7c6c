"""Does a lab EC2 node meet Session Manager's prerequisites? Judged from moto's state at this moment.

The control plane runs moto in-process, so this module reads moto's backend objects directly and applies
the rules the real service applies:

* instance -- it exists and is running;
* iam (prerequisite 2, credentials) -- an instance profile whose role trusts ec2.amazonaws.com and whose
  policies (minus any permissions boundary) allow the agent's core actions; or, with no profile at all,
  Default Host Management Configuration (IMDSv2 required and a DHMC role trusting ssm.amazonaws.com);
* network (prerequisite 3) -- a path to the Systems Manager endpoints: a NAT gateway, an internet
  gateway plus a public IP, or the three interface endpoints with private DNS;
* s3 -- a path to S3 (NAT, internet gateway, S3 gateway endpoint or S3 interface endpoint);
* endpoint policies -- where an endpoint carries the node's requests (``endpoint_policy`` says which), its policy
  must let the node's role session do them: the core actions for ssm, ssmmessages and ec2messages
  (``ENDPOINT_POLICY_DENIES``), and, through ``endpoint_denial``, the node's own S3 and CloudWatch Logs writes.

The agent itself (installed, version, running) is judged by the caller. Nothing here raises on an
unexpected moto object: such a failure becomes a ``LAB_INTERNAL`` problem (set ``SSM_LAB_STRICT=1`` to
let it raise instead, which the lab's own tests do).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from moto.backends import get_backend

from . import endpoint_policy, iamsim

log = logging.getLogger(__name__)

CORE_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:GetMessages",
)
SSM_ENDPOINT_SERVICES = ("ssm", "ssmmessages", "ec2messages")
EC2_PRINCIPALS = frozenset({"ec2.amazonaws.com", "ec2.amazonaws.com.cn"})
SSM_PRINCIPALS = frozenset({"ssm.amazonaws.com"})
ANYWHERE = "0.0.0.0/0"
HTTPS = 443
_GONE_STATES = frozenset({"terminated", "shutting-down"})


@dataclass(frozen=True)
class Problem:
    prerequisite: str  # "iam" | "network" | "s3" | "instance"
    code: str  # stable UPPER_SNAKE code, e.g. "NO_INSTANCE_PROFILE"
    message: str  # one sentence a human can act on, naming the resource ids involved


# --- public interface -----------------------------------------------------------------------------------


def node_problems(account_id: str, region: str, instance_id: str, dhmc_role: str | None = None) -> list[Problem]:
    """Problems that keep an EC2 instance from being Online in SSM (credentials and network path; the agent
    itself is judged by the caller). Empty list = prerequisites 2 and 3 hold."""
    node, problems = _load_node(account_id, region, instance_id)
    if node is None:
        return problems
    credentials = _guarded("iam", instance_id, _credential_problems, node, dhmc_role)
    problems += credentials
    problems += _guarded("network", instance_id, _network_problems, node)
    if not credentials:
        problems += _guarded("network", instance_id, _endpoint_policy_problems, node, dhmc_role)
    return _dedupe(problems)


def endpoint_denial(account_id: str, region: str, instance_id: str, service: str, action: str, resource: str,
                    who: endpoint_policy.Principal | None = None,
                    dhmc_role: str | None = None) -> endpoint_policy.Denial | None:
    """The refusal of the VPC endpoint that carries the instance's request to ``service`` (``s3``, ``logs``, ...)
    when its policy does not let ``who`` (default: the instance's role session) do ``action`` on ``resource``;
    None when it does, or when no endpoint carries the request (it leaves through NAT or an internet gateway)."""
    node, _problems = _load_node(account_id, region, instance_id)
    if node is None:
        return None
    endpoint = endpoint_policy.steering_endpoint(node.ec2, node.vpc, getattr(node.route_table, "id", None),
                                                 node.region, service)
    if endpoint is None:
        return None
    who = who or _node_principal(node, dhmc_role)
    if who is None:
        return None
    return endpoint_policy.check(endpoint, who, action, resource)


def node_role_arn(account_id: str, region: str, instance_id: str, dhmc_role: str | None = None) -> str | None:
    """The role whose session the instance's agent signs with (its instance profile's, or the Default Host
    Management role), or None without one."""
    node, _problems = _load_node(account_id, region, instance_id)
    who = _node_principal(node, dhmc_role) if node is not None else None
    return who.principal_arn if who is not None else None


def s3_path_problems(account_id: str, region: str, instance_id: str) -> list[Problem]:
    """Problems that keep the instance from reaching S3 (empty = it can)."""
    node, problems = _load_node(account_id, region, instance_id)
    if node is None:
        return problems
    problems += _guarded("s3", instance_id, _s3_problems, node)
    return _dedupe(problems)


# --- plumbing -------------------------------------------------------------------------------------------


def _guarded(prerequisite: str, instance_id: str, check: Callable[..., list[Problem]], *args: Any) -> list[Problem]:
    """Run one prerequisite check; an unexpected moto shape becomes a LAB_INTERNAL problem, not an exception."""
    try:
        return check(*args)
    except Exception as exc:  # noqa: BLE001 - the whole point is never to raise into the control plane
        if os.environ.get("SSM_LAB_STRICT") == "1":
            raise
        log.warning("reachability: %s check of %s failed", prerequisite, instance_id, exc_info=True)
        return [
            Problem(
                prerequisite,
                "LAB_INTERNAL",
                f"The lab could not evaluate the {prerequisite} prerequisite of {instance_id} "
                f"({type(exc).__name__}: {exc}).",
            )
        ]


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _truthy(value: Any) -> bool:
    """moto stores some flags as bools and some as the strings the API sent ("true"/"false")."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _partition(region: str) -> str:
    try:
        from moto.utilities.utils import get_partition

        return get_partition(region)
    except Exception:  # noqa: BLE001 - older moto: the IAM backend answered to "global"
        return "global"


class _Node:
    """One instance plus the moto backends and network facts the checks share (computed once each)."""

    def __init__(self, account_id: str, region: str, ec2: Any, instance: Any):
        self.account_id = account_id
        self.region = region
        self.partition = _partition(region)
        self.ec2 = ec2
        self.instance = instance
        self.id: str = instance.id

    @functools.cached_property
    def iam(self) -> Any:
        return get_backend("iam")[self.account_id][self.partition]

    @functools.cached_property
    def arn(self) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account_id}:instance/{self.id}"

    @functools.cached_property
    def subnet(self) -> Any:
        return self.ec2.get_subnet(self.instance.subnet_id)

    @functools.cached_property
    def vpc(self) -> Any:
        return self.ec2.get_vpc(self.subnet.vpc_id)

    @property
    def vpc_id(self) -> str:
        return self.vpc.id

    @functools.cached_property
    def az(self) -> str | None:
        return getattr(self.subnet, "availability_zone", None) or self.instance.availability_zone

    @functools.cached_property
    def route_table(self) -> Any:
        return _route_table_of_subnet(self.ec2, self.subnet)

    @functools.cached_property
    def private_ip(self) -> str | None:
        return getattr(self.instance, "private_ip", None)

    @functools.cached_property
    def public_ip(self) -> str | None:
        return getattr(self.instance, "public_ip", None)

    @functools.cached_property
    def group_ids(self) -> frozenset[str]:
        """Security groups of the primary interface (moto keeps some only on the ENI, some only on the
        instance); none recorded means the VPC's default group, as on AWS."""
        groups = list(getattr(self.instance, "security_groups", None) or [])
        nics = getattr(self.instance, "nics", None) or {}
        if 0 in nics:
            groups += list(getattr(nics[0], "group_set", None) or [])
        ids = {getattr(g, "id", g) for g in groups if g is not None}
        if not ids:
            default = _default_security_group(self.ec2, self.vpc_id)
            if default is not None:
                ids.add(default.id)
        return frozenset(ids)


_INSTANCES: dict[int, tuple[tuple[int, int], dict]] = {}  # id(ec2 backend) -> (its size, instance id -> instance)


def _instance(ec2, instance_id: str):
    """The instance by id, from an index rebuilt when RunInstances adds a reservation (moto's own lookups scan every
    instance, which made each node's status cost O(fleet) and a fleet of 1,000 light nodes' O(fleet²))."""
    reservations = list(ec2.reservations.values())
    size = (len(reservations), sum(len(r.instances) for r in reservations))
    cached = _INSTANCES.get(id(ec2))
    if cached is None or cached[0] != size:
        cached = _INSTANCES[id(ec2)] = (size, {i.id: i for r in reservations for i in r.instances})
    return cached[1].get(instance_id)


def _load_node(account_id: str, region: str, instance_id: str) -> tuple[_Node | None, list[Problem]]:
    """The instance and its state problems; node is None when nothing further can be judged."""
    try:
        ec2 = get_backend("ec2")[account_id][region]
        instance = _instance(ec2, instance_id)
        state = None if instance is None else str(instance.state)
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("SSM_LAB_STRICT") == "1":
            raise
        log.warning("reachability: loading %s failed", instance_id, exc_info=True)
        return None, [
            Problem(
                "instance",
                "LAB_INTERNAL",
                f"The lab could not read instance {instance_id} in {account_id}/{region} "
                f"({type(exc).__name__}: {exc}).",
            )
        ]
    if instance is None:
        return None, [
            Problem(
                "instance",
                "INSTANCE_NOT_FOUND",
                f"There is no instance {instance_id} in account {account_id}, region {region}.",
            )
        ]
    if state == "running":
        return _Node(account_id, region, ec2, instance), []
    problem = Problem(
        "instance",
        "INSTANCE_NOT_RUNNING",
        f"Instance {instance_id} is {state}; start it so SSM Agent can run.",
    )
    if state in _GONE_STATES:
        return None, [problem]
    return _Node(account_id, region, ec2, instance), [problem]


# --- IAM policy evaluation ------------------------------------------------------------------------------


def _policies_allow(documents: list[Any], action: str, resource: str | None) -> bool:
    """The collection's one IAM evaluator (``iamsim.decide``) on the node's own policies: an explicit Deny wins, else
    an Allow must cover the request. Not strict (whatever a user stored is judged), and IAM conditions count as
    satisfied: the agent's request context is not modelled."""
    return iamsim.decide(documents, action, resource, strict=False, assume_conditions=True) == iamsim.ALLOWED


def _trusts(role: Any, services: frozenset[str]) -> bool:
    """The role's trust policy lets one of ``services`` call sts:AssumeRole (Deny wins; the collection's
    evaluator, conditions counted as satisfied)."""
    return iamsim.engine.trusts(role.assume_role_policy_document, services)


def _default_version_document(policy: Any) -> Any:
    versions = list(getattr(policy, "versions", None) or [])
    default_id = getattr(policy, "default_version_id", None)
    for version in versions:
        if getattr(version, "is_default", False) or version.version_id == default_id:
            return version.document
    if versions:
        return versions[0].document
    return getattr(policy, "document", None)


def _identity_documents(role: Any) -> list[Any]:
    """Inline policies plus the default version of every attached managed policy (AWS or customer), parsed once
    for the six core actions."""
    documents = list((getattr(role, "policies", None) or {}).values())
    for policy in (getattr(role, "managed_policies", None) or {}).values():
        documents.append(_default_version_document(policy))
    return [iamsim.parse_policy(document) for document in documents]


def _boundary_documents(node: _Node, role: Any) -> list[Any] | None:
    """The permissions boundary's document; None when the role has no boundary. A boundary naming a
    policy that no longer exists allows nothing."""
    arn = getattr(role, "permissions_boundary_arn", None)
    if not arn:
        return None
    policy = (getattr(node.iam, "managed_policies", None) or {}).get(arn)
    return [] if policy is None else [iamsim.parse_policy(_default_version_document(policy))]


def _action_resource(node: _Node, action: str) -> str:
    """The resource a core action is authorised against: the instance for ssm:UpdateInstanceInformation;
    ssmmessages and ec2messages have no resource-level permissions ("*")."""
    return node.arn if action.lower().startswith("ssm:") else "*"


def _missing_actions(node: _Node, role: Any) -> list[str]:
    identity = _identity_documents(role)
    boundary = _boundary_documents(node, role)
    missing = []
    for action in CORE_ACTIONS:
        resource = _action_resource(node, action)
        if not _policies_allow(identity, action, resource) or (
            boundary is not None and not _policies_allow(boundary, action, resource)
        ):
            missing.append(action)
    return missing


# --- prerequisite 2: credentials ------------------------------------------------------------------------


@dataclass(frozen=True)
class _RoleCodes:
    trust: str
    permissions: str
    principals: frozenset[str]


PROFILE_ROLE = _RoleCodes("ROLE_TRUST_POLICY", "ROLE_MISSING_PERMISSIONS", EC2_PRINCIPALS)
DHMC_ROLE = _RoleCodes("DHMC_ROLE_TRUST_POLICY", "DHMC_ROLE_MISSING_PERMISSIONS", SSM_PRINCIPALS)


def _credential_problems(node: _Node, dhmc_role: str | None) -> list[Problem]:
    """Prerequisite 2: the agent can obtain credentials allowed to register and open channels."""
    problems = []
    if str(getattr(node.instance.metadata_options, "http_endpoint", "enabled")).lower() == "disabled":
        problems.append(
            Problem(
                "iam",
                "IMDS_DISABLED",
                f"Instance {node.id} has its metadata service disabled, so SSM Agent cannot get any "
                "credentials; enable HttpEndpoint in its metadata options.",
            )
        )
    reference = _profile_reference(node)
    if reference is not None:
        return problems + _profile_problems(node, reference)
    if dhmc_role:
        return problems + _dhmc_problems(node, dhmc_role)
    return problems + [
        Problem(
            "iam",
            "NO_INSTANCE_PROFILE",
            f"Instance {node.id} has no IAM instance profile; attach one whose role has "
            "AmazonSSMManagedInstanceCore (or turn on Default Host Management Configuration).",
        )
    ]


@dataclass(frozen=True)
class _ProfileReference:
    """What EC2 remembers about the attached profile."""

    arn: str | None
    name: str | None
    profile_id: str | None


def _profile_reference(node: _Node) -> _ProfileReference | None:
    """The instance's profile: its "associated" association, else what RunInstances left on the instance."""
    association = (getattr(node.ec2, "iam_instance_profile_associations", None) or {}).get(node.id)
    if association is not None and getattr(association, "state", "associated") == "associated":
        profile = association.iam_instance_profile
        if profile is not None:
            return _ProfileReference(profile.arn, profile.name, getattr(profile, "id", None))
    attached = getattr(node.instance, "iam_instance_profile", None)
    if not attached:
        return None
    if isinstance(attached, dict):
        # moto writes {"Arn": profile arn, "Id": association id} here, so "Id" is not the profile's id.
        arn, name = attached.get("Arn"), attached.get("Name")
        return _ProfileReference(arn, name, None) if arn or name else None
    if isinstance(attached, str):
        is_arn = attached.startswith("arn:")
        return _ProfileReference(attached if is_arn else None, None if is_arn else attached, None)
    return _ProfileReference(
        getattr(attached, "arn", None), getattr(attached, "name", None), getattr(attached, "id", None)
    )


def _find_profile(node: _Node, reference: _ProfileReference) -> Any:
    """The profile as IAM has it now, or None (deleted, or deleted and re-created under a new id)."""
    for profile in (getattr(node.iam, "instance_profiles", None) or {}).values():
        same = profile.arn == reference.arn if reference.arn else profile.name == reference.name
        if same:
            return profile if reference.profile_id in (None, profile.id) else None
    return None


def _live_role(node: _Node, role: Any) -> Any:
    """The profile's role if it still exists in IAM."""
    roles = getattr(node.iam, "roles", None) or {}
    return role if role is not None and roles.get(role.id) is role else None


def _profile_problems(node: _Node, reference: _ProfileReference) -> list[Problem]:
    label = reference.arn or reference.name
    profile = _find_profile(node, reference)
    if profile is None:
        return [
            Problem(
                "iam",
                "INSTANCE_PROFILE_NOT_FOUND",
                f"Instance {node.id} is associated with instance profile {label}, which does not exist in IAM "
                "(any more); create it or associate an existing profile.",
            )
        ]
    roles = list(getattr(profile, "roles", None) or [])
    role = _live_role(node, roles[0]) if roles else None
    if role is None:
        return [
            Problem(
                "iam",
                "INSTANCE_PROFILE_HAS_NO_ROLE",
                f"Instance profile {profile.name} of instance {node.id} contains no role; add a role with "
                "AmazonSSMManagedInstanceCore to it.",
            )
        ]
    return _role_problems(node, role, PROFILE_ROLE)


def _role_problems(node: _Node, role: Any, codes: _RoleCodes) -> list[Problem]:
    """Trust and permissions of the role whose credentials the agent would use."""
    problems = []
    if not _trusts(role, codes.principals):
        principal = " or ".join(sorted(codes.principals))
        problems.append(
            Problem(
                "iam",
                codes.trust,
                f"The trust policy of role {role.name} does not allow {principal} to sts:AssumeRole, so "
                f"instance {node.id} gets no credentials from it.",
            )
        )
    missing = _missing_actions(node, role)
    if missing:
        bounded = " (after its permissions boundary)" if getattr(role, "permissions_boundary_arn", None) else ""
        problems.append(
            Problem(
                "iam",
                codes.permissions,
                f"Role {role.name}{bounded} does not allow {', '.join(missing)}; attach "
                "AmazonSSMManagedInstanceCore or grant those actions.",
            )
        )
    return problems


def _find_role(node: _Node, reference: str) -> Any:
    """A role by ARN, name, or path/name (role names are unique per account, case-insensitively)."""
    reference = reference.strip()
    roles = list((getattr(node.iam, "roles", None) or {}).values())
    if reference.startswith("arn:"):
        return next((r for r in roles if r.arn == reference), None)
    path, _, name = reference.rpartition("/")
    for role in roles:
        if role.name.lower() == name.lower() and (not path or role.path.strip("/") == path.strip("/")):
            return role
    return None


def _dhmc_problems(node: _Node, dhmc_role: str) -> list[Problem]:
    """Default Host Management Configuration: IMDSv2 required, and a role SSM may assume with the core actions."""
    problems = []
    tokens = getattr(node.instance.metadata_options, "http_tokens", "optional")
    if str(tokens).lower() != "required":
        problems.append(
            Problem(
                "iam",
                "DHMC_IMDSV2_NOT_REQUIRED",
                f"Instance {node.id} has no instance profile and does not require IMDSv2 (HttpTokens is {tokens}), "
                "so Default Host Management Configuration skips it; require IMDSv2 or attach a profile.",
            )
        )
    role = _find_role(node, dhmc_role)
    if role is None:
        problems.append(
            Problem(
                "iam",
                "DHMC_ROLE_NOT_FOUND",
                f"The Default Host Management role {dhmc_role} does not exist in account {node.account_id}; "
                "create it with AmazonSSMManagedEC2InstanceDefaultPolicy.",
            )
        )
        return problems
    return problems + _role_problems(node, role, DHMC_ROLE)


# --- endpoint policies ----------------------------------------------------------------------------------


def _node_principal(node: _Node, dhmc_role: str | None) -> endpoint_policy.Principal | None:
    """The role session the agent's requests are signed with (named after the instance), or None without one."""
    role = None
    reference = _profile_reference(node)
    if reference is not None:
        profile = _find_profile(node, reference)
        roles = list(getattr(profile, "roles", None) or []) if profile is not None else []
        role = _live_role(node, roles[0]) if roles else None
    elif dhmc_role:
        role = _find_role(node, dhmc_role)
    if role is None:
        return None
    return endpoint_policy.role_session(role.arn, role.id, node.id)


def _endpoint_policy_problems(node: _Node, dhmc_role: str | None) -> list[Problem]:
    """The core actions an interface endpoint carrying them refuses to the node's role session, one problem per
    endpoint with AWS's message for the first refusal."""
    who = _node_principal(node, dhmc_role)
    if who is None:
        return []
    table_id = getattr(node.route_table, "id", None)
    problems = []
    for service in SSM_ENDPOINT_SERVICES:
        endpoint = endpoint_policy.steering_endpoint(node.ec2, node.vpc, table_id, node.region, service)
        if endpoint is None:
            continue
        actions = [a for a in CORE_ACTIONS if a.split(":", 1)[0] == service]
        denials = endpoint_policy.refusals(endpoint, who, [(a, _action_resource(node, a)) for a in actions])
        if not denials:
            continue
        refused = ", ".join(d.action for d in denials)
        problems.append(
            Problem(
                "network",
                "ENDPOINT_POLICY_DENIES",
                f"The policy of interface endpoint {endpoint.id} ({service}) refuses {refused} to instance "
                f"{node.id}: {denials[0].message()}; let the instance role's principal use it (the vpc_endpoints "
                "role's default policy admits the account's own principals).",
            )
        )
    return problems


# --- network facts --------------------------------------------------------------------------------------


def _route_table_of_subnet(ec2: Any, subnet: Any) -> Any:
    """The subnet's explicitly associated route table, else its VPC's main route table (None if neither)."""
    main = None
    for table in ec2.route_tables.values():
        if table.vpc_id != subnet.vpc_id:
            continue
        for association in table.associations:
            if association.get("SubnetId") == subnet.id:
                return table
            if association.get("Main"):
                main = table
    return main


def _subnet_or_none(ec2: Any, subnet_id: str | None) -> Any:
    """A subnet by id, None if it does not exist (moto raises InvalidSubnetIdError)."""
    subnets = [s for zone in (getattr(ec2, "subnets", None) or {}).values() for s in zone.values()]
    return next((s for s in subnets if s.id == subnet_id), None)


def _default_route(table: Any) -> Any:
    if table is None:
        return None
    return next((r for r in table.routes if getattr(r, "destination_cidr_block", None) == ANYWHERE), None)


def _attached_igw(ec2: Any, route: Any, vpc_id: str) -> Any:
    """The route's target if it is an existing internet gateway attached to ``vpc_id``."""
    gateway = getattr(route, "gateway", None)
    gateway_id = str(getattr(gateway, "id", ""))
    if not gateway_id.startswith("igw-"):
        return None
    igw = (getattr(ec2, "internet_gateways", None) or {}).get(gateway_id)
    attached_vpc = getattr(igw, "vpc", None)
    return igw if igw is gateway and getattr(attached_vpc, "id", None) == vpc_id else None


def _describe_target(route: Any) -> str:
    for name in ("nat_gateway", "gateway", "instance", "interface", "transit_gateway", "vpc_pcx", "egress_only_igw"):
        target = getattr(route, name, None)
        if target is not None:
            return str(getattr(target, "id", target))
    return getattr(route, "vpc_endpoint_id", None) or "nothing (blackhole)"


def _default_security_group(ec2: Any, vpc_id: str) -> Any:
    return next((g for g in ec2.groups.get(vpc_id, {}).values() if g.name == "default"), None)


def _rule_sources(rule: Any) -> tuple[list[str], list[str]]:
    """(IPv4 CIDRs, source group ids) of an ingress rule: moto 5.2 keeps one ``ip_range``/``source_group``
    dict per rule, older moto ``ip_ranges``/``source_groups`` lists."""
    ranges = _as_list(getattr(rule, "ip_range", None)) + _as_list(getattr(rule, "ip_ranges", None))
    groups = _as_list(getattr(rule, "source_group", None)) + _as_list(getattr(rule, "source_groups", None))
    cidrs = [r.get("CidrIp") if isinstance(r, dict) else r for r in ranges]
    group_ids = [g.get("GroupId") if isinstance(g, dict) else getattr(g, "id", g) for g in groups]
    return [c for c in cidrs if c], [g for g in group_ids if g]


def _rule_allows_https(rule: Any) -> bool:
    protocol = str(getattr(rule, "ip_protocol", "")).lower()
    if protocol in ("-1", "all"):
        return True
    if protocol not in ("tcp", "6"):
        return False
    low, high = getattr(rule, "from_port", None), getattr(rule, "to_port", None)
    if low is None or high is None:
        return False
    return int(low) <= HTTPS <= int(high)


def _cidr_contains(cidr: str, ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _groups_admit_https(node: _Node, group_ids: Iterable[str]) -> bool:
    """Some ingress rule of these groups admits TCP 443 from the instance (its IP or one of its groups)."""
    for group_id in group_ids:
        group = node.ec2.get_security_group_from_id(group_id)
        for rule in getattr(group, "ingress_rules", None) or []:
            if not _rule_allows_https(rule):
                continue
            cidrs, sources = _rule_sources(rule)
            if any(_cidr_contains(c, node.private_ip) for c in cidrs) or node.group_ids & set(sources):
                return True
    return False


# --- network paths --------------------------------------------------------------------------------------


@dataclass
class _Path:
    """One way out of the instance: ok, whether anyone set it up at all, and what is wrong with it."""

    ok: bool
    attempted: bool
    problems: list[Problem]


def _internet_path(node: _Node, prerequisite: str = "network") -> _Path:
    """The 0.0.0.0/0 route of the instance's route table leads to the internet (NAT or IGW + public IP)."""
    table = node.route_table
    route = _default_route(table)
    table_id = getattr(table, "id", "(none)")
    if route is None:
        return _Path(False, False, [_no_route(node, prerequisite, f"route table {table_id} has no {ANYWHERE} route")])
    if getattr(route, "nat_gateway", None) is not None:
        return _nat_path(node, route.nat_gateway, prerequisite)
    if _attached_igw(node.ec2, route, node.vpc_id) is not None:
        if node.public_ip:
            return _Path(True, True, [])
        return _Path(
            False,
            True,
            [
                Problem(
                    prerequisite,
                    "IGW_WITHOUT_PUBLIC_IP",
                    f"Subnet {node.subnet.id} of instance {node.id} routes {ANYWHERE} to internet gateway "
                    f"{route.gateway.id}, but the instance has no public IP; give it one (or an Elastic IP) "
                    "or route through a NAT gateway.",
                )
            ],
        )
    target = _describe_target(route)
    reason = (
        f"the {ANYWHERE} route of route table {table_id} targets {target}, which is not an internet "
        f"gateway attached to {node.vpc_id} or a NAT gateway"
    )
    return _Path(False, True, [_no_route(node, prerequisite, reason)])


def _no_route(node: _Node, prerequisite: str, reason: str) -> Problem:
    return Problem(
        prerequisite,
        "NO_ROUTE_TO_INTERNET",
        f"Instance {node.id} in subnet {node.subnet.id} has no way to the internet: {reason}; add a route "
        "to a NAT gateway (or an internet gateway plus a public IP), or create the VPC interface endpoints.",
    )


def _nat_path(node: _Node, nat: Any, prerequisite: str) -> _Path:
    """The NAT gateway exists, is available, is public, and its own subnet routes to an attached IGW."""
    live = (getattr(node.ec2, "nat_gateways", None) or {}).get(nat.id)
    state = getattr(live, "state", "deleted")
    if live is not nat or state != "available":
        return _Path(
            False,
            True,
            [
                Problem(
                    prerequisite,
                    "NAT_GATEWAY_NOT_AVAILABLE",
                    f"The {ANYWHERE} route of route table {node.route_table.id} targets NAT gateway {nat.id}, "
                    f"which is {state}; point it at an available NAT gateway.",
                )
            ],
        )
    reason = None
    if str(getattr(nat, "connectivity_type", "public")).lower() == "private":
        reason = "is a private NAT gateway"
    else:
        nat_subnet = _subnet_or_none(node.ec2, nat.subnet_id)
        nat_table = None if nat_subnet is None else _route_table_of_subnet(node.ec2, nat_subnet)
        nat_route = _default_route(nat_table)
        if nat_route is None or _attached_igw(node.ec2, nat_route, nat.vpc_id) is None:
            reason = (
                f"sits in subnet {nat.subnet_id} whose route table {getattr(nat_table, 'id', '(none)')} does not "
                f"send {ANYWHERE} to an internet gateway attached to {nat.vpc_id}"
            )
    if reason is None:
        return _Path(True, True, [])
    return _Path(
        False,
        True,
        [
            Problem(
                prerequisite,
                "NAT_GATEWAY_NO_INTERNET",
                f"NAT gateway {nat.id} used by instance {node.id} {reason}, so it cannot reach the internet.",
            )
        ],
    )


def _live_endpoints(node: _Node, service_name: str) -> list[Any]:
    """Endpoints of the instance's VPC for ``service_name`` that have not been deleted."""
    return [
        e
        for e in (getattr(node.ec2, "vpc_end_points", None) or {}).values()
        if e.vpc_id == node.vpc_id
        and e.service_name == service_name
        and str(getattr(e, "state", "")).lower() not in ("deleted", "deleting")
    ]


def _is_interface(endpoint: Any) -> bool:
    return str(getattr(endpoint, "vpc_endpoint_type", None) or "Gateway").lower() == "interface"


def _interface_endpoint_problems(node: _Node, endpoint: Any, service: str) -> list[tuple[str, str]]:
    """(code, message) pairs for one interface endpoint the instance would use (VPC DNS judged separately)."""
    problems = []
    state = str(getattr(endpoint, "state", "")).lower()
    if state != "available":
        problems.append(
            ("ENDPOINT_MISSING", f"Interface endpoint {endpoint.id} for {service} is {state}, not available.")
        )
    subnets = [_subnet_or_none(node.ec2, s) for s in (getattr(endpoint, "subnet_ids", None) or [])]
    zones = {s.availability_zone for s in subnets if s is not None}
    if node.az not in zones:
        problems.append(
            (
                "ENDPOINT_NOT_IN_AZ",
                f"Interface endpoint {endpoint.id} for {service} has no subnet in {node.az}, the zone of instance "
                f"{node.id}; add a subnet of that zone to it.",
            )
        )
    if not _truthy(getattr(endpoint, "private_dns_enabled", False)):
        problems.append(
            (
                "ENDPOINT_PRIVATE_DNS_OFF",
                f"Interface endpoint {endpoint.id} for {service} has private DNS disabled, so the agent still "
                "resolves the public name; enable private DNS on it.",
            )
        )
    group_ids = list(getattr(endpoint, "security_group_ids", None) or [])
    if not group_ids:  # AWS puts an endpoint created without groups into the VPC's default group
        default = _default_security_group(node.ec2, node.vpc_id)
        group_ids = [default.id] if default is not None else []
    if not _groups_admit_https(node, group_ids):
        problems.append(
            (
                "ENDPOINT_SG_NO_443",
                f"No security group of interface endpoint {endpoint.id} ({', '.join(group_ids) or 'none'}) admits "
                f"TCP 443 from instance {node.id} ({node.private_ip}); add an inbound HTTPS rule for its subnet or "
                "security group.",
            )
        )
    return problems


def _best_interface_endpoint(node: _Node, service_name: str) -> tuple[Any, list[tuple[str, str]]] | None:
    """The interface endpoint for ``service_name`` with the fewest problems, or None if there is none."""
    candidates = [e for e in _live_endpoints(node, service_name) if _is_interface(e)]
    if not candidates:
        return None
    judged = [(e, _interface_endpoint_problems(node, e, service_name)) for e in candidates]
    return min(judged, key=lambda pair: len(pair[1]))


def _vpc_dns_problems(node: _Node, prerequisite: str) -> list[Problem]:
    """Private DNS of interface endpoints needs both VPC DNS attributes on."""
    problems = []
    if not _truthy(getattr(node.vpc, "enable_dns_support", False)):
        problems.append(
            Problem(
                prerequisite,
                "VPC_DNS_SUPPORT_OFF",
                f"VPC {node.vpc_id} has DNS support turned off, so endpoint private DNS names do not resolve; "
                "enable enableDnsSupport.",
            )
        )
    if not _truthy(getattr(node.vpc, "enable_dns_hostnames", False)):
        problems.append(
            Problem(
                prerequisite,
                "VPC_DNS_HOSTNAMES_OFF",
                f"VPC {node.vpc_id} has DNS hostnames turned off, so endpoint private DNS does not work; "
                "enable enableDnsHostnames.",
            )
        )
    return problems


def _endpoint_path(node: _Node) -> _Path:
    """ssm, ssmmessages and ec2messages interface endpoints the instance can use, with VPC DNS on."""
    problems: list[Problem] = []
    attempted = False
    for service in SSM_ENDPOINT_SERVICES:
        service_name = f"com.amazonaws.{node.region}.{service}"
        best = _best_interface_endpoint(node, service_name)
        if best is None:
            problems.append(
                Problem(
                    "network",
                    "ENDPOINT_MISSING",
                    f"VPC {node.vpc_id} has no interface endpoint for {service_name}; create one in the "
                    f"subnet of instance {node.id}.",
                )
            )
            continue
        attempted = True
        problems += [Problem("network", code, message) for code, message in best[1]]
    problems += _vpc_dns_problems(node, "network")
    return _Path(not problems, attempted, problems)


def _network_problems(node: _Node) -> list[Problem]:
    """Prerequisite 3: any one complete path to the Systems Manager endpoints is enough. Otherwise report
    every path someone started to build (a 0/0 route, or at least one SSM endpoint); if none, say so."""
    internet = _internet_path(node)
    if internet.ok:
        return []
    endpoints = _endpoint_path(node)
    if endpoints.ok:
        return []
    attempted = [p for p in (internet, endpoints) if p.attempted]
    if not attempted:
        return internet.problems
    return [problem for path in attempted for problem in path.problems]


# --- S3 ---------------------------------------------------------------------------------------------------


def _s3_gateway_reason(node: _Node, service_name: str) -> str | None:
    """None when an S3 gateway endpoint serves the instance's route table, else why not."""
    gateways = [e for e in _live_endpoints(node, service_name) if not _is_interface(e)]
    table_id = getattr(node.route_table, "id", None)
    for endpoint in gateways:
        if str(endpoint.state).lower() == "available" and table_id in (endpoint.route_table_ids or []):
            return None
    if gateways:
        ids = ", ".join(e.id for e in gateways)
        return f"S3 gateway endpoint {ids} is not associated with route table {table_id}"
    return "there is no S3 gateway endpoint"


def _s3_interface_reason(node: _Node, service_name: str) -> str | None:
    """None when an S3 interface endpoint is usable from the instance, else why not."""
    best = _best_interface_endpoint(node, service_name)
    if best is None:
        return "there is no S3 interface endpoint"
    endpoint, endpoint_problems = best
    codes = [code for code, _ in endpoint_problems] + [p.code for p in _vpc_dns_problems(node, "s3")]
    return f"S3 interface endpoint {endpoint.id} is unusable ({', '.join(codes)})" if codes else None


def _s3_problems(node: _Node) -> list[Problem]:
    """NAT or IGW to the internet, an S3 gateway endpoint on the route table, or an S3 interface endpoint."""
    internet = _internet_path(node, prerequisite="s3")
    if internet.ok:
        return []
    service_name = f"com.amazonaws.{node.region}.s3"
    gateway = _s3_gateway_reason(node, service_name)
    if gateway is None:
        return []
    interface = _s3_interface_reason(node, service_name)
    if interface is None:
        return []
    internet_codes = ", ".join(p.code for p in internet.problems)
    return [
        Problem(
            "s3",
            "NO_S3_PATH",
            f"Instance {node.id} in VPC {node.vpc_id} cannot reach S3: no internet path ({internet_codes}), "
            f"{gateway}, and {interface}; route through a NAT gateway or add an S3 gateway endpoint to route "
            f"table {getattr(node.route_table, 'id', '(none)')}.",
        )
    ]
