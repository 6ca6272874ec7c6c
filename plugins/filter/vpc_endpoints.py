# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The vpc_endpoints role's computations: its inputs and subnets checked, each subnet's path to a NAT gateway and
what the role says of it, the VPC's DNS attributes, the endpoints' security group rules, what each way to Session
Manager (a NAT gateway, interface endpoints, both) costs a month in a region with the lines the role prints, and
what is still not as asked after the apply phase. The role's tasks only render what these return. Each filter's
documentation is in the .yml file of its name beside this one."""

from __future__ import annotations

import re

from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import VPC_ID
from ansible_collections.bastionless.ssm.plugins.plugin_utils._role_inputs import role_inputs

HOURS_PER_MONTH = 730


def cost_estimate(price: dict, subnets: dict, nat_paths: dict, services: list, mode: str = "endpoints",
                  nat_gateway_count: int = 0, monthly_gb=0, s3_gateway: bool = True, region: str = "",
                  prices_taken: str = "", hours: int = HOURS_PER_MONTH) -> dict:
    """The monthly cost of each mode, and what the chosen one adds to the bill.

    ``price``: the region's nat_gateway_hour, nat_gateway_gb, interface_endpoint_hour and interface_endpoint_gb (USD).
    ``subnets``: subnet id to availability zone. ``nat_paths``: subnet id to {ok, nat_gateway_id} (the NAT path of
    each subnet). ``services``: the interface endpoints (repeats count once). NAT gateways: as many as
    ``nat_gateway_count``, else those the subnets already use when every subnet has a NAT path, else one per zone
    (the highly available layout). The role never creates a NAT gateway, so with one in place the nat mode adds
    nothing."""
    zones = len(set(subnets.values()))
    nat_ok = bool(nat_paths) and all(path.get("ok") for path in nat_paths.values())
    in_use = len({path.get("nat_gateway_id") for path in nat_paths.values() if path.get("ok")})
    nats = nat_gateway_count if nat_gateway_count > 0 else (in_use if nat_ok else zones)
    interfaces = len(set(services))
    hours = int(hours)
    nat_cost = round(nats * price["nat_gateway_hour"] * hours + monthly_gb * price["nat_gateway_gb"], 2)
    endpoint_cost = round(interfaces * zones * price["interface_endpoint_hour"] * hours
                          + monthly_gb * price["interface_endpoint_gb"], 2)
    return {
        "region": region,
        "currency": "USD",
        "prices_taken": prices_taken,
        "hours_per_month": hours,
        "monthly_gb": monthly_gb,
        "availability_zones": zones,
        "nat_gateway_present": nat_ok,
        "mode": mode,
        "modes": {
            "nat": {"monthly": float(nat_cost),
                    "detail": f"{nats} NAT gateway(s) x ${price['nat_gateway_hour']}/h x {hours} h + {monthly_gb} GB "
                              f"x ${price['nat_gateway_gb']}"},
            "endpoints": {"monthly": float(endpoint_cost),
                          "detail": f"{interfaces} interface endpoints x {zones} AZ(s) x "
                                    f"${price['interface_endpoint_hour']}/h x {hours} h + {monthly_gb} GB x "
                                    f"${price['interface_endpoint_gb']}"
                                    + ("; s3 gateway endpoint free" if s3_gateway else "")},
            "both": {"monthly": round(nat_cost + endpoint_cost, 2),
                     "detail": "NAT gateways and interface endpoints side by side; SSM traffic takes the endpoints"},
        },
        "added_monthly": 0.0 if mode == "nat" else float(endpoint_cost),
    }


def cost_lines(estimate: dict) -> list:
    """The estimate as the role prints it: a heading, one line per mode, and what the chosen mode adds."""
    modes = estimate["modes"]
    present = "  (present: SSM adds nothing)" if estimate["nat_gateway_present"] else ""
    return [
        f"Monthly cost estimate, {estimate['region']}, USD, prices of {estimate['prices_taken']}:",
        f"  nat       ${modes['nat']['monthly']:8.2f}  {modes['nat']['detail']}{present}",
        f"  endpoints ${modes['endpoints']['monthly']:8.2f}  {modes['endpoints']['detail']}",
        f"  both      ${modes['both']['monthly']:8.2f}  {modes['both']['detail']}",
        f"Chosen: {estimate['mode']}; it adds ${float(estimate['added_monthly']):.2f} a month to what exists.",
    ]


def _table_of(subnet: str, route_tables: list) -> dict:
    """The route table a subnet uses: the one associated with it, else the VPC's main table ({} when none)."""
    main = {}
    for table in route_tables:
        for association in table.get("associations") or ():
            if association.get("subnet_id") == subnet:
                return table
            if association.get("main"):
                main = table
    return main


