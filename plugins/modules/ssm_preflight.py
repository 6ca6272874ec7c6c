#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_preflight
version_added: 0.1.0
short_description: Say why Session Manager nodes are not Online, and how to fix each cause
description:
  - For each node given by O(instance_ids) or O(filters), tells whether it is C(Online) in AWS Systems Manager and,
    if not, which prerequisite fails and how to fix it; also checks the controller's side of a session.
  - Terminated and shutting-down instances are checked when O(instance_ids) lists them (finding
    C(INSTANCE_NOT_RUNNING)) and left out when only O(filters) selected them.
  - B(Agent) - the node never registered, or its connection was lost since a time (C(DescribeInstanceInformation));
    the instance is not running or does not exist.
  - B(IAM) - no instance profile; a profile that is gone or has no role; a role without
    C(AmazonSSMManagedInstanceCore) or an equivalent allowing the agent's core actions (inline and managed policies,
    permissions boundary and explicit C(Deny) evaluated); a role that does not trust C(ec2.amazonaws.com); the
    metadata service disabled; or, with no profile, Default Host Management Configuration off, or on with IMDSv2 not
    required, or its role missing, not trusting C(ssm.amazonaws.com) or lacking the core actions.
  - B(Network) - the route table of the node's subnet (no C(0.0.0.0/0) route, a NAT gateway that exists but is not
    routed to, a NAT gateway that is not available or cannot reach the internet, an internet gateway without a public
    IP); interface endpoints for C(ssm), C(ssmmessages) and C(ec2messages) missing by service, with private DNS off,
    or with security groups that do not admit TCP 443 from the node; the VPC's DNS attributes off; and, when
    O(transfer_bucket) is set, no S3 path for the connection's file transfer. A service whose interface endpoint
    has private DNS on goes to that endpoint even when a NAT gateway exists, as on AWS.
  - B(Controller) - C(session-manager-plugin) found, and its version; the caller's identity (STS
    C(GetCallerIdentity)); whether the caller may C(ssm:StartSession) on each node, by IAM policy simulation
    (C(SimulatePrincipalPolicy)) with the node's tags as C(ssm:resourceTag/<key>) and C(aws:ResourceTag/<key>)
    context, and with the session document. When the caller may not simulate, the module says so plainly
    (finding C(SIMULATION_UNAVAILABLE) with the reason) and goes on.
  - Returns structured findings per node (code, category, severity, message, fix, resources) and a summary. Reads only;
    never changes anything and never reports C(changed). Fails only when asked (O(fail_on_findings)).
  - Finding codes (every one is explained, with its fix, in C(docs/troubleshooting.md)) -
    agent C(INSTANCE_NOT_FOUND), C(INSTANCE_NOT_RUNNING), C(AGENT_NOT_REGISTERED), C(AGENT_CONNECTION_LOST),
    C(AGENT_INACTIVE);
    iam C(IMDS_DISABLED), C(NO_INSTANCE_PROFILE), C(INSTANCE_PROFILE_NOT_FOUND), C(INSTANCE_PROFILE_HAS_NO_ROLE),
    C(ROLE_TRUST_POLICY), C(ROLE_MISSING_PERMISSIONS), C(DHMC_IMDSV2_NOT_REQUIRED), C(DHMC_ROLE_NOT_FOUND),
    C(DHMC_ROLE_TRUST_POLICY), C(DHMC_ROLE_MISSING_PERMISSIONS), C(IAM_NOT_CHECKED);
    network C(NO_ROUTE_TO_INTERNET), C(NAT_ROUTE_MISSING), C(NAT_GATEWAY_NOT_AVAILABLE), C(NAT_GATEWAY_NO_INTERNET),
    C(IGW_WITHOUT_PUBLIC_IP), C(NETWORK_PATH_UNVERIFIED), C(ENDPOINT_MISSING), C(ENDPOINT_NOT_IN_AZ),
    C(ENDPOINT_PRIVATE_DNS_OFF), C(ENDPOINT_SG_NO_443), C(VPC_DNS_SUPPORT_OFF), C(VPC_DNS_HOSTNAMES_OFF),
    C(NO_S3_PATH), C(NETWORK_NOT_CHECKED);
    controller C(PLUGIN_NOT_FOUND), C(PLUGIN_VERSION_UNKNOWN), C(TRANSFER_BUCKET_NOT_FOUND),
    C(TRANSFER_BUCKET_NOT_CHECKED), C(CALLER_ACCESS_DENIED), C(CALLER_DOCUMENT_DENIED), C(SIMULATION_UNAVAILABLE).
  - Severity C(error) means a session to the node fails (C(TargetNotConnected), C(AccessDeniedException), plugin not
    found); C(warning) means sessions open but something still fails (file transfer, package installs from the
    internet) or a check could not run.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  instance_ids:
    description:
      - EC2 instance ids (C(i-...)) and hybrid managed node ids (C(mi-...)) to check.
      - An id that exists nowhere is reported as finding C(INSTANCE_NOT_FOUND), not as an error.
      - Hybrid C(mi-) nodes get only the agent (registration) checks and the caller check.
      - At least one of O(instance_ids) and O(filters) is required. With both, the listed EC2 instances that also match
        O(filters) are checked, plus the listed C(mi-) nodes.
    type: list
    elements: str
  transfer_bucket:
    description:
      - The S3 bucket that the M(amazon.aws.aws_ssm) connection moves module files through
        (C(ansible_aws_ssm_bucket_name)).
      - When set, the module checks that it exists (C(TRANSFER_BUCKET_NOT_FOUND)) and that every node has a network
        path to S3 in the bucket's region (C(NO_S3_PATH)).
    type: str
  check_caller:
    description:
      - Whether to simulate the caller's C(ssm:StartSession) on each node and on O(document) with
        C(iam:SimulatePrincipalPolicy).
    type: bool
    default: true
  document:
    description:
      - The session document the caller's permission is simulated with. C(SSM-SessionManagerRunShell) is what a plain
        shell session (and the M(amazon.aws.aws_ssm) connection) uses.
    type: str
    default: SSM-SessionManagerRunShell
  fail_on_findings:
    description:
      - Fail when any node or the controller has a finding of severity C(error) (and of severity C(warning) too with
        O(fail_on_warnings)). The findings are returned either way.
    type: bool
    default: false
  fail_on_warnings:
    description:
      - With O(fail_on_findings), count C(warning) findings as failures too.
    type: bool
    default: false
