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

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight as pf
from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight_readers as readers
from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn


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
    instances = readers.select_instances(ec2, ec2_ids, params["filters"]) if (ec2_ids or not ids) else []
    by_id = {i["InstanceId"]: i for i in instances}
    missing = sorted({i for i in ec2_ids if i not in by_id})
    if params["filters"] and missing:  # listed ids that exist but do not match the filters are not checked
        exist = {i["InstanceId"] for i in readers.select_instances(ec2, missing, None)}
        missing = [i for i in missing if i not in exist]
    infos = readers.read_instance_information(ssm, list(by_id) + hybrid_ids + missing)

    caller = readers.get_caller_identity(module.client("sts"))
    caller_arn = caller.get("Arn")
    partition = pf.arn_parts(caller_arn)["partition"]
    account = caller.get("Account")

    running = [i for i in instances if (i.get("State") or {}).get("Name") == "running"]
    vpcs = readers.read_vpcs(ec2, sorted({i["VpcId"] for i in running if i.get("VpcId")})) if running else {}
    iam_reader = readers.IamReader(iam)
    dhmc = None
    if any(not i.get("IamInstanceProfile") for i in running):
        dhmc = readers.read_dhmc(ssm, iam_reader)

    bucket = None
    if params["transfer_bucket"]:
        bucket = readers.read_bucket(module.client("s3"), params["transfer_bucket"])

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
            facts = pf.network_facts(instance)
            vpc = vpcs.get(facts["vpc_id"])
            info = infos.get(node_id)
            online = (info or {}).get("PingStatus") == "Online"
            if vpc is not None and vpc.get("error"):
                causes.append(pf.not_checked_network(node_id, vpc))
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
                tags = readers.list_managed_node_tags(ssm, node_id)
            except readers.PreflightError:
                tags = {}
            targets[node_id] = {"arn": pf.node_arn(node_id, partition, region, account), "tags": tags}

    controller_findings: List[Dict[str, Any]] = []
    plugin = readers.find_plugin(module, params["plugin"])
    controller_findings += pf.plugin_findings(plugin)
    if bucket:
        controller_findings += pf.bucket_findings(bucket["name"], bucket)
    if params["check_caller"] and targets:
        simulation = readers.simulate_caller(iam, caller_arn, partition, region, account, params["document"], targets)
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
        warn("No instance matched instance_ids/filters; nothing was checked but the controller.")
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