def nat_paths(subnets: dict, route_tables: list, nat_gateways: list, order=None) -> dict:
    """Each subnet's path to a NAT gateway: subnet id to availability_zone, route_table_id, nat_gateway_id (of its
    0.0.0.0/0 route, "" when there is none), nat_gateway_state ("missing" for a gateway that does not exist, "" when
    there is no such route) and ok (a route to an available NAT gateway).

    ``subnets``: subnet id to availability zone. ``route_tables``: the VPC's route tables and ``nat_gateways`` its
    NAT gateways, as amazon.aws.ec2_vpc_route_table_info and ec2_vpc_nat_gateway_info return them. ``order``: the
    subnet ids in the order to list them (default: that of ``subnets``)."""
    states = {gateway.get("nat_gateway_id"): gateway.get("state") for gateway in nat_gateways or ()}
    paths = {}
    for subnet in order or subnets:
        zone = subnets[subnet]
        table = _table_of(subnet, route_tables or [])
        nat = next((route.get("nat_gateway_id") for route in table.get("routes") or ()
                    if route.get("destination_cidr_block") == "0.0.0.0/0" and route.get("nat_gateway_id")), "")
        paths[subnet] = {"availability_zone": zone, "route_table_id": table.get("id", ""), "nat_gateway_id": nat,
                         "nat_gateway_state": states.get(nat, "missing") if nat else "",
                         "ok": bool(nat) and states.get(nat) == "available"}
    return paths


DEFAULTS = {"region": "", "vpc_id": "", "subnet_ids": []}
DNS_SUPPORT = "enableDnsSupport"
DNS_HOSTNAMES = "enableDnsHostnames"


def _one(items, single: str, plural: str) -> str:
    return single if len(items) == 1 else plural


def problems(inputs: dict) -> list:
    """Every problem of the role's inputs that needs no AWS call, one sentence each naming the variable and the fix.
    ``inputs``: the role's ``region`` (already resolved), ``vpc_id`` and ``subnet_ids``."""
    given = role_inputs(inputs, DEFAULTS, "vpc_endpoints_problems")
    vpc_id, subnets = given["vpc_id"], list(given["subnet_ids"] or ())
    found = []
    if not given["region"]:
        found.append("vpc_endpoints_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS "
                     "profile configuration; set vpc_endpoints_region (or bastionless_region in the inventory).")
    if not (isinstance(vpc_id, str) and VPC_ID.match(vpc_id)):
        found.append(f"vpc_endpoints_vpc_id: '{vpc_id}' is not a VPC id; set it to the id of the instances' VPC "
                     "(vpc-...).")
    if not subnets:
        found.append("vpc_endpoints_subnet_ids: empty; list the private subnets of the instances, one per "
                     "Availability Zone.")
    elif len(set(subnets)) != len(subnets):
        found.append("vpc_endpoints_subnet_ids: lists a subnet twice; list each subnet once.")
    return found


def subnet_problems(found_subnets: list, subnet_ids=(), vpc_id: str = "", region: str = "") -> list:
    """What is wrong with the subnets given, as read: those that do not exist, those of another VPC, and zones
    with more than one of them (an interface endpoint takes one subnet per Availability Zone). ``found_subnets``: as
    amazon.aws.ec2_vpc_subnet_info returns them."""
    found = {subnet["subnet_id"]: subnet for subnet in found_subnets or ()}
    problems_found = []
    missing = [subnet for subnet in subnet_ids or () if subnet not in found]
    if missing:
        problems_found.append(
            f"vpc_endpoints_subnet_ids: {', '.join(missing)} {_one(missing, 'does', 'do')} not exist in {region}; list "
            f"subnets of {vpc_id} (aws ec2 describe-subnets --filters Name=vpc-id,Values={vpc_id}).")
    foreign = [subnet for subnet in subnet_ids or () if subnet in found and found[subnet].get("vpc_id") != vpc_id]
    if foreign:
        problems_found.append(f"vpc_endpoints_subnet_ids: {', '.join(foreign)} {_one(foreign, 'belongs', 'belong')} "
                              f"to another VPC than {vpc_id}; list only subnets of that VPC.")
    zones = {}
    for subnet in subnet_ids or ():
        if subnet in found:
            zones.setdefault(found[subnet].get("availability_zone"), []).append(subnet)
    for zone, subnets in sorted(zones.items()):
        if len(subnets) > 1:
            problems_found.append(f"vpc_endpoints_subnet_ids: {' and '.join(subnets)} are all in {zone}; an interface "
                                  "endpoint takes at most one subnet per Availability Zone. Keep one subnet of each "
                                  "zone.")
    return problems_found