attributes:
  check_mode:
    description: The module only reads; check mode runs every check and changes nothing, as a normal run does.
    support: full
  diff_mode:
    description: Nothing is changed, so there is no diff.
    support: none
notes:
  - Run it on the controller (a play on C(localhost), or C(delegate_to) C(localhost)); the plugin check looks at the
    machine the module runs on.
  - Needs read permissions - C(ec2:DescribeInstances), C(ec2:DescribeRouteTables), C(ec2:DescribeNatGateways),
    C(ec2:DescribeInternetGateways), C(ec2:DescribeVpcEndpoints), C(ec2:DescribeSubnets),
    C(ec2:DescribeSecurityGroups), C(ec2:DescribeVpcAttribute), C(ssm:DescribeInstanceInformation),
    C(ssm:GetServiceSetting), C(ssm:ListTagsForResource) (hybrid nodes), C(iam:GetInstanceProfile), C(iam:GetRole),
    C(iam:ListRolePolicies), C(iam:GetRolePolicy), C(iam:ListAttachedRolePolicies), C(iam:GetPolicy),
    C(iam:GetPolicyVersion), C(iam:SimulatePrincipalPolicy) on the caller itself, and C(s3:ListBucket) on
    O(transfer_bucket). A denied IAM or network read becomes an C(IAM_NOT_CHECKED) or C(NETWORK_NOT_CHECKED) finding
    rather than a failure; only C(DescribeInstances) and C(DescribeInstanceInformation) are required.
  - The API calls are batched - one C(DescribeInstances) (in chunks of 100 ids), one paged
    C(DescribeInstanceInformation) per 50 ids, the route tables, NAT and internet gateways, endpoints, subnets and
    security groups once for all the nodes' VPCs, and each instance profile, role and policy once however many nodes
    use it.
  - Policy conditions in the node role's policies count as satisfied; service control policies, session policies and
    VPC endpoint policies are not evaluated. The caller simulation does what C(SimulatePrincipalPolicy) does.
  - A node can stay C(Online) for a while after its role loses a permission (the agent keeps its credentials until
    they expire); the module reports the finding at once.
extends_documentation_fragment:
  - bastionless.ssm.ec2_instances
  - bastionless.ssm.session_manager_plugin
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Why are the lab nodes not Online?
  bastionless.ssm.ssm_preflight:
    filters:
      "tag:ssm-lab": node
  register: __preflight

- name: Show each node's findings
  ansible.builtin.debug:
    msg: "{{ item.instance_id }} {{ item.ping_status }}: {{ item.findings | map(attribute='code') | list }}"
  loop: "{{ __preflight.nodes }}"
  loop_control:
    label: "{{ item.instance_id }}"

- name: Check the nodes of the inventory and the transfer bucket, and fail on any error finding
  bastionless.ssm.ssm_preflight:
    instance_ids: "{{ groups['ssm_nodes'] | map('extract', hostvars, 'instance_id') | list }}"
    transfer_bucket: "{{ bastionless_transfer_bucket }}"
    fail_on_findings: true

- name: Check the port forwarding permission of the caller, with the lab's plugin
  bastionless.ssm.ssm_preflight:
    filters:
      "tag:ssm-lab": node
    document: AWS-StartPortForwardingSession
    plugin: "{{ lookup('ansible.builtin.env', 'AWS_SESSION_MANAGER_PLUGIN') }}"
