# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The reasoning of bastionless.ssm.ssm_preflight, as pure functions over what the AWS APIs return.

Why is a node not Online in Systems Manager, and what fixes it? The module reads AWS (EC2, SSM, IAM, S3, STS)
and hands the answers here, shaped as boto3 returns them; nothing in this file calls AWS, so every rule is
unit-tested on plain dicts.

Each problem is a *finding*: a stable UPPER_SNAKE ``code``, its ``category`` (agent, iam, network,
controller), a ``severity`` (``error``: a session to the node fails; ``warning``: sessions open but something
the operator guide relies on does not work, or a check could not run), a ``message`` naming the resources
involved, a ``fix`` and the ``resources`` ids. ``CATALOG`` lists every code with its meaning; the module's
documentation and docs/troubleshooting.md list the same codes.
"""

import datetime
import ipaddress
import re

from ansible_collections.bastionless.ssm.plugins.module_utils import _iam_policy

# --- the catalog of findings -----------------------------------------------------------------------------

CATEGORIES = ("agent", "iam", "network", "controller")
SEVERITIES = ("error", "warning")

# code: (category, default severity, meaning)
CATALOG = {
    # agent and instance
    "INSTANCE_NOT_FOUND": ("agent", "error", "No EC2 instance or managed node has this id in the account and region."),
    "INSTANCE_NOT_RUNNING": ("agent", "error", "The instance is stopped, stopping, pending, shutting down or terminated."),
    "AGENT_NOT_REGISTERED": ("agent", "error", "The node never registered with Systems Manager."),
    "AGENT_CONNECTION_LOST": ("agent", "error", "The node registered once but its agent has not reached Systems Manager since a time."),
    "AGENT_INACTIVE": ("agent", "error", "The managed node is Inactive: deregistered, or its instance terminated."),
    # iam
    "IMDS_DISABLED": ("iam", "error", "The instance metadata service is disabled, so the agent gets no credentials."),
    "NO_INSTANCE_PROFILE": ("iam", "error", "No instance profile, and Default Host Management Configuration is off."),
    "INSTANCE_PROFILE_NOT_FOUND": ("iam", "error", "The attached instance profile no longer exists (deleted, or deleted and re-created)."),
    "INSTANCE_PROFILE_HAS_NO_ROLE": ("iam", "error", "The instance profile contains no role."),
    "ROLE_TRUST_POLICY": ("iam", "error", "The profile's role does not trust ec2.amazonaws.com."),
    "ROLE_MISSING_PERMISSIONS": ("iam", "error",
                                 "The profile's role lacks AmazonSSMManagedInstanceCore or an equivalent allowing the agent's core actions."),
    "DHMC_IMDSV2_NOT_REQUIRED": ("iam", "error",
                                 "No instance profile, Default Host Management is on, but the instance does not require IMDSv2."),
    "DHMC_ROLE_NOT_FOUND": ("iam", "error", "The role named by the Default Host Management setting does not exist."),
    "DHMC_ROLE_TRUST_POLICY": ("iam", "error", "The Default Host Management role does not trust ssm.amazonaws.com."),
    "DHMC_ROLE_MISSING_PERMISSIONS": ("iam", "error", "The Default Host Management role lacks the agent's core actions."),
    "IAM_NOT_CHECKED": ("iam", "warning", "The IAM prerequisite could not be read (for example iam:GetInstanceProfile was denied)."),
    # network
    "NO_ROUTE_TO_INTERNET": ("network", "error",
                             "The subnet's route table has no usable 0.0.0.0/0 route and the VPC has no NAT gateway to add one to."),
    "NAT_ROUTE_MISSING": ("network", "error", "A NAT gateway exists in the VPC, but the subnet's route table has no 0.0.0.0/0 route to it."),
    "NAT_GATEWAY_NOT_AVAILABLE": ("network", "error", "The 0.0.0.0/0 route points at a NAT gateway that is not available (or is gone)."),
    "NAT_GATEWAY_NO_INTERNET": ("network", "error",
                                "The NAT gateway is private, or its own subnet does not route to an attached internet gateway."),
    "IGW_WITHOUT_PUBLIC_IP": ("network", "error", "The route goes to an internet gateway, but the instance has no public IP."),
    "NETWORK_PATH_UNVERIFIED": ("network", "warning",
                                "The 0.0.0.0/0 route goes to a target this module cannot follow (transit gateway, firewall, peering, ENI)."),
    "ENDPOINT_MISSING": ("network", "error", "No available interface endpoint for one of ssm, ssmmessages, ec2messages."),
    "ENDPOINT_NOT_IN_AZ": ("network", "warning",
                           "The interface endpoint has no subnet in the node's zone: it works across zones, at a cost and an outage risk."),
    "ENDPOINT_PRIVATE_DNS_OFF": ("network", "error", "The interface endpoint has private DNS off, so the agent still resolves the public name."),
    "ENDPOINT_SG_NO_443": ("network", "error", "No security group of the interface endpoint admits TCP 443 from the node."),
    "VPC_DNS_SUPPORT_OFF": ("network", "error", "The VPC's enableDnsSupport is off, so endpoint private DNS does not resolve."),
    "VPC_DNS_HOSTNAMES_OFF": ("network", "error", "The VPC's enableDnsHostnames is off, so endpoint private DNS does not work."),
    "NO_S3_PATH": ("network", "warning",
                   "The node cannot reach S3 (no internet path, no S3 gateway or interface endpoint): aws_ssm file transfer fails."),
    "NETWORK_NOT_CHECKED": ("network", "warning", "The network prerequisite could not be read (for example an EC2 Describe call was denied)."),
    # controller
    "PLUGIN_NOT_FOUND": ("controller", "error", "session-manager-plugin is not installed where the module looked."),
    "PLUGIN_VERSION_UNKNOWN": ("controller", "warning", "session-manager-plugin was found but `--version` failed."),
    "TRANSFER_BUCKET_NOT_FOUND": ("controller", "error", "The transfer bucket that aws_ssm moves module files through does not exist."),
    "TRANSFER_BUCKET_NOT_CHECKED": ("controller", "warning", "The transfer bucket could not be checked (HeadBucket was denied)."),
    "CALLER_ACCESS_DENIED": ("controller", "error",
                             "IAM policy simulation: the caller may not ssm:StartSession on the node (AccessDeniedException)."),
    "CALLER_DOCUMENT_DENIED": ("controller", "error", "IAM policy simulation: the caller may not ssm:StartSession with the session document."),
    "SIMULATION_UNAVAILABLE": ("controller", "warning",
                               "The caller's ssm:StartSession permission could not be simulated; the reason says why."),
}

# The agent's core actions (what AmazonSSMManagedInstanceCore grants for registration and sessions).
CORE_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:GetMessages",
)
CORE_POLICY = "AmazonSSMManagedInstanceCore"
DHMC_POLICY = "AmazonSSMManagedEC2InstanceDefaultPolicy"
# AWS managed policies known to allow every core action: no need to read them.
KNOWN_CORE_POLICIES = frozenset({CORE_POLICY, DHMC_POLICY, "AdministratorAccess"})
EC2_PRINCIPALS = frozenset({"ec2.amazonaws.com", "ec2.amazonaws.com.cn"})
SSM_PRINCIPALS = frozenset({"ssm.amazonaws.com"})
SSM_SERVICES = ("ssm", "ssmmessages", "ec2messages")
DHMC_SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"
ANYWHERE = "0.0.0.0/0"
HTTPS = 443
PLUGIN_INSTALL = (
    "Install the Session Manager plugin on the controller "
    "(https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html) "
    "into /usr/local/bin or onto PATH, or point the aws_ssm connection (ansible_aws_ssm_plugin or "
    "AWS_SESSION_MANAGER_PLUGIN) and this module's plugin option at it."
)
_ID = re.compile(r"^(i|mi)-[0-9a-f]{8,17}$")
_RUNNING = "running"


def finding(code, message, fix, severity=None, **resources):
    """One finding; category and default severity come from the catalog."""
    category, default_severity, _meaning = CATALOG[code]
    return {
        "code": code,
        "category": category,
        "severity": severity or default_severity,
        "message": message,
        "fix": fix,
        "resources": {k: v for k, v in sorted(resources.items()) if v not in (None, "", [])},
    }


def dedupe(findings):
    """Findings once each (same code and message), errors first, order kept otherwise."""
    seen, unique = set(), []
    for item in findings:
        key = (item["code"], item["message"])
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return sorted(unique, key=lambda f: SEVERITIES.index(f["severity"]))


def invalid_ids(ids):
    return [i for i in ids or [] if not _ID.match(i or "")]


def is_hybrid(node_id):
    return node_id.startswith("mi-")


def tags_dict(tag_list):
    return {t["Key"]: t.get("Value", "") for t in tag_list or [] if "Key" in t}


def as_time(value):
    """A datetime (aware, UTC when naive) from a datetime, an epoch number or an ISO string; None otherwise."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if isinstance(value, str) and value:
        try:
            return as_time(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def iso(value):
    stamp = as_time(value)
    return stamp.astimezone(datetime.timezone.utc).isoformat(timespec="seconds") if stamp else None


def ago(value, now):
    """'3 min', '2 h 5 min', '4 d 1 h' from a time to now."""
    stamp, now = as_time(value), as_time(now)
    if stamp is None or now is None:
        return "an unknown time"
    seconds = max(0, int((now - stamp).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def arn_parts(arn):
    """arn:partition:service:region:account:resource -> dict (empty strings when absent)."""
    parts = (arn or "").split(":", 5)
    parts += [""] * (6 - len(parts))
    return {"partition": parts[1] or "aws", "service": parts[2], "region": parts[3], "account": parts[4],
            "resource": parts[5]}


def name_from_arn(arn):
    """arn:aws:iam::123456789012:instance-profile/path/name -> name."""
    return arn_parts(arn)["resource"].rsplit("/", 1)[-1]


def node_arn(node_id, partition, region, account):
    if is_hybrid(node_id):
        return f"arn:{partition}:ssm:{region}:{account}:managed-instance/{node_id}"
    return f"arn:{partition}:ec2:{region}:{account}:instance/{node_id}"


def document_arn(document, partition, region, account):
    """AWS-owned documents (AWS-*) have no account in their ARN; the account's own (SSM-SessionManagerRunShell
    included) do."""
    if document.startswith("arn:"):
        return document
    owner = "" if document.startswith("AWS-") else account
    return f"arn:{partition}:ssm:{region}:{owner}:document/{document}"


# --- IAM policy reading --------------------------------------------------------------------------------
# The evaluation itself is the collection's one IAM evaluator (_iam_policy.py); here conditions count as satisfied,
# since the module knows no request context of the agent.

trusts = _iam_policy.trusts


def known_core_policy(policy_arn):
    """An AWS managed policy known to allow every core action (arn:<partition>:iam::aws:policy/<name>)."""
    parts = arn_parts(policy_arn)
    return parts["account"] == "aws" and name_from_arn(policy_arn) in KNOWN_CORE_POLICIES


def missing_core_actions(documents, boundary, instance_arn):
    """The core actions the role's policies (inline and managed documents) do not allow, after the
    permissions boundary (None: no boundary). ssm:UpdateInstanceInformation is checked on the instance ARN."""
    identity = [_iam_policy.policy_document(d) for d in documents]
    bounded = None if boundary is None else [_iam_policy.policy_document(boundary)]
    missing = []
    for action in CORE_ACTIONS:
        resource = instance_arn if action == "ssm:UpdateInstanceInformation" and instance_arn else "*"
        ok = _iam_policy.allowed(identity, action, resource) or _iam_policy.allowed(identity, action, "*")
        if ok and bounded is not None:
            ok = _iam_policy.allowed(bounded, action, resource) or _iam_policy.allowed(bounded, action, "*")
        if not ok:
            missing.append(action)
    return missing


# --- agent ---------------------------------------------------------------------------------------------

AGENT_FIX_WITH_CAUSES = ("Fix this node's other findings; the agent registers (or reconnects) within minutes once the "
                         "instance runs and has credentials and a network path.")


def instance_findings(instance_id, instance):
    """INSTANCE_NOT_FOUND / INSTANCE_NOT_RUNNING for an EC2 id (instance None: not found)."""
    if instance is None:
        return [finding(
            "INSTANCE_NOT_FOUND",
            f"There is no EC2 instance {instance_id} in this account and region.",
            "Check the id, the region and the account (profile or assumed role) the module runs with.",
            instance_id=instance_id)]
    state = (instance.get("State") or {}).get("Name", "unknown")
    if state == _RUNNING:
        return []
    if state in ("terminated", "shutting-down"):
        fix = f"{instance_id} is gone: target a running instance instead."
    elif state == "pending":
        fix = f"Wait until {instance_id} is running, then run the preflight again."
    else:
        fix = f"Start it: aws ec2 start-instances --instance-ids {instance_id}."
    return [finding("INSTANCE_NOT_RUNNING", f"Instance {instance_id} is {state}, so SSM Agent does not run.", fix,
                    instance_id=instance_id, state=state)]


def agent_findings(node_id, info, now, has_causes):
    """What DescribeInstanceInformation says (``info`` None: the node is not listed there). ``has_causes``:
    iam or network errors were found for this node, so the fix points at them."""
    hybrid = is_hybrid(node_id)
    if info is None:
        if hybrid:
            return [finding(
                "AGENT_NOT_REGISTERED",
                f"There is no managed node {node_id} in Systems Manager in this account and region.",
                "Check the id and the region; register the server again with a hybrid activation "
                "(amazon-ssm-agent -register -code <code> -id <id> -region <region>) if it was deregistered.",
                instance_id=node_id)]
        if has_causes:
            fix = AGENT_FIX_WITH_CAUSES
        else:
            fix = ("IAM and network look right: make sure SSM Agent is installed and running on the instance "
                   "(on Amazon Linux: sudo dnf install -y amazon-ssm-agent && sudo systemctl enable --now "
                   "amazon-ssm-agent, for example in its user data), then wait a few minutes.")
        return [finding(
            "AGENT_NOT_REGISTERED",
            f"Instance {node_id} has never registered with Systems Manager (it is not in DescribeInstanceInformation).",
            fix, instance_id=node_id)]
    status = info.get("PingStatus")
    last = info.get("LastPingDateTime")
    if status == "ConnectionLost":
        if has_causes:
            fix = AGENT_FIX_WITH_CAUSES
        elif hybrid:
            fix = "Restart the agent on the server (sudo systemctl restart amazon-ssm-agent) and check its outbound 443."
        else:
            fix = ("IAM and network look right, so the agent stopped or the instance is unhealthy: restart "
                   "amazon-ssm-agent (from the EC2 serial console), or reboot the instance.")
        return [finding(
            "AGENT_CONNECTION_LOST",
            f"{node_id} is ConnectionLost: its agent last reached Systems Manager at {iso(last)} ({ago(last, now)} ago).",
            fix, instance_id=node_id, last_ping=iso(last))]
    if status == "Inactive":
        return [finding(
            "AGENT_INACTIVE",
            f"{node_id} is Inactive in Systems Manager (deregistered, or its instance was terminated).",
            "Register the node again (hybrid activation), or target a live instance.",
            instance_id=node_id, last_ping=iso(last))]
    return []


# --- IAM (prerequisite 2) ------------------------------------------------------------------------------


def _role_findings(instance_id, role, codes, principals, instance_arn):
    """Trust and core permissions of the role whose credentials the agent uses. ``role``: {name, arn, trust,
    documents, boundary, boundary_arn}."""
    trust_code, permissions_code = codes
    found = []
    if not trusts(role.get("trust"), principals):
        principal = " or ".join(sorted(principals))
        found.append(finding(
            trust_code,
            f"The trust policy of role {role['name']} does not allow {principal} to sts:AssumeRole, so "
            f"instance {instance_id} gets no credentials from it.",
            f"Update the role's trust policy: aws iam update-assume-role-policy --role-name {role['name']} "
            f"--policy-document '{{\"Version\": \"2012-10-17\", \"Statement\": [{{\"Effect\": \"Allow\", "
            f"\"Principal\": {{\"Service\": \"{sorted(principals)[0]}\"}}, \"Action\": \"sts:AssumeRole\"}}]}}'.",
            instance_id=instance_id, role=role["name"]))
    missing = missing_core_actions(role.get("documents") or [], role.get("boundary"), instance_arn)
    if missing:
        bounded = f" (after its permissions boundary {role.get('boundary_arn')})" if role.get("boundary_arn") else ""
        policy = DHMC_POLICY if permissions_code.startswith("DHMC") else CORE_POLICY
        found.append(finding(
            permissions_code,
            f"Role {role['name']}{bounded} does not allow {', '.join(missing)}, which SSM Agent needs to register "
            "and open sessions.",
            f"Attach the AWS managed policy {policy}: aws iam attach-role-policy --role-name {role['name']} "
            f"--policy-arn arn:aws:iam::aws:policy/{policy} (or grant those actions"
            f"{', and widen the boundary' if bounded else ''}).",
            instance_id=instance_id, role=role["name"], missing_actions=missing))
    return found


def iam_findings(instance, profile, dhmc, instance_arn):
    """Prerequisite 2 for one running EC2 instance.

    ``profile``: None when the instance has no instance profile, else {"arn", "found" (bool), "role" (None: no
    role, else a role dict), "error" (str: could not be read)}. ``dhmc``: {"enabled", "value", "role" (None:
    not found), "error"}; only read when the instance has no profile."""
    instance_id = instance["InstanceId"]
    options = instance.get("MetadataOptions") or {}
    found = []
    if str(options.get("HttpEndpoint", "enabled")).lower() == "disabled":
        found.append(finding(
            "IMDS_DISABLED",
            f"Instance {instance_id} has its metadata service disabled (HttpEndpoint disabled), so SSM Agent gets no "
            "credentials.",
            f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} --http-endpoint enabled "
            "--http-tokens required.",
            instance_id=instance_id))
    if profile is not None:
        return found + _profile_findings(instance_id, profile, instance_arn)
    if dhmc is None or dhmc.get("error"):
        reason = (dhmc or {}).get("error") or "the setting was not read"
        return found + [finding(
            "IAM_NOT_CHECKED",
            f"Instance {instance_id} has no instance profile, and the Default Host Management setting could not "
            f"be read: {reason}.",
            "Allow ssm:GetServiceSetting to the caller, or attach an instance profile with "
            f"{CORE_POLICY} to the instance.",
            instance_id=instance_id)]
    if not dhmc.get("enabled"):
        return found + [finding(
            "NO_INSTANCE_PROFILE",
            f"Instance {instance_id} has no IAM instance profile, and Default Host Management Configuration is off.",
            f"Attach an instance profile whose role has {CORE_POLICY} (bastionless.ssm.instance_profile_association, "
            f"or aws ec2 associate-iam-instance-profile --instance-id {instance_id} --iam-instance-profile Name=<profile>), "
            f"or turn on Default Host Management (bastionless.ssm.ssm_service_setting {DHMC_SETTING}).",
            instance_id=instance_id)]
    tokens = str(options.get("HttpTokens", "optional")).lower()
    if tokens != "required":
        found.append(finding(
            "DHMC_IMDSV2_NOT_REQUIRED",
            f"Instance {instance_id} has no instance profile, and Default Host Management skips it because it does "
            f"not require IMDSv2 (HttpTokens is {tokens}).",
            f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} --http-tokens required "
            "--http-endpoint enabled (or attach an instance profile).",
            instance_id=instance_id))
    role = dhmc.get("role")
    if role is None:
        found.append(finding(
            "DHMC_ROLE_NOT_FOUND",
            f"The Default Host Management role {dhmc.get('value')} does not exist.",
            f"Create it, trusting ssm.amazonaws.com, with the AWS managed policy {DHMC_POLICY}; or point "
            f"{DHMC_SETTING} at an existing role.",
            instance_id=instance_id, role=dhmc.get("value")))
        return found
    return found + _role_findings(instance_id, role, ("DHMC_ROLE_TRUST_POLICY", "DHMC_ROLE_MISSING_PERMISSIONS"),
                                  SSM_PRINCIPALS, instance_arn)


def _profile_findings(instance_id, profile, instance_arn):
    label = profile.get("arn")
    if profile.get("error"):
        return [finding(
            "IAM_NOT_CHECKED",
            f"The instance profile {label} of instance {instance_id} could not be read: {profile['error']}.",
            "Allow iam:GetInstanceProfile, iam:GetRole, iam:ListRolePolicies, iam:GetRolePolicy, "
            "iam:ListAttachedRolePolicies, iam:GetPolicy and iam:GetPolicyVersion to the caller.",
            instance_id=instance_id, instance_profile=label)]
    if not profile.get("found"):
        return [finding(
            "INSTANCE_PROFILE_NOT_FOUND",
            f"Instance {instance_id} is associated with instance profile {label}, which does not exist in IAM (any "
            "more; a profile deleted and re-created under the same name is a new profile).",
            f"Associate an existing profile: aws ec2 replace-iam-instance-profile-association (or "
            f"bastionless.ssm.instance_profile_association with replace: true) for {instance_id}.",
            instance_id=instance_id, instance_profile=label)]
    role = profile.get("role")
    if role is None:
        return [finding(
            "INSTANCE_PROFILE_HAS_NO_ROLE",
            f"Instance profile {name_from_arn(label)} of instance {instance_id} contains no role.",
            f"aws iam add-role-to-instance-profile --instance-profile-name {name_from_arn(label)} --role-name "
            f"<role with {CORE_POLICY}>.",
            instance_id=instance_id, instance_profile=label)]
    if role.get("error"):
        return [finding(
            "IAM_NOT_CHECKED",
            f"Role {role.get('name')} of instance profile {name_from_arn(label)} could not be read: {role['error']}.",
            "Allow iam:GetRole, iam:ListRolePolicies, iam:GetRolePolicy, iam:ListAttachedRolePolicies, "
            "iam:GetPolicy and iam:GetPolicyVersion to the caller.",
            instance_id=instance_id, role=role.get("name"))]
    return _role_findings(instance_id, role, ("ROLE_TRUST_POLICY", "ROLE_MISSING_PERMISSIONS"), EC2_PRINCIPALS,
                          instance_arn)


# --- network (prerequisite 3) --------------------------------------------------------------------------


def route_table_of(route_tables, subnet_id, vpc_id):
    """The route table explicitly associated with the subnet, else the VPC's main one (None if neither)."""
    main = None
    for table in route_tables:
        if table.get("VpcId") != vpc_id:
            continue
        for association in table.get("Associations") or []:
            if association.get("SubnetId") == subnet_id:
                return table
            if association.get("Main"):
                main = table
    return main


def default_route(table):
    if table is None:
        return None
    return next((r for r in table.get("Routes") or [] if r.get("DestinationCidrBlock") == ANYWHERE), None)


def _route_target(route):
    for key in ("NatGatewayId", "GatewayId", "TransitGatewayId", "NetworkInterfaceId", "InstanceId",
                "VpcPeeringConnectionId", "LocalGatewayId", "CarrierGatewayId", "CoreNetworkArn",
                "EgressOnlyInternetGatewayId"):
        if route.get(key):
            return route[key]
    return "nothing"


def _igw_attached(internet_gateways, igw_id, vpc_id):
    for igw in internet_gateways:
        if igw.get("InternetGatewayId") == igw_id:
            return any(a.get("VpcId") == vpc_id and a.get("State") in ("available", "attached", None)
                       for a in igw.get("Attachments") or [])
    return False


def _available_nats(vpc):
    return [n for n in vpc.get("nat_gateways") or []
            if n.get("State") == "available" and n.get("ConnectivityType", "public") != "private"]


def _nat_reaches_internet(nat, vpc):
    """(ok, reason) for an available NAT gateway: public, and its subnet routes 0/0 to an attached IGW."""
    if nat.get("ConnectivityType") == "private":
        return False, "is a private NAT gateway"
    table = route_table_of(vpc.get("route_tables") or [], nat.get("SubnetId"), nat.get("VpcId") or vpc["id"])
    route = default_route(table)
    if route is None or not _igw_attached(vpc.get("internet_gateways") or [], route.get("GatewayId"), vpc["id"]):
        table_id = (table or {}).get("RouteTableId", "(none)")
        return False, (f"sits in subnet {nat.get('SubnetId')} whose route table {table_id} does not send {ANYWHERE} to "
                       f"an internet gateway attached to {vpc['id']}")
    return True, ""


def internet_path(node, vpc):
    """The node's way to the internet through its subnet's 0.0.0.0/0 route.

    Returns {"state": "ok" | "broken" | "unverified", "attempted": bool (someone built part of it: a default
    route, or a NAT gateway in the VPC), "findings": [...] (severity left to the caller)}."""
    table = route_table_of(vpc.get("route_tables") or [], node["subnet_id"], vpc["id"])
    table_id = (table or {}).get("RouteTableId")
    route = default_route(table)
    ids = {"instance_id": node["id"], "subnet_id": node["subnet_id"], "route_table_id": table_id}
    if route is None:
        nats = _available_nats(vpc)
        if nats:
            nat = nats[0]["NatGatewayId"]
            return {"state": "broken", "attempted": True, "findings": [finding(
                "NAT_ROUTE_MISSING",
                f"Route table {table_id} of subnet {node['subnet_id']} (instance {node['id']}) has no {ANYWHERE} route, "
                f"although NAT gateway {nat} is available in {vpc['id']}.",
                f"aws ec2 create-route --route-table-id {table_id} --destination-cidr-block {ANYWHERE} "
                f"--nat-gateway-id {nat}.",
                nat_gateway_id=nat, **ids)]}
        return {"state": "broken", "attempted": False, "findings": [finding(
            "NO_ROUTE_TO_INTERNET",
            f"Route table {table_id or '(none)'} of subnet {node['subnet_id']} (instance {node['id']}) has no "
            f"{ANYWHERE} route, and VPC {vpc['id']} has no available NAT gateway.",
            f"Create a NAT gateway in a public subnet and route {ANYWHERE} of {table_id} to it (the "
            "bastionless.ssm.vpc_endpoints role, mode nat), or create the ssm, ssmmessages and ec2messages "
            "interface endpoints (mode endpoints).",
            **ids)]}
    if route.get("NatGatewayId"):
        nat_id = route["NatGatewayId"]
        nat = next((n for n in vpc.get("nat_gateways") or [] if n.get("NatGatewayId") == nat_id), None)
        state = (nat or {}).get("State", "deleted")
        if nat is None or state != "available":
            others = [n["NatGatewayId"] for n in _available_nats(vpc) if n["NatGatewayId"] != nat_id]
            target = others[0] if others else "<an available NAT gateway>"
            return {"state": "broken", "attempted": True, "findings": [finding(
                "NAT_GATEWAY_NOT_AVAILABLE",
                f"The {ANYWHERE} route of route table {table_id} (instance {node['id']}) targets NAT gateway {nat_id}, "
                f"which is {state}{' (the route is a blackhole)' if route.get('State') == 'blackhole' else ''}.",
                (f"aws ec2 replace-route --route-table-id {table_id} --destination-cidr-block {ANYWHERE} "
                 f"--nat-gateway-id {target}" + ("" if others else ", after creating a NAT gateway in a public subnet")
                 + "."),
                nat_gateway_id=nat_id, state=state, **ids)]}
        ok, reason = _nat_reaches_internet(nat, vpc)
        if ok:
            return {"state": "ok", "attempted": True, "findings": []}
        return {"state": "broken", "attempted": True, "findings": [finding(
            "NAT_GATEWAY_NO_INTERNET",
            f"NAT gateway {nat_id} used by instance {node['id']} {reason}, so it cannot reach the internet.",
            "Put a public NAT gateway in a public subnet whose route table sends "
            f"{ANYWHERE} to the VPC's internet gateway, and route {table_id} to it.",
            nat_gateway_id=nat_id, **ids)]}
    gateway = route.get("GatewayId") or ""
    if gateway.startswith("igw-") and _igw_attached(vpc.get("internet_gateways") or [], gateway, vpc["id"]):
        if node.get("public_ip"):
            return {"state": "ok", "attempted": True, "findings": []}
        return {"state": "broken", "attempted": True, "findings": [finding(
            "IGW_WITHOUT_PUBLIC_IP",
            f"Subnet {node['subnet_id']} routes {ANYWHERE} to internet gateway {gateway}, but instance {node['id']} "
            "has no public IP.",
            "Give the instance a public or Elastic IP, or (better, for a private node) put it in a subnet routed "
            "through a NAT gateway or use interface endpoints.",
            internet_gateway_id=gateway, **ids)]}
    if route.get("State") == "blackhole" or gateway.startswith("igw-"):
        target = _route_target(route)
        return {"state": "broken", "attempted": True, "findings": [finding(
            "NO_ROUTE_TO_INTERNET",
            f"The {ANYWHERE} route of route table {table_id} (instance {node['id']}) targets {target}, which is gone "
            f"or not attached to {vpc['id']}.",
            f"Replace the route with one to an available NAT gateway: aws ec2 replace-route --route-table-id {table_id} "
            f"--destination-cidr-block {ANYWHERE} --nat-gateway-id <nat>.",
            **ids)]}
    target = _route_target(route)
    return {"state": "unverified", "attempted": True, "findings": [finding(
        "NETWORK_PATH_UNVERIFIED",
        f"The {ANYWHERE} route of route table {table_id} (instance {node['id']}) goes to {target}; this module cannot "
        "tell whether that reaches the internet.",
        "Check that the appliance, transit gateway or peer behind it lets the node reach ssm, ssmmessages and "
        "ec2messages on 443, or create those interface endpoints.",
        target=target, **ids)]}


def _endpoint_service(endpoint, region, service):
    name = endpoint.get("ServiceName") or ""
    return name.endswith(f".{region}.{service}")


def _interface_endpoints(vpc, region, service):
    return [e for e in vpc.get("endpoints") or []
            if e.get("VpcEndpointType", "Gateway").lower() == "interface" and _endpoint_service(e, region, service)
            and str(e.get("State", "")).lower() not in ("deleted", "deleting", "rejected", "failed", "expired")]


def _rule_admits_https(rule):
    protocol = str(rule.get("IpProtocol", "")).lower()
    if protocol in ("-1", "all"):
        return True
    if protocol not in ("tcp", "6"):
        return False
    low, high = rule.get("FromPort"), rule.get("ToPort")
    return low is not None and high is not None and int(low) <= HTTPS <= int(high)


def _cidr_contains(cidr, ip):
    try:
        return ip is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def groups_admit_https(security_groups, group_ids, node):
    """Some ingress rule of these groups admits TCP 443 from the node: a CIDR holding its private IP, one of its
    security groups, or a prefix list (taken as admitting: it cannot be resolved here)."""
    for group_id in group_ids:
        group = security_groups.get(group_id) or {}
        for rule in group.get("IpPermissions") or []:
            if not _rule_admits_https(rule):
                continue
            if any(_cidr_contains(r.get("CidrIp"), node.get("private_ip")) for r in rule.get("IpRanges") or []):
                return True
            if any(p.get("GroupId") in node.get("group_ids", ()) for p in rule.get("UserIdGroupPairs") or []):
                return True
            if rule.get("PrefixListIds"):
                return True
    return False


def _endpoint_groups(endpoint, vpc):
    groups = [g.get("GroupId") for g in endpoint.get("Groups") or [] if g.get("GroupId")]
    if not groups and vpc.get("default_group_id"):  # AWS puts an endpoint created without groups in the default one
        groups = [vpc["default_group_id"]]
    return groups


def _endpoint_zones(endpoint, vpc):
    subnets = vpc.get("subnets") or {}
    return {(subnets.get(s) or {}).get("AvailabilityZone") for s in endpoint.get("SubnetIds") or []}


def _dns_findings(node, vpc):
    found = []
    for key, attribute, code in (("dns_support", "enableDnsSupport", "VPC_DNS_SUPPORT_OFF"),
                                 ("dns_hostnames", "enableDnsHostnames", "VPC_DNS_HOSTNAMES_OFF")):
        if vpc.get(key) is False:
            found.append(finding(
                code,
                f"VPC {vpc['id']} has {attribute} off, so the private DNS names of its interface endpoints do not "
                f"resolve to them from instance {node['id']}.",
                f"aws ec2 modify-vpc-attribute --vpc-id {vpc['id']} --{'enable-dns-support' if key == 'dns_support' else 'enable-dns-hostnames'} "
                "\"{\\\"Value\\\":true}\".",
                instance_id=node["id"], vpc_id=vpc["id"]))
    return found


def _effective_endpoint(node, vpc, region, service):
    """(the endpoint the service's name resolves to through private DNS, or None; [why the node cannot use the
    service's endpoints])."""
    endpoints = _interface_endpoints(vpc, region, service)
    dns_ok = vpc.get("dns_support") is not False and vpc.get("dns_hostnames") is not False
    live = [e for e in endpoints if str(e.get("State", "")).lower() == "available"]
    private = [e for e in live if e.get("PrivateDnsEnabled")]
    if private and dns_ok:
        return private[0], []
    problems = []
    label = f"com.amazonaws.{region}.{service}"
    ids = {"instance_id": node["id"], "vpc_id": vpc["id"]}
    if private:  # private DNS on, but a VPC DNS attribute off
        problems += _dns_findings(node, vpc)
    elif live:
        endpoint = live[0]["VpcEndpointId"]
        problems.append(finding(
            "ENDPOINT_PRIVATE_DNS_OFF",
            f"Interface endpoint {endpoint} for {label} has private DNS off, so the agent on {node['id']} still "
            "resolves the public name.",
            f"aws ec2 modify-vpc-endpoint --vpc-endpoint-id {endpoint} --private-dns-enabled.",
            vpc_endpoint_id=endpoint, service=service, **ids))
    elif endpoints:
        endpoint = endpoints[0]
        problems.append(finding(
            "ENDPOINT_MISSING",
            f"Interface endpoint {endpoint['VpcEndpointId']} for {label} is {endpoint.get('State')}, not available.",
            "Wait for it to become available, or delete and re-create it.",
            vpc_endpoint_id=endpoint["VpcEndpointId"], service=service, **ids))
    else:
        subnet = node["subnet_id"]
        problems.append(finding(
            "ENDPOINT_MISSING",
            f"VPC {vpc['id']} has no interface endpoint for {label}, which instance {node['id']} needs.",
            f"aws ec2 create-vpc-endpoint --vpc-endpoint-type Interface --vpc-id {vpc['id']} --service-name {label} "
            f"--subnet-ids {subnet} --security-group-ids <group admitting 443 from the node> --private-dns-enabled "
            "(or the bastionless.ssm.vpc_endpoints role).",
            service=service, **ids))
    return None, problems


def _endpoint_use_findings(node, vpc, region, service, endpoint):
    """Problems of the endpoint the node's traffic for ``service`` goes to: (errors, warnings)."""
    label = f"com.amazonaws.{region}.{service}"
    endpoint_id = endpoint["VpcEndpointId"]
    ids = {"instance_id": node["id"], "vpc_endpoint_id": endpoint_id, "service": service}
    errors, warnings = [], []
    groups = _endpoint_groups(endpoint, vpc)
    if not groups_admit_https(vpc.get("security_groups") or {}, groups, node):
        node_groups = ", ".join(sorted(node.get("group_ids") or [])) or "its group"
        errors.append(finding(
            "ENDPOINT_SG_NO_443",
            f"No security group of interface endpoint {endpoint_id} for {label} ({', '.join(groups) or 'none'}) admits "
            f"TCP 443 from instance {node['id']} ({node.get('private_ip')}); with private DNS on, the agent's traffic "
            "for it goes there.",
            f"aws ec2 authorize-security-group-ingress --group-id {groups[0] if groups else '<endpoint group>'} "
            f"--protocol tcp --port 443 --cidr <the node's subnet or VPC CIDR> (or --source-group {node_groups}).",
            security_group_ids=groups, **ids))
    zones = _endpoint_zones(endpoint, vpc)
    if node.get("az") and node["az"] not in zones:
        warnings.append(finding(
            "ENDPOINT_NOT_IN_AZ",
            f"Interface endpoint {endpoint_id} for {label} has no subnet in {node['az']}, the zone of instance "
            f"{node['id']}: its traffic crosses zones and fails when the endpoint's zone does.",
            f"aws ec2 modify-vpc-endpoint --vpc-endpoint-id {endpoint_id} --add-subnet-ids <a subnet in {node['az']}>.",
            az=node["az"], **ids))
    return errors, warnings


def network_facts(instance):
    """What the network checks need of a DescribeInstances instance: its placement, addresses and the security
    groups of its primary interface."""
    groups = [g["GroupId"] for g in instance.get("SecurityGroups") or [] if g.get("GroupId")]
    for nic in instance.get("NetworkInterfaces") or []:
        if (nic.get("Attachment") or {}).get("DeviceIndex", 0) == 0:
            groups += [g["GroupId"] for g in nic.get("Groups") or [] if g.get("GroupId")]
    return {
        "id": instance["InstanceId"],
        "subnet_id": instance.get("SubnetId"),
        "vpc_id": instance.get("VpcId"),
        "az": (instance.get("Placement") or {}).get("AvailabilityZone"),
        "private_ip": instance.get("PrivateIpAddress"),
        "public_ip": instance.get("PublicIpAddress"),
        "group_ids": sorted(set(groups)),
    }


def not_checked_network(node_id, vpc):
    """The finding for a node whose VPC could not be read (vpc is {"id", "error"})."""
    return finding(
        "NETWORK_NOT_CHECKED",
        f"The network path of instance {node_id} could not be read ({vpc['id']}): {vpc['error']}.",
        "Allow ec2:DescribeRouteTables, ec2:DescribeNatGateways, ec2:DescribeInternetGateways, "
        "ec2:DescribeVpcEndpoints, ec2:DescribeSubnets, ec2:DescribeSecurityGroups and ec2:DescribeVpcAttribute "
        "to the caller.",
        instance_id=node_id, vpc_id=vpc["id"])


def network_findings(node, vpc, region, online):
    """Prerequisite 3 for one running EC2 instance: can the agent reach ssm, ssmmessages and ec2messages?

    Per service, as AWS resolves it: with an available interface endpoint whose private DNS is on (and the VPC's
    DNS attributes on), the service name resolves to the endpoint, which must admit 443 from the node; without
    one, the traffic takes the 0.0.0.0/0 route. When every service is reachable, the broken pieces of the
    internet path that someone built (a NAT gateway the route table does not use, above all) are warnings:
    sessions open, but package installs from the internet fail."""
    path = internet_path(node, vpc)
    errors, warnings = [], []
    endpoint_attempted = any(_interface_endpoints(vpc, region, s) for s in SSM_SERVICES)
    unreachable_problems = []
    for service in SSM_SERVICES:
        endpoint, problems = _effective_endpoint(node, vpc, region, service)
        if endpoint is not None:
            service_errors, service_warnings = _endpoint_use_findings(node, vpc, region, service, endpoint)
            errors += service_errors
            warnings += service_warnings
            continue
        if path["state"] in ("ok", "unverified"):
            continue
        unreachable_problems.append(problems)
    if unreachable_problems:
        if endpoint_attempted:
            for problems in unreachable_problems:
                errors += problems
        if path["attempted"] or not endpoint_attempted:
            errors += path["findings"]
    elif path["state"] == "broken" and path["attempted"]:
        for item in path["findings"]:
            warnings.append(dict(item, severity="warning",
                                 message=item["message"] + " Sessions open through the interface endpoints, but "
                                 "nothing on the node reaches the internet: package installs (dnf, pip) fail."))
    if path["state"] == "unverified" and not online:
        warnings += path["findings"]
    return dedupe([dict(f, severity="error") for f in errors] + warnings)


def s3_findings(node, vpc, region, bucket, bucket_region):
    """Can the node reach S3 for the transfer bucket (aws_ssm's presigned GET/PUT)? NAT or IGW, an S3 gateway
    endpoint on its route table, or an S3 interface endpoint with private DNS, all in the bucket's region."""
    path = internet_path(node, vpc)
    if path["state"] in ("ok", "unverified"):
        return []
    same_region = bucket_region in (None, region)
    table = route_table_of(vpc.get("route_tables") or [], node["subnet_id"], vpc["id"])
    table_id = (table or {}).get("RouteTableId")
    if same_region:
        for endpoint in vpc.get("endpoints") or []:
            if (_endpoint_service(endpoint, region, "s3") and endpoint.get("VpcEndpointType", "Gateway").lower() == "gateway"
                    and str(endpoint.get("State", "")).lower() == "available"
                    and table_id in (endpoint.get("RouteTableIds") or [])):
                return []
        for endpoint in _interface_endpoints(vpc, region, "s3"):
            if (str(endpoint.get("State", "")).lower() == "available" and endpoint.get("PrivateDnsEnabled")
                    and vpc.get("dns_support") is not False and vpc.get("dns_hostnames") is not False
                    and groups_admit_https(vpc.get("security_groups") or {}, _endpoint_groups(endpoint, vpc), node)):
                return []
    codes = ", ".join(f["code"] for f in path["findings"])
    if same_region:
        reason = f"no S3 gateway endpoint on route table {table_id} and no usable S3 interface endpoint"
        fix = (f"Add an S3 gateway endpoint (free) for route table {table_id}: aws ec2 create-vpc-endpoint "
               f"--vpc-id {vpc['id']} --service-name com.amazonaws.{region}.s3 --route-table-ids {table_id}; or give "
               "the subnet a NAT route.")
    else:
        reason = f"the bucket is in {bucket_region}, which VPC endpoints in {region} do not serve"
        fix = f"Give subnet {node['subnet_id']} a NAT route, or use a transfer bucket in {region}."
    return [finding(
        "NO_S3_PATH",
        f"Instance {node['id']} cannot reach S3 for transfer bucket {bucket}: no internet path ({codes}), and {reason}. "
        "Sessions open, but aws_ssm cannot move module files (curl of the presigned URL fails).",
        fix, instance_id=node["id"], route_table_id=table_id, bucket=bucket)]


# --- the caller ----------------------------------------------------------------------------------------


def simulation_principal(caller_arn):
    """What to simulate for the caller: ("user", user ARN), ("role", role name: its ARN with path needs
    iam:GetRole), or (None, why it cannot be simulated)."""
    parts = arn_parts(caller_arn)
    resource = parts["resource"]
    if resource == "root":
        return None, ("the caller is the account's root user, which SimulatePrincipalPolicy does not take; the root "
                      "user may start any session")
    if resource.startswith("user/"):
        return "user", f"arn:{parts['partition']}:iam::{parts['account']}:{resource}"
    if resource.startswith("assumed-role/"):
        return "role", resource.split("/")[1]
    if resource.startswith("role/"):
        return "role", resource.rsplit("/", 1)[-1]
    return None, f"the caller {caller_arn} is not an IAM user or role (a federated or service principal)"


def context_entries(tags):
    """The tag condition keys ssm:StartSession is evaluated with: ssm:resourceTag/<key> and aws:ResourceTag/<key>."""
    entries = []
    for key in sorted(tags or {}):
        for prefix in ("ssm:resourceTag/", "aws:ResourceTag/"):
            entries.append({"ContextKeyName": prefix + key, "ContextKeyValues": [tags[key]], "ContextKeyType": "string"})
    return entries


def tag_keys_of(context_keys):
    """The tag keys (lower case) named by ssm:resourceTag/<key> or aws:ResourceTag/<key> condition keys."""
    keys = set()
    for name in context_keys:
        prefix, _slash, key = str(name).partition("/")
        if key and prefix.lower() in ("ssm:resourcetag", "aws:resourcetag"):
            keys.add(key.lower())
    return keys


def decisions(results):
    """{resource ARN: {"decision", "matched": [policy ids], "missing_context": [...]}} from EvaluationResults
    (per-resource results when AWS gives them, else one per result)."""
    found = {}
    for result in results or []:
        matched = [m.get("SourcePolicyId") for m in result.get("MatchedStatements") or [] if m.get("SourcePolicyId")]
        missing = list(result.get("MissingContextValues") or [])
        specific = result.get("ResourceSpecificResults") or []
        if specific:
            for item in specific:
                found[item.get("EvalResourceName")] = {
                    "decision": item.get("EvalResourceDecision"),
                    "matched": [m.get("SourcePolicyId") for m in item.get("MatchedStatements") or []
                                if m.get("SourcePolicyId")] or matched,
                    "missing_context": list(item.get("MissingContextValues") or []) or missing,
                }
        else:
            found[result.get("EvalResourceName")] = {"decision": result.get("EvalDecision"), "matched": matched,
                                                     "missing_context": missing}
    return found


def caller_findings(node_id, resource_arn, decision, caller_arn, tags):
    """CALLER_ACCESS_DENIED when the simulation does not allow ssm:StartSession on the node."""
    if decision is None or decision.get("decision") == "allowed":
        return []
    verdict = decision.get("decision") or "no decision"
    by = f" by {', '.join(decision['matched'])}" if decision.get("matched") and verdict == "explicitDeny" else ""
    tag_text = ", ".join(f"{k}={v}" for k, v in sorted((tags or {}).items())) or "none"
    fix = (f"Allow ssm:StartSession on {resource_arn} to {caller_arn}: an operator policy whose Resource covers the "
           f"node and whose ssm:resourceTag conditions match its tags ({tag_text}), for example from the "
           "bastionless.ssm.operator_access role")
    fix += f"; and remove the Deny in {', '.join(decision['matched'])}." if by else "."
    return [finding(
        "CALLER_ACCESS_DENIED",
        f"{caller_arn} may not ssm:StartSession on {node_id} ({verdict}{by}; tags {tag_text}): a session fails "
        "with AccessDeniedException.",
        fix, instance_id=node_id, resource_arn=resource_arn, decision=verdict)]


def document_findings(document, resource_arn, decision, caller_arn):
    if decision is None or decision.get("decision") == "allowed":
        return []
    verdict = decision.get("decision") or "no decision"
    return [finding(
        "CALLER_DOCUMENT_DENIED",
        f"{caller_arn} may not ssm:StartSession with document {document} ({verdict}): every session fails with "
        "AccessDeniedException.",
        f"Allow ssm:StartSession on {resource_arn} to {caller_arn} (the session document is a resource of "
        "StartSession, as the node is).",
        document=document, resource_arn=resource_arn, decision=verdict)]


# --- controller ----------------------------------------------------------------------------------------


def plugin_findings(plugin):
    """plugin: {"path": found path or None, "looked": where, "version": str or None, "error": str or None}."""
    if not plugin.get("path"):
        return [finding(
            "PLUGIN_NOT_FOUND",
            f"session-manager-plugin is not found ({plugin.get('looked')}): aws ssm start-session says "
            "\"SessionManagerPlugin is not found\" and the amazon.aws.aws_ssm connection fails to find the executable.",
            PLUGIN_INSTALL, looked=plugin.get("looked"))]
    if not plugin.get("version"):
        return [finding(
            "PLUGIN_VERSION_UNKNOWN",
            f"session-manager-plugin at {plugin['path']} did not print its version: {plugin.get('error')}.",
            "Reinstall the Session Manager plugin; `session-manager-plugin --version` must print a version.",
            path=plugin["path"])]
    return []


def bucket_findings(bucket, state):
    """state: {"exists": bool or None (unknown), "region": str or None, "error": str or None}."""
    if not bucket:
        return []
    if state.get("exists") is False:
        return [finding(
            "TRANSFER_BUCKET_NOT_FOUND",
            f"The transfer bucket {bucket} does not exist: every aws_ssm task fails with \"An error occurred (404) "
            "when calling the HeadBucket operation\".",
            f"Create it (amazon.aws.s3_bucket name={bucket}, or playbooks/provision.yml), or set "
            "ansible_aws_ssm_bucket_name to an existing bucket.",
            bucket=bucket)]
    if state.get("exists") is None:
        return [finding(
            "TRANSFER_BUCKET_NOT_CHECKED",
            f"The transfer bucket {bucket} could not be checked: {state.get('error')}.",
            "Allow s3:ListBucket on the bucket to the caller (aws_ssm needs it too).",
            bucket=bucket)]
    return []


# --- assembling ----------------------------------------------------------------------------------------


def node_result(node_id, kind, ping_status, findings, extra=None):
    findings = dedupe(findings)
    result = {
        "instance_id": node_id,
        "kind": kind,
        "ping_status": ping_status or "NotRegistered",
        "online": ping_status == "Online",
        "findings": findings,
    }
    result.update(extra or {})
    return result


def summarise(nodes, controller_findings):
    by_code = {}
    for item in [f for n in nodes for f in n["findings"]] + list(controller_findings):
        by_code[item["code"]] = by_code.get(item["code"], 0) + 1
    all_findings = [f for n in nodes for f in n["findings"]] + list(controller_findings)
    return {
        "nodes": len(nodes),
        "online": sum(1 for n in nodes if n["online"]),
        "nodes_ok": sum(1 for n in nodes if not n["findings"]),
        "nodes_with_findings": sum(1 for n in nodes if n["findings"]),
        "errors": sum(1 for f in all_findings if f["severity"] == "error"),
        "warnings": sum(1 for f in all_findings if f["severity"] == "warning"),
        "controller_findings": len(controller_findings),
        "by_code": dict(sorted(by_code.items())),
    }


def should_fail(nodes, controller_findings, warnings_too):
    severities = ("error", "warning") if warnings_too else ("error",)
    return any(f["severity"] in severities for f in [f for n in nodes for f in n["findings"]] + list(controller_findings))


def failure_message(summary, warnings_too):
    counted = summary["errors"] + (summary["warnings"] if warnings_too else 0)
    kinds = "errors and warnings" if warnings_too else "errors"
    return (f"Preflight found {counted} finding(s) ({kinds}) on {summary['nodes_with_findings']} of {summary['nodes']} "
            f"node(s) and {summary['controller_findings']} on the controller; see nodes[].findings and controller.findings "
            "for each cause and its fix.")