def nat_lines(paths: dict) -> list:
    """One line per subnet saying where its 0.0.0.0/0 route goes (``paths``: what vpc_endpoints_nat_paths returns)."""
    lines = []
    for subnet, path in paths.items():
        if path["nat_gateway_id"]:
            state = " (available)" if path["ok"] else f", which is {path['nat_gateway_state']}"
            said = f"routes 0.0.0.0/0 to {path['nat_gateway_id']}{state}"
        else:
            said = f"no 0.0.0.0/0 route to a NAT gateway in {path['route_table_id']}"
        lines.append(f"{subnet} ({path['availability_zone']}): {said}.")
    return lines


def nat_message(paths: dict, mode: str = "endpoints") -> str:
    """What the role says when a subnet has no route to an available NAT gateway: in nat mode why it fails, in both
    mode what still works; empty in endpoints mode or when every subnet has its path."""
    broken = {subnet: path for subnet, path in paths.items() if not path["ok"]}
    if not broken or mode not in ("nat", "both"):
        return ""
    if mode == "both":
        return (f"vpc_endpoints_mode is both, but {', '.join(broken)} {_one(broken, 'has', 'have')} no route to an "
                "available NAT gateway: Session Manager will work through the endpoints, but package installs and "
                "other internet traffic will not.")
    clauses = [f"{subnet} routes 0.0.0.0/0 to {path['nat_gateway_id']}, which is {path['nat_gateway_state']}"
               if path["nat_gateway_id"] else
               f"{subnet} has no 0.0.0.0/0 route to a NAT gateway in {path['route_table_id']}"
               for subnet, path in broken.items()]
    return (f"vpc_endpoints_mode is nat, but {'; '.join(clauses)}. Add the route (aws ec2 create-route "
            "--destination-cidr-block 0.0.0.0/0 --nat-gateway-id ...) or set vpc_endpoints_mode to endpoints.")


def dns_off(vpc: dict, mode: str = "endpoints") -> list:
    """The VPC's DNS attributes that are off and that the mode needs: DNS support always, DNS hostnames for the
    interface endpoints' private DNS (not in nat mode). ``vpc``: as amazon.aws.ec2_vpc_net_info returns it."""
    off = [] if vpc.get("enable_dns_support") else [DNS_SUPPORT]
    if not vpc.get("enable_dns_hostnames") and mode != "nat":
        off.append(DNS_HOSTNAMES)
    return off


def dns_message(off: list, vpc_id: str = "", mode: str = "endpoints") -> str:
    """Why the role stops when the VPC's DNS attributes ``off`` (what vpc_endpoints_dns_off returns) are off and it may
    not turn them on, and how to turn them on; empty when none is off."""
    if not off:
        return ""
    why = ("the private DNS of interface endpoints needs enableDnsSupport and enableDnsHostnames" if mode != "nat"
           else "instances need enableDnsSupport to resolve the SSM endpoints")
    it = _one(off, "it", "them")
    flag = "support" if DNS_SUPPORT in off else "hostnames"
    return (f"{vpc_id} has {' and '.join(off)} off; {why}. Set vpc_endpoints_fix_vpc_dns to true to let the role turn "
            f"{it} on, or turn {it} on yourself (aws ec2 modify-vpc-attribute --vpc-id {vpc_id} --enable-dns-{flag}).")