"""

RETURN = r"""
nodes:
  description: One entry per node, sorted by id.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance or managed node id.
      type: str
      sample: i-0123456789abcdef0
    kind:
      description: V(ec2) for an EC2 instance, V(hybrid) for a C(mi-) managed node.
      type: str
      sample: ec2
    name:
      description: The C(Name) tag (EC2) or the managed node's name (hybrid), or null.
      type: str
      sample: web-1
    state:
      description: The EC2 instance state (V(running), V(stopped) and so on), V(not-found), or null for a hybrid node.
      type: str
      sample: running
    ping_status:
      description: C(Online), C(ConnectionLost), C(Inactive), or C(NotRegistered) when Systems Manager does not list the node.
      type: str
      sample: ConnectionLost
    online:
      description: Whether the node is C(Online).
      type: bool
      sample: false
    last_ping:
      description: When the agent last reached Systems Manager (ISO 8601, UTC), or null.
      type: str
      sample: "2025-01-01T12:00:00+00:00"
    agent_version:
      description: The agent's version, or null.
      type: str
      sample: 3.3.1142.0
    start_session:
      description:
        - The simulated decision for C(ssm:StartSession) by the caller on this node - V(allowed), V(implicitDeny),
          V(explicitDeny) - or null when not simulated.
      type: str
      sample: allowed
    findings:
      description: What is wrong, errors first. Empty when nothing is.
      type: list
      elements: dict
      contains:
        code:
          description: A stable identifier; see the module description and C(docs/troubleshooting.md).
          type: str
          sample: NAT_ROUTE_MISSING
        category:
          description: The prerequisite - V(agent), V(iam), V(network) or V(controller).
          type: str
          sample: network
        severity:
          description: V(error) (a session fails) or V(warning) (sessions open, something else fails; or not checked).
          type: str
          sample: error
        message:
          description: What is wrong, naming the resources involved.
          type: str
          sample: >-
            Route table rtb-0a1b2c3d of subnet subnet-0a1b2c3d (instance i-0123456789abcdef0) has no 0.0.0.0/0
            route, although NAT gateway nat-0a1b2c3d is available in vpc-0a1b2c3d.
        fix:
          description: How to fix it, as a command or a module of this collection.
          type: str
          sample: >-
            aws ec2 create-route --route-table-id rtb-0a1b2c3d --destination-cidr-block 0.0.0.0/0
            --nat-gateway-id nat-0a1b2c3d.
        resources:
          description: The ids the finding is about (for example C(route_table_id), C(nat_gateway_id), C(role)).
          type: dict
          sample: {"instance_id": "i-0123456789abcdef0", "nat_gateway_id": "nat-0a1b2c3d", "route_table_id": "rtb-0a1b2c3d"}
controller:
  description: The controller's side of a session.
  returned: always
  type: dict
  contains:
    plugin:
      description: Whether C(session-manager-plugin) was found (V(found)), its V(path) and V(version), and where the module V(looked).
      type: dict
      sample: {"found": true, "path": "/usr/local/bin/session-manager-plugin", "version": "1.2.707.0", "looked": "..."}
    caller:
      description: The caller's identity from STS C(GetCallerIdentity) - V(arn), V(account), V(user_id).
      type: dict
      sample: {"arn": "arn:aws:iam::123456789012:user/alice", "account": "123456789012", "user_id": "AIDA..."}
    simulation:
      description:
        - V(status) is V(simulated), V(not_simulated) (V(reason) says why, plainly) or V(skipped) (O(check_caller=false)).
        - V(principal_arn) is what was simulated; V(document) has the document's V(name), V(arn) and V(decision).
      type: dict
      sample: {"status": "not_simulated", "reason": "the caller may not iam:SimulatePrincipalPolicy (AccessDenied: ...)"}
    transfer_bucket:
      description: The O(transfer_bucket) V(name), whether it V(exists) (null when unknown) and its V(region); null when not set.
      type: dict
      sample: {"name": "my-transfer", "exists": true, "region": "us-east-1"}
    findings:
      description: Findings about the controller (plugin, bucket, document, simulation), shaped as the nodes' findings.
      type: list
      elements: dict
      sample: []
summary:
  description: Counts.
  returned: always
  type: dict
  contains:
    nodes:
      description: Nodes checked.
      type: int
      sample: 3
    online:
      description: Nodes that are C(Online).
      type: int
      sample: 2
    nodes_ok:
      description: Nodes without any finding.
      type: int
      sample: 2
    nodes_with_findings:
      description: Nodes with at least one finding.
      type: int
      sample: 1
    errors:
      description: Findings of severity V(error), on nodes and the controller.
      type: int
      sample: 1
    warnings:
      description: Findings of severity V(warning), on nodes and the controller.
      type: int
      sample: 0
    controller_findings:
      description: Findings about the controller.
      type: int
      sample: 0
    by_code:
      description: How many times each finding code was found.
      type: dict
      sample: {"NAT_ROUTE_MISSING": 1}
"""

import datetime
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

try:
    import botocore
except ImportError:
    pass  # Handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list

from ansible_collections.bastionless.ssm.plugins.module_utils import _plugin_path
from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight as pf

ID_CHUNK = 100  # instance ids per DescribeInstances filter
INFO_CHUNK = 50  # ids per DescribeInstanceInformation filter
VPC_CHUNK = 100  # VPC ids per Describe* filter
SIM_CHUNK = 50  # resource ARNs per SimulatePrincipalPolicy call


class PreflightError(AnsibleAWSError):
    pass


class PreflightErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = PreflightError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code("NoSuchEntity")


def chunks(items: List[str], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def error_text(error: Exception) -> str:
    """'Code: message' of an AWS error (the botocore exception behind an AnsibleAWSError included)."""
    inner = getattr(error, "exception", None) or error
    response = getattr(inner, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return f"{type(inner).__name__}: {inner}"


def error_code(error: Exception) -> Optional[str]:
    inner = getattr(error, "exception", None) or error
    response = getattr(inner, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


# --- AWS calls (one API each, with retries) --------------------------------------------------------------


@PreflightErrorHandler.common_error_handler("describe instances")
@AWSRetry.jittered_backoff()
def describe_instances(ec2, filters: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters).build_full_result()
    return [instance for reservation in pages["Reservations"] for instance in reservation["Instances"]]


@PreflightErrorHandler.common_error_handler("describe instance information")
@AWSRetry.jittered_backoff()
def describe_instance_information(ssm, ids: List[str]) -> List[Dict[str, Any]]:
    paginator = ssm.get_paginator("describe_instance_information")
    pages = paginator.paginate(Filters=[{"Key": "InstanceIds", "Values": ids}], PaginationConfig={"PageSize": 50})
    return pages.build_full_result()["InstanceInformationList"]


@PreflightErrorHandler.common_error_handler("describe a VPC's resources")
@AWSRetry.jittered_backoff()
def describe_paged(ec2, method: str, key: str, filters: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    # DescribeNatGateways names its filter parameter Filter, the others Filters.
    argument = "Filter" if method == "describe_nat_gateways" else "Filters"
    return ec2.get_paginator(method).paginate(**{argument: filters}).build_full_result()[key]


@PreflightErrorHandler.common_error_handler("describe a VPC attribute")
@AWSRetry.jittered_backoff()
def describe_vpc_attribute(ec2, vpc_id: str, attribute: str) -> bool:
    answer = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=attribute)
    key = attribute[0].upper() + attribute[1:]
    return bool((answer.get(key) or {}).get("Value"))


@PreflightErrorHandler.list_error_handler("get instance profile")
@AWSRetry.jittered_backoff()
def get_instance_profile(iam, name: str) -> Optional[Dict[str, Any]]:
    return iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]


@PreflightErrorHandler.list_error_handler("get role")
@AWSRetry.jittered_backoff()
def get_role(iam, name: str) -> Optional[Dict[str, Any]]:
    return iam.get_role(RoleName=name)["Role"]


@PreflightErrorHandler.common_error_handler("list role policies")
@AWSRetry.jittered_backoff()
def list_role_policies(iam, name: str) -> List[str]:
    return iam.get_paginator("list_role_policies").paginate(RoleName=name).build_full_result()["PolicyNames"]


@PreflightErrorHandler.common_error_handler("get role policy")
@AWSRetry.jittered_backoff()
def get_role_policy(iam, role: str, policy: str) -> Any:
    return iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]


@PreflightErrorHandler.common_error_handler("list attached role policies")
@AWSRetry.jittered_backoff()
def list_attached_role_policies(iam, name: str) -> List[str]:
    pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=name).build_full_result()
    return [p["PolicyArn"] for p in pages["AttachedPolicies"]]


@PreflightErrorHandler.common_error_handler("get managed policy")
@AWSRetry.jittered_backoff()
def get_policy_document(iam, arn: str) -> Any:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]


@PreflightErrorHandler.common_error_handler("get service setting")
@AWSRetry.jittered_backoff()
def get_service_setting(ssm, setting_id: str) -> Dict[str, Any]:
    return ssm.get_service_setting(SettingId=setting_id)["ServiceSetting"]


@PreflightErrorHandler.common_error_handler("list managed node tags")
@AWSRetry.jittered_backoff()
def list_managed_node_tags(ssm, node_id: str) -> Dict[str, str]:
    return pf.tags_dict(ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=node_id)["TagList"])


@PreflightErrorHandler.common_error_handler("get caller identity")
@AWSRetry.jittered_backoff()
def get_caller_identity(sts) -> Dict[str, Any]:
    return sts.get_caller_identity()


@PreflightErrorHandler.common_error_handler("simulate principal policy")
@AWSRetry.jittered_backoff()
def simulate_principal_policy(iam, principal_arn: str, resources: List[str],
                              context: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    kwargs = {"PolicySourceArn": principal_arn, "ActionNames": ["ssm:StartSession"], "ResourceArns": resources}
    if context:
        kwargs["ContextEntries"] = context
    pages = iam.get_paginator("simulate_principal_policy").paginate(**kwargs).build_full_result()
    return pages["EvaluationResults"]


@AWSRetry.jittered_backoff(catch_extra_error_codes=["SlowDown"])
def head_bucket(s3, bucket: str) -> Dict[str, Any]:
    return s3.head_bucket(Bucket=bucket)


# --- reading what the checks need ----------------------------------------------------------------------


def select_instances(ec2, ids: List[str], filters: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The EC2 instances to check: the listed ones (any state) and/or those the filters match (not terminated)."""
    found: Dict[str, Dict[str, Any]] = {}
    boto_filters = ansible_dict_to_boto3_filter_list(filters) if filters else []
    if ids:
        for chunk in chunks(sorted(set(ids)), ID_CHUNK):
            for instance in describe_instances(ec2, boto_filters + [{"Name": "instance-id", "Values": chunk}]):
                found[instance["InstanceId"]] = instance
    elif filters:
        for instance in describe_instances(ec2, boto_filters):
            if (instance.get("State") or {}).get("Name") not in ("terminated", "shutting-down"):
                found[instance["InstanceId"]] = instance
    return [found[i] for i in sorted(found)]