def security_group_rules(group_ids, cidrs=()) -> list:
    """The endpoints' security group rules: HTTPS from each of ``group_ids`` when given, else from ``cidrs`` (the
    VPC's, by default)."""
    if group_ids:
        return [{"proto": "tcp", "ports": [443], "group_id": group,
                 "rule_desc": f"HTTPS from {group} to the Session Manager endpoints"} for group in group_ids]
    return [{"proto": "tcp", "ports": [443], "cidr_ip": list(cidrs or ()),
             "rule_desc": "HTTPS from the VPC to the Session Manager endpoints"}]


def verify_problems(endpoints: list, services=(), subnet_ids=(), security_group=None, vpc=None, region: str = "",
                    vpc_id: str = "", security_group_name: str = "") -> list:
    """What is still not as asked after the apply phase, one sentence each: the security group (missing, or not
    admitting TCP 443), each interface endpoint of ``services`` (missing or not available, private DNS off, other
    subnets than ``subnet_ids``, without the group), and the VPC's DNS attributes. ``endpoints``: the VPC's available
    endpoints, ``security_group`` and ``vpc`` as the amazon.aws info modules return them."""
    group = security_group or {}
    found = []
    https = [rule for rule in group.get("ip_permissions") or () if rule.get("ip_protocol") == "tcp"
             and rule.get("from_port", 65536) <= 443 <= rule.get("to_port", -1)]
    if not https:
        found.append(f"The security group {security_group_name} of {vpc_id} "
                     f"{'does not admit TCP 443' if group else 'does not exist'}.")
    group_id = group.get("group_id", "")
    by_service = {endpoint.get("service_name"): endpoint for endpoint in endpoints or ()}
    for service in dict.fromkeys(services or ()):
        endpoint = by_service.get(f"com.amazonaws.{region}.{service}") or {}
        subnets = endpoint.get("subnet_ids") or []
        clause = ("missing or not available" if not endpoint
                  else "private DNS is off" if not endpoint.get("private_dns_enabled")
                  else f"its subnets are {', '.join(subnets)}" if sorted(subnets) != sorted(subnet_ids or ())
                  else f"its security groups lack {group_id}"  # a missing group is said above
                  if group_id and group_id not in [g.get("group_id") for g in endpoint.get("groups") or ()] else "")
        if clause:
            found.append(f"The {service} endpoint of {vpc_id} is not as it should be: {clause}.")
    if not ((vpc or {}).get("enable_dns_support") and (vpc or {}).get("enable_dns_hostnames")):
        found.append(f"{vpc_id} still has DNS support or DNS hostnames off.")
    return found


# The AWS-owned buckets the SSM agent reads from (s3:GetObject), per region: Systems Manager User Guide, "SSM Agent
# communications with AWS managed S3 buckets". Through an S3 gateway endpoint with a policy, these are what the
# agent needs besides the fleet's own buckets: Windows-only documents, agent and plugin updates, Distributor
# packages, patch baselines and document attachments.
AWS_AGENT_BUCKETS = (
    "aws-ssm-{region}",
    "aws-windows-downloads-{region}",
    "amazon-ssm-{region}",
    "amazon-ssm-packages-{region}",
    "{region}-birdwatcher-prod",
    "aws-ssm-distributor-file-{region}",
    "aws-ssm-document-attachments-{region}",
    "patch-baseline-snapshot-{region}",
)
# What the nodes do in the fleet's own buckets through the gateway endpoint: transcripts (the agent checks the
# bucket's encryption, then uploads, in parts when large) and the aws_ssm connection's presigned transfers.
FLEET_BUCKET_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:GetEncryptionConfiguration",
                        "s3:GetBucketLocation")
_ORG_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
# A bucket name of the extension list: a name, or a pattern with * and ? (IAM's wildcards in a resource ARN).
_BUCKET_PATTERN = re.compile(r"^[a-z0-9*?][a-z0-9.*?-]{0,62}$")


def _principal_condition(account: str, org_id: str = "") -> dict:
    if org_id:
        return {"StringEquals": {"aws:PrincipalOrgID": org_id}}
    return {"StringEquals": {"aws:PrincipalAccount": account}}