def read_instance_information(ssm, node_ids: List[str]) -> Dict[str, Dict[str, Any]]:
    rows: Dict[str, Dict[str, Any]] = {}
    for chunk in chunks(sorted(set(node_ids)), INFO_CHUNK):
        for row in describe_instance_information(ssm, chunk):
            rows[row["InstanceId"]] = row
    return rows


def read_vpcs(ec2, vpc_ids: List[str], region: str) -> Dict[str, Dict[str, Any]]:
    """{vpc id: facts for _preflight.network_findings, or {"id", "error"} when they could not be read}."""
    vpcs: Dict[str, Dict[str, Any]] = {v: {"id": v, "route_tables": [], "nat_gateways": [], "internet_gateways": [],
                                           "endpoints": [], "subnets": {}, "security_groups": {}} for v in vpc_ids}
    try:
        for chunk in chunks(sorted(vpc_ids), VPC_CHUNK):
            by_vpc = [{"Name": "vpc-id", "Values": chunk}]
            for table in describe_paged(ec2, "describe_route_tables", "RouteTables", by_vpc):
                vpcs[table["VpcId"]]["route_tables"].append(table)
            for nat in describe_paged(ec2, "describe_nat_gateways", "NatGateways", by_vpc):
                if nat.get("VpcId") in vpcs:
                    vpcs[nat["VpcId"]]["nat_gateways"].append(nat)
            for igw in describe_paged(ec2, "describe_internet_gateways", "InternetGateways",
                                      [{"Name": "attachment.vpc-id", "Values": chunk}]):
                for attachment in igw.get("Attachments") or []:
                    if attachment.get("VpcId") in vpcs:
                        vpcs[attachment["VpcId"]]["internet_gateways"].append(igw)
            for endpoint in describe_paged(ec2, "describe_vpc_endpoints", "VpcEndpoints", by_vpc):
                if endpoint.get("VpcId") in vpcs:
                    vpcs[endpoint["VpcId"]]["endpoints"].append(endpoint)
            for subnet in describe_paged(ec2, "describe_subnets", "Subnets", by_vpc):
                vpcs[subnet["VpcId"]]["subnets"][subnet["SubnetId"]] = subnet
            for group in describe_paged(ec2, "describe_security_groups", "SecurityGroups", by_vpc):
                vpc = vpcs.get(group.get("VpcId"))
                if vpc is not None:
                    vpc["security_groups"][group["GroupId"]] = group
                    if group.get("GroupName") == "default":
                        vpc["default_group_id"] = group["GroupId"]
        for vpc_id, vpc in vpcs.items():
            vpc["dns_support"] = describe_vpc_attribute(ec2, vpc_id, "enableDnsSupport")
            vpc["dns_hostnames"] = describe_vpc_attribute(ec2, vpc_id, "enableDnsHostnames")
    except PreflightError as e:
        return {v: {"id": v, "error": error_text(e)} for v in vpc_ids}
    return vpcs


class IamReader:
    """Instance profiles, roles and policies, each read once however many nodes use it."""

    def __init__(self, iam):
        self.iam = iam
        self._profiles: Dict[str, Dict[str, Any]] = {}
        self._roles: Dict[str, Optional[Dict[str, Any]]] = {}
        self._policies: Dict[str, Any] = {}

    def policy(self, arn: str) -> Any:
        if arn not in self._policies:
            if pf.known_core_policy(arn):
                self._policies[arn] = {"Statement": [{"Effect": "Allow", "Action": list(pf.CORE_ACTIONS),
                                                      "Resource": "*"}]}
            else:
                self._policies[arn] = get_policy_document(self.iam, arn)
        return self._policies[arn]

    def role(self, name: str) -> Optional[Dict[str, Any]]:
        """{name, arn, trust, documents, boundary, boundary_arn} or {name, error}; None when it does not exist."""
        if name not in self._roles:
            try:
                role = get_role(self.iam, name)
                if role is None:
                    self._roles[name] = None
                else:
                    documents = [get_role_policy(self.iam, name, p) for p in list_role_policies(self.iam, name)]
                    documents += [self.policy(arn) for arn in list_attached_role_policies(self.iam, name)]
                    boundary_arn = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
                    self._roles[name] = {
                        "name": role["RoleName"], "arn": role["Arn"], "trust": role.get("AssumeRolePolicyDocument"),
                        "documents": documents, "boundary_arn": boundary_arn,
                        "boundary": self.policy(boundary_arn) if boundary_arn else None,
                    }
            except PreflightError as e:
                self._roles[name] = {"name": name, "error": error_text(e)}
        return self._roles[name]

    def profile(self, reference: Dict[str, Any]) -> Dict[str, Any]:
        """What _preflight.iam_findings needs about the instance's IamInstanceProfile ({Arn, Id})."""
        arn = reference.get("Arn")
        if arn not in self._profiles:
            try:
                found = get_instance_profile(self.iam, pf.name_from_arn(arn))
            except PreflightError as e:
                self._profiles[arn] = {"arn": arn, "error": error_text(e)}
            else:
                if found is None or found.get("Arn") != arn:
                    self._profiles[arn] = {"arn": arn, "found": False}
                else:
                    roles = found.get("Roles") or []
                    self._profiles[arn] = {"arn": arn, "found": True, "id": found.get("InstanceProfileId"),
                                           "role": self.role(roles[0]["RoleName"]) if roles else None}
        profile = dict(self._profiles[arn])
        # EC2 keeps the profile's id (AIPA...): a profile deleted and re-created under the same name is another one.
        attached_id = reference.get("Id") or ""
        if profile.get("found") and attached_id.startswith("AIPA") and attached_id != profile.get("id"):
            profile["found"] = False
        return profile