def interface_policy(account: str, org_id: str = "") -> dict:
    """The policy of each interface endpoint (ssm, ssmmessages, ec2messages, ...): any action of the service, but
    only by principals of ``account``, or of the organisation ``org_id`` when one is given."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "OwnPrincipalsOnly", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
         "Condition": _principal_condition(account, org_id)}]}


def _partition(region: str) -> str:
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def s3_buckets(region: str, fleet_buckets=(), extra_buckets=(), partition: str = "") -> dict:
    """The buckets the S3 gateway endpoint lets through: ``fleet`` (the transcripts and transfer buckets, and the
    extension list) and ``aws`` (the agent's AWS-owned buckets in ``region``), each as object ARNs
    (``arn:...:s3:::NAME/*``) and bucket ARNs."""
    partition = partition or _partition(region)
    fleet = list(dict.fromkeys(name for name in [*(fleet_buckets or ()), *(extra_buckets or ())] if name))
    aws = [name.format(region=region) for name in AWS_AGENT_BUCKETS]
    return {"fleet": fleet, "aws": aws,
            "fleet_arns": [f"arn:{partition}:s3:::{name}" for name in fleet]
            + [f"arn:{partition}:s3:::{name}/*" for name in fleet],
            "aws_arns": [f"arn:{partition}:s3:::{name}/*" for name in aws]}


def gateway_policy(region: str, fleet_buckets=(), extra_buckets=(), partition: str = "") -> dict:
    """The S3 gateway endpoint's policy: the fleet's own buckets (transcripts, transfers, the extension list) for
    what the nodes do there, and the agent's AWS-owned buckets for reading; nothing else is reachable through it.
    No principal condition: the agent reads AWS's public buckets, and presigned transfer URLs carry the signer's
    identity, which the buckets' own policies judge."""
    buckets = s3_buckets(region, fleet_buckets, extra_buckets, partition)
    statements = []
    if buckets["fleet"]:
        statements.append({"Sid": "FleetBuckets", "Effect": "Allow", "Principal": "*",
                           "Action": list(FLEET_BUCKET_ACTIONS), "Resource": buckets["fleet_arns"]})
    statements.append({"Sid": "AgentBuckets", "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
                       "Resource": buckets["aws_arns"]})
    return {"Version": "2012-10-17", "Statement": statements}


def policy_problems(account: str = "", org_id: str = "", fleet_buckets=(), extra_buckets=()) -> list:
    """The endpoint policies' inputs that cannot work, one sentence each naming the variable and the fix."""
    found = []
    if org_id and not (isinstance(org_id, str) and _ORG_ID.match(org_id)):
        found.append(f"vpc_endpoints_principal_org_id: '{org_id}' is not an organization id; give the id "
                     "(o-, then 10 to 32 lower-case letters and digits: aws organizations describe-organization), "
                     "or leave it empty to allow the account's own principals only.")
    if not org_id and not (isinstance(account, str) and _ACCOUNT_ID.match(account)):
        found.append(f"vpc_endpoints policies: the account id '{account}' is not 12 digits; check the credentials "
                     "(aws sts get-caller-identity).")
    given = (("vpc_endpoints_s3_buckets", fleet_buckets), ("vpc_endpoints_s3_extra_buckets", extra_buckets))
    for variable, names in given:
        bad = [name for name in names or () if not isinstance(name, str) or not _BUCKET_PATTERN.match(name)]
        if bad:
            found.append(f"{variable}: {', '.join(repr(name) for name in bad)} "
                         f"{_one(bad, 'is not a bucket name', 'are not bucket names')}; give names (lower-case "
                         "letters, digits, . and -, * and ? as wildcards), not ARNs or s3:// URLs.")
    return found


class FilterModule:
    """The vpc_endpoints filters."""

    def filters(self):
        return {"vpc_endpoints_cost_estimate": cost_estimate, "vpc_endpoints_cost_lines": cost_lines,
                "vpc_endpoints_nat_paths": nat_paths, "vpc_endpoints_problems": problems,
                "vpc_endpoints_subnet_problems": subnet_problems, "vpc_endpoints_nat_lines": nat_lines,
                "vpc_endpoints_nat_message": nat_message, "vpc_endpoints_dns_off": dns_off,
                "vpc_endpoints_dns_message": dns_message, "vpc_endpoints_security_group_rules": security_group_rules,
                "vpc_endpoints_verify_problems": verify_problems,
                "vpc_endpoints_interface_policy": interface_policy, "vpc_endpoints_gateway_policy": gateway_policy,
                "vpc_endpoints_policy_problems": policy_problems}