def read_dhmc(ssm, iam_reader: IamReader) -> Dict[str, Any]:
    try:
        value = get_service_setting(ssm, pf.DHMC_SETTING).get("SettingValue")
    except PreflightError as e:
        return {"error": error_text(e)}
    if value in (None, "", "$None"):
        return {"enabled": False, "value": value}
    role = iam_reader.role(value.rsplit("/", 1)[-1])
    if role is not None and role.get("error"):
        return {"error": role["error"]}
    return {"enabled": True, "value": value, "role": role}


def find_plugin(module, configured: Optional[str]) -> Dict[str, Any]:
    """Where session-manager-plugin is (_plugin_path.find, the collection's one lookup), and its version."""
    found, looked = _plugin_path.find(configured)
    result = {"found": bool(found), "path": found, "looked": looked, "version": None}
    if found:
        rc, out, err = module.run_command([found, "--version"])
        version = (out or "").strip().splitlines()[0].strip() if (out or "").strip() else ""
        if rc == 0 and version:
            result["version"] = version
        else:
            result["error"] = f"exit {rc}: {(err or out or '').strip()[:200]}"
    return result


def read_bucket(s3, bucket: str) -> Dict[str, Any]:
    try:
        answer = head_bucket(s3, bucket)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        code = error_code(e)
        headers = (getattr(e, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if code in ("404", "NoSuchBucket", "NotFound"):
            return {"name": bucket, "exists": False, "region": None}
        if code in ("301", "PermanentRedirect") and headers.get("x-amz-bucket-region"):
            return {"name": bucket, "exists": True, "region": headers["x-amz-bucket-region"]}
        return {"name": bucket, "exists": None, "region": headers.get("x-amz-bucket-region"), "error": error_text(e)}
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return {"name": bucket, "exists": True, "region": answer.get("BucketRegion") or headers.get("x-amz-bucket-region")}


def simulate_nodes(iam, principal: str, targets: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """ssm:StartSession decisions per node, in few calls: one pass over every node without context tells (in
    MissingContextValues) which tag keys the policies look at; nodes are then simulated again, grouped by their
    values of just those keys."""
    arns = {node_id: target["arn"] for node_id, target in targets.items()}
    found: Dict[str, Dict[str, Any]] = {}
    for chunk in chunks(sorted(arns), SIM_CHUNK):
        found.update(pf.decisions(simulate_principal_policy(iam, principal, [arns[n] for n in chunk], [])))
    result = {node_id: found.get(arns[node_id]) or found.get("*") for node_id in arns}
    keys = pf.tag_keys_of(k for d in result.values() if d for k in d["missing_context"])
    groups: Dict[Any, List[str]] = {}
    for node_id, target in targets.items():
        relevant = tuple(sorted((k, v) for k, v in target["tags"].items() if k.lower() in keys))
        if relevant:
            groups.setdefault(relevant, []).append(node_id)
    for relevant, node_ids in sorted(groups.items()):
        context = pf.context_entries(dict(relevant))
        for chunk in chunks(node_ids, SIM_CHUNK):
            found = pf.decisions(simulate_principal_policy(iam, principal, [arns[n] for n in chunk], context))
            for node_id in chunk:
                result[node_id] = found.get(arns[node_id]) or found.get("*")
    return result


def simulate_caller(module, iam, caller_arn: str, partition: str, account: str,
                    targets: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Simulate ssm:StartSession for the caller on each target ({node id: {arn, tags}}) and on the document.
    Returns {"status", "principal_arn", "reason", "document", "decisions": {node id: decision}}."""
    region = module.region
    document = module.params["document"]
    doc_arn = pf.document_arn(document, partition, region, account)
    result = {"status": "not_simulated", "principal_arn": None, "reason": None,
              "document": {"name": document, "arn": doc_arn, "decision": None}, "decisions": {}}
    kind, value = pf.simulation_principal(caller_arn)
    if kind is None:
        result["reason"] = value
        return result
    principal = value
    if kind == "role":
        try:
            role = get_role(iam, value)
        except PreflightError as e:
            result["reason"] = f"the caller's role {value} could not be read to simulate it ({error_text(e)})"
            return result
        if role is None:
            result["reason"] = f"the caller's role {value} does not exist in IAM"
            return result
        principal = role["Arn"]
    result["principal_arn"] = principal
    try:
        result["decisions"] = simulate_nodes(iam, principal, targets)
        found = pf.decisions(simulate_principal_policy(iam, principal, [doc_arn], []))
        result["document"]["decision"] = found.get(doc_arn) or found.get("*")
    except PreflightError as e:
        code = error_code(e)
        if code in ("AccessDenied", "AccessDeniedException"):
            reason = f"the caller may not iam:SimulatePrincipalPolicy on {principal} ({error_text(e)})"
        elif code == "NoSuchEntity":
            reason = f"IAM does not know the principal {principal} ({error_text(e)})"
        else:
            reason = f"SimulatePrincipalPolicy failed for {principal} ({error_text(e)})"
        return dict(result, reason=reason, decisions={}, document=dict(result["document"], decision=None))
    except Exception as e:  # pylint: disable=broad-except
        # An endpoint that does not implement the call at all (some AWS stand-ins) answers with something
        # botocore cannot parse; that is "could not simulate" too, not a failure of the preflight.
        first_line = (str(e).splitlines() or [""])[0][:160]
        reason = f"SimulatePrincipalPolicy is not available at this endpoint ({type(e).__name__}: {first_line})"
        return dict(result, reason=reason, decisions={}, document=dict(result["document"], decision=None))
    result["status"] = "simulated"
    return result


# --- the module ----------------------------------------------------------------------------------------


def network_facts(instance: Dict[str, Any]) -> Dict[str, Any]:
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


def not_checked_network(node_id: str, vpc: Dict[str, Any]) -> Dict[str, Any]:
    return pf.finding(
        "NETWORK_NOT_CHECKED",
        f"The network path of instance {node_id} could not be read ({vpc['id']}): {vpc['error']}.",
        "Allow ec2:DescribeRouteTables, ec2:DescribeNatGateways, ec2:DescribeInternetGateways, "
        "ec2:DescribeVpcEndpoints, ec2:DescribeSubnets, ec2:DescribeSecurityGroups and ec2:DescribeVpcAttribute "
        "to the caller.",
        instance_id=node_id, vpc_id=vpc["id"])


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    ids = params["instance_ids"] or []
    bad = pf.invalid_ids(ids)
    if bad:
        module.fail_json(msg=(f"instance_ids: {', '.join(map(str, bad))} is not an EC2 instance id (i-0123456789abcdef0) "
                              "or a managed node id (mi-0123456789abcdef0); fix or remove it."))
    region = module.region
    ec2 = module.client("ec2")
    ssm = module.client("ssm")
    iam = module.client("iam")
    now = datetime.datetime.now(datetime.timezone.utc)

    ec2_ids = [i for i in ids if not pf.is_hybrid(i)]
    hybrid_ids = sorted({i for i in ids if pf.is_hybrid(i)})
    instances = select_instances(ec2, ec2_ids, params["filters"]) if (ec2_ids or not ids) else []
    by_id = {i["InstanceId"]: i for i in instances}
    missing = sorted({i for i in ec2_ids if i not in by_id})
    if params["filters"] and missing:  # listed ids that exist but do not match the filters are not checked
        exist = {i["InstanceId"] for i in select_instances(ec2, missing, None)}
        missing = [i for i in missing if i not in exist]
    infos = read_instance_information(ssm, list(by_id) + hybrid_ids + missing)

    caller = get_caller_identity(module.client("sts"))
    caller_arn = caller.get("Arn")
    partition = pf.arn_parts(caller_arn)["partition"]
    account = caller.get("Account")

    running = [i for i in instances if (i.get("State") or {}).get("Name") == "running"]
    vpcs = read_vpcs(ec2, sorted({i["VpcId"] for i in running if i.get("VpcId")}), region) if running else {}
    iam_reader = IamReader(iam)
    dhmc = None
    if any(not i.get("IamInstanceProfile") for i in running):
        dhmc = read_dhmc(ssm, iam_reader)

    bucket = None
    if params["transfer_bucket"]:
        bucket = read_bucket(module.client("s3"), params["transfer_bucket"])

    nodes: List[Dict[str, Any]] = []
    targets: Dict[str, Dict[str, Any]] = {}
    for instance in instances:
        node_id = instance["InstanceId"]
        tags = pf.tags_dict(instance.get("Tags"))
        arn = pf.node_arn(node_id, partition, region, account)
        targets[node_id] = {"arn": arn, "tags": tags}
        findings = pf.instance_findings(node_id, instance)
        causes: List[Dict[str, Any]] = []
        if instance in running:
            profile = iam_reader.profile(instance["IamInstanceProfile"]) if instance.get("IamInstanceProfile") else None
            causes += pf.iam_findings(instance, profile, dhmc, arn)
            facts = network_facts(instance)
            vpc = vpcs.get(facts["vpc_id"])
            info = infos.get(node_id)
            online = (info or {}).get("PingStatus") == "Online"
            if vpc is not None and vpc.get("error"):
                causes.append(not_checked_network(node_id, vpc))
            elif vpc is not None:
                causes += pf.network_findings(facts, vpc, region, online)
                if bucket:
                    causes += pf.s3_findings(facts, vpc, region, bucket["name"], bucket.get("region"))
        has_causes = any(f["severity"] == "error" for f in causes + findings)
        info = infos.get(node_id)
        findings += pf.agent_findings(node_id, info, now, has_causes) if not findings or info else []
        nodes.append(pf.node_result(node_id, "ec2", (info or {}).get("PingStatus"), findings + causes, {
            "name": tags.get("Name"), "state": (instance.get("State") or {}).get("Name"),
            "last_ping": pf.iso((info or {}).get("LastPingDateTime")), "agent_version": (info or {}).get("AgentVersion"),
        }))
    for node_id in missing:
        info = infos.get(node_id)
        findings = pf.instance_findings(node_id, None) if info is None else []
        nodes.append(pf.node_result(node_id, "ec2", (info or {}).get("PingStatus"), findings, {
            "name": None, "state": "not-found", "last_ping": pf.iso((info or {}).get("LastPingDateTime")),
            "agent_version": (info or {}).get("AgentVersion")}))
    for node_id in hybrid_ids:
        info = infos.get(node_id)
        nodes.append(pf.node_result(node_id, "hybrid", (info or {}).get("PingStatus"),
                                    pf.agent_findings(node_id, info, now, False), {
            "name": (info or {}).get("Name"), "state": None, "last_ping": pf.iso((info or {}).get("LastPingDateTime")),
            "agent_version": (info or {}).get("AgentVersion")}))
        if info is not None and params["check_caller"]:
            try:
                tags = list_managed_node_tags(ssm, node_id)
            except PreflightError:
                tags = {}
            targets[node_id] = {"arn": pf.node_arn(node_id, partition, region, account), "tags": tags}

    controller_findings: List[Dict[str, Any]] = []
    plugin = find_plugin(module, params["plugin"])
    controller_findings += pf.plugin_findings(plugin)
    if bucket:
        controller_findings += pf.bucket_findings(bucket["name"], bucket)
    if params["check_caller"] and targets:
        simulation = simulate_caller(module, iam, caller_arn, partition, account, targets)
    elif params["check_caller"]:
        simulation = {"status": "skipped", "reason": "no node to simulate for", "principal_arn": None,
                      "document": None, "decisions": {}}
    else:
        simulation = {"status": "skipped", "reason": "check_caller is false", "principal_arn": None,
                      "document": None, "decisions": {}}
    decisions = simulation.pop("decisions")
    if simulation["status"] == "not_simulated":
        controller_findings.append(pf.finding(
            "SIMULATION_UNAVAILABLE",
            f"Could not simulate whether {caller_arn} may ssm:StartSession: {simulation['reason']}.",
            "Allow iam:SimulatePrincipalPolicy (and iam:GetRole, for a role) on the caller's own ARN to the caller, or "
            "read its policies by hand (docs/operator-access.md); a session refused for this shows "
            "AccessDeniedException.",
            caller_arn=caller_arn))
    elif simulation["status"] == "simulated":
        controller_findings += pf.document_findings(simulation["document"]["name"], simulation["document"]["arn"],
                                                    simulation["document"]["decision"], caller_arn)
    for node in nodes:
        decision = decisions.get(node["instance_id"])
        node["start_session"] = (decision or {}).get("decision")
        if decision is not None:
            target = targets[node["instance_id"]]
            node["findings"] = pf.dedupe(node["findings"] + pf.caller_findings(
                node["instance_id"], target["arn"], decision, caller_arn, target["tags"]))
    if simulation.get("document") and simulation["document"].get("decision"):
        simulation["document"]["decision"] = simulation["document"]["decision"]["decision"]

    nodes.sort(key=lambda n: n["instance_id"])
    controller_findings = pf.dedupe(controller_findings)
    summary = pf.summarise(nodes, controller_findings)
    result = {
        "changed": False,
        "nodes": nodes,
        "controller": {
            "plugin": plugin,
            "caller": {"arn": caller_arn, "account": account, "user_id": caller.get("UserId")},
            "simulation": simulation,
            "transfer_bucket": bucket,
            "findings": controller_findings,
        },
        "summary": summary,
    }
    if not nodes:
        module.warn("No instance matched instance_ids/filters; nothing was checked but the controller.")
    if params["fail_on_findings"] and pf.should_fail(nodes, controller_findings, params["fail_on_warnings"]):
        module.fail_json(msg=pf.failure_message(summary, params["fail_on_warnings"]), **result)
    module.exit_json(**result)


def main() -> None:
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str"),
        filters=dict(type="dict"),
        transfer_bucket=dict(type="str"),
        plugin=dict(type="path"),
        check_caller=dict(type="bool", default=True),
        document=dict(type="str", default="SSM-SessionManagerRunShell"),
        fail_on_findings=dict(type="bool", default=False),
        fail_on_warnings=dict(type="bool", default=False),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        required_one_of=[["instance_ids", "filters"]],
        supports_check_mode=True,
    )
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
