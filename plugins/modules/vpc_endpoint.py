#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: vpc_endpoint
version_added: 0.1.0
short_description: Manage one VPC endpoint per VPC and service, and keep it as declared
description:
  - Creates, reconciles and deletes the VPC endpoint of one service in one VPC.
  - An endpoint is identified by O(vpc_id), O(service) and O(vpc_endpoint_type); endpoints that are
    C(deleted), C(deleting), C(failed), C(rejected) or C(expired) are ignored.
  - An existing endpoint is reconciled with a single C(ModifyVpcEndpoint) call that carries only what differs
    (subnets, security groups, route tables, private DNS, policy); tags are reconciled separately.
  - O(wait) waits, with O(state=present), until the endpoint is C(available) (an endpoint that waits for the service
    owner's acceptance, C(pendingAcceptance), is an error) and, with O(state=absent), until it is gone.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  vpc_id:
    description:
      - The ID of the VPC of the endpoint.
    required: true
    type: str
  service:
    description:
      - The service of the endpoint.
      - A short name without dots, such as V(ssm), V(ssmmessages), V(ec2messages), V(kms), V(logs) or V(s3),
        is expanded to C(com.amazonaws.<region>.<name>) with the module's region.
      - A name with dots, such as V(com.amazonaws.eu-west-1.ssm) or a PrivateLink service name, is used as is.
    required: true
    type: str
  vpc_endpoint_type:
    description:
      - The type of the endpoint.
      - V(Interface) endpoints sit in subnets, behind security groups; V(Gateway) endpoints (V(s3), V(dynamodb))
        are routes in route tables.
      - The type is part of what identifies the endpoint, so changing it creates a second endpoint; remove the
        first one with O(state=absent) and its own type.
    type: str
    default: Interface
    choices: [Interface, Gateway]
  subnet_ids:
    description:
      - The subnets of an V(Interface) endpoint, at most one per availability zone.
      - When set, the endpoint's subnets are made exactly these. When unset, an existing endpoint's subnets are
        left alone.
      - Only with O(vpc_endpoint_type=Interface).
    type: list
    elements: str
  security_group_ids:
    description:
      - The security groups of an V(Interface) endpoint. They must admit HTTPS (TCP 443) from the clients.
      - When set, the endpoint's groups are made exactly these. When unset, an existing endpoint's groups are left
        alone (AWS puts a new endpoint created without groups into the VPC's default group).
      - Only with O(vpc_endpoint_type=Interface).
    type: list
    elements: str
  route_table_ids:
    description:
      - The route tables of a V(Gateway) endpoint.
      - When set, the endpoint's route tables are made exactly these. When unset, an existing endpoint's route
        tables are left alone.
      - Only with O(vpc_endpoint_type=Gateway).
    type: list
    elements: str
  private_dns_enabled:
    description:
      - Whether the service's own DNS names resolve to the endpoint inside the VPC. The SSM Agent needs this
        for the V(ssm), V(ssmmessages) and V(ec2messages) endpoints.
      - Defaults to V(true) for V(Interface) endpoints, which is also enforced on an existing endpoint. Set it to
        V(false) for a service that has no private DNS name.
      - Gateway endpoints have no private DNS; V(true) is an error with O(vpc_endpoint_type=Gateway).
    type: bool
  policy:
    description:
      - The endpoint policy, a JSON document as a string or a dictionary.
      - When unset, the policy is left alone (a new endpoint gets the AWS default, full access).
    type: json
  tags:
    description:
      - Tags for the endpoint, as a dictionary.
      - When unset, the tags are not touched.
    type: dict
  purge_tags:
    description:
      - Whether tags of the endpoint that are not in O(tags) are removed.
      - Has no effect when O(tags) is unset.
    type: bool
    default: false
  state:
    description:
      - V(present) creates the endpoint or reconciles the existing one; V(absent) deletes it.
    type: str
    default: present
    choices: [present, absent]
  wait_timeout:
    default: 320
attributes:
  check_mode:
    description: Reports whether the endpoint would be created, changed or deleted, and changes nothing.
    support: full
  diff_mode:
    description:
      - Returns the endpoint's service, type, subnets, security groups, route tables, private DNS and state before and
        after (in check mode, the after is a prediction). Policy and tags are not in the diff.
    support: full
notes:
  - This module exists because M(amazon.aws.ec2_vpc_endpoint) cannot set C(PrivateDnsEnabled), never reconciles
    an existing endpoint's subnets or security groups (it only updates tags), and matches endpoints in state
    C(deleted), which AWS keeps visible for a while, so after an endpoint is deleted it reports C(ok) and returns
    the dead one.
  - When more than one live endpoint matches, the oldest is managed and a warning names the others.
  - In check mode the returned RV(vpc_endpoint) is a prediction; a new endpoint has no C(vpc_endpoint_id) yet.
extends_documentation_fragment:
  - bastionless.ssm.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# These run as they are against the offline lab (tests/lab), whose VPC is tagged Name=ssm-lab and whose private
# subnets and route tables are tagged Tier=private.
- name: Find the VPC
  amazon.aws.ec2_vpc_net_info:
    filters:
      "tag:Name": ssm-lab
  register: vpc_info

- name: Find its private subnets
  amazon.aws.ec2_vpc_subnet_info:
    filters:
      vpc-id: "{{ vpc_info.vpcs[0].id }}"
      "tag:Tier": private
  register: subnet_info

- name: Find its private route tables
  amazon.aws.ec2_vpc_route_table_info:
    filters:
      vpc-id: "{{ vpc_info.vpcs[0].id }}"
      "tag:Tier": private
  register: route_table_info

- name: Let the VPC reach its interface endpoints over HTTPS
  amazon.aws.ec2_security_group:
    name: ssm-endpoints
    description: HTTPS from the VPC to its interface endpoints
    vpc_id: "{{ vpc_info.vpcs[0].id }}"
    rules:
      - proto: tcp
        ports: [443]
        cidr_ip: "{{ vpc_info.vpcs[0].cidr_block }}"
  register: endpoint_group

- name: Create the SSM interface endpoint with private DNS in the private subnets
  bastionless.ssm.vpc_endpoint:
    vpc_id: "{{ vpc_info.vpcs[0].id }}"
    service: ssm
    subnet_ids: "{{ subnet_info.subnets | map(attribute='id') | list }}"
    security_group_ids:
      - "{{ endpoint_group.group_id }}"
    private_dns_enabled: true
    tags:
      Name: ssm
  register: ssm_endpoint

- name: Attach the S3 gateway endpoint to the private route tables
  bastionless.ssm.vpc_endpoint:
    vpc_id: "{{ vpc_info.vpcs[0].id }}"
    service: s3
    vpc_endpoint_type: Gateway
    route_table_ids: "{{ route_table_info.route_tables | map(attribute='id') | list }}"

- name: Delete the SSM interface endpoint
  bastionless.ssm.vpc_endpoint:
    vpc_id: "{{ vpc_info.vpcs[0].id }}"
    service: ssm
    state: absent
"""

RETURN = r"""
vpc_endpoint:
  description:
    - The endpoint, with snake_case keys and the tags as a dictionary; V({}) when it is absent.
    - In check mode, the predicted endpoint.
  returned: always
  type: dict
  contains:
    vpc_endpoint_id:
      description: The ID of the endpoint (V(null) for an endpoint predicted in check mode).
      returned: when the endpoint exists
      type: str
      sample: vpce-0123456789abcdef0
    vpc_endpoint_type:
      description: The type of the endpoint.
      returned: when the endpoint exists
      type: str
      sample: Interface
    vpc_id:
      description: The ID of the VPC.
      returned: when the endpoint exists
      type: str
      sample: vpc-0123456789abcdef0
    service_name:
      description: The full name of the service.
      returned: when the endpoint exists
      type: str
      sample: com.amazonaws.eu-west-1.ssm
    state:
      description: The state of the endpoint.
      returned: when the endpoint exists
      type: str
      sample: available
    subnet_ids:
      description: The subnets of an interface endpoint.
      returned: when the endpoint exists
      type: list
      elements: str
      sample: [subnet-0123456789abcdef0, subnet-0fedcba9876543210]
    groups:
      description: The security groups of an interface endpoint.
      returned: when the endpoint exists
      type: list
      elements: dict
      contains:
        group_id:
          description: The ID of the security group.
          type: str
          sample: sg-0123456789abcdef0
        group_name:
          description: The name of the security group (not predicted in check mode).
          type: str
          sample: endpoints
      sample: [{group_id: sg-0123456789abcdef0, group_name: endpoints}]
    private_dns_enabled:
      description: Whether private DNS is enabled on the endpoint.
      returned: when the endpoint exists
      type: bool
      sample: true
    route_table_ids:
      description: The route tables of a gateway endpoint.
      returned: when the endpoint exists
      type: list
      elements: str
      sample: [rtb-0123456789abcdef0]
    policy_document:
      description: The endpoint policy, a JSON document.
      returned: when the endpoint exists and AWS reports it
      type: str
      sample: '{"Version": "2008-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}'
    network_interface_ids:
      description: The network interfaces of an interface endpoint.
      returned: when the endpoint exists and AWS reports it
      type: list
      elements: str
      sample: [eni-0123456789abcdef0]
    dns_entries:
      description: The DNS names of an interface endpoint.
      returned: when the endpoint exists and AWS reports it
      type: list
      elements: dict
      sample: [{dns_name: vpce-0123456789abcdef0-abcdefgh.ssm.eu-west-1.vpce.amazonaws.com, hosted_zone_id: Z2EXAMPLE}]
    creation_timestamp:
      description: When the endpoint was created, in ISO 8601.
      returned: when the endpoint exists and AWS reports it
      type: str
      sample: "2024-05-01T12:00:00+00:00"
    tags:
      description: The tags of the endpoint.
      returned: when the endpoint exists
      type: dict
      sample: {Name: ssm}
"""

import json
import time
from copy import deepcopy

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.botocore import normalize_boto3_result
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import AnsibleEC2Error
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import ensure_ec2_tags
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.policy import compare_policies
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_specifications
from ansible_collections.amazon.aws.plugins.module_utils.tagging import compare_aws_tags

from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

# States in which AWS still lists an endpoint that no longer serves anything.
DEAD_STATES = frozenset(("deleted", "deleting", "failed", "rejected", "expired"))
# States an endpoint does not leave by itself once it is being deleted.
GONE_STATES = frozenset(("deleted", "failed", "rejected", "expired"))
POLL_DELAY = 5

# (option, ModifyVpcEndpoint add key, remove key) for the lists the module keeps exactly as given.
LIST_OPTIONS = (
    ("subnet_ids", "AddSubnetIds", "RemoveSubnetIds"),
    ("security_group_ids", "AddSecurityGroupIds", "RemoveSecurityGroupIds"),
    ("route_table_ids", "AddRouteTableIds", "RemoveRouteTableIds"),
)


class VpcEndpointErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleEC2Error

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code("InvalidVpcEndpointId.NotFound")


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers: what is wanted, what differs, what the endpoint would look like.
# ---------------------------------------------------------------------------------------------------------------


def expand_service(service, region):
    """A short service name (no dot) becomes com.amazonaws.<region>.<name>; a full name is kept."""
    if "." in service:
        return service
    if not region:
        raise ValueError(
            f"service={service} is a short name and needs a region to expand to com.amazonaws.<region>.{service}: "
            "set region (or AWS_REGION), or give the full service name."
        )
    return f"com.amazonaws.{region}.{service}"


def _duplicates(values):
    seen, dups = set(), []
    for value in values:
        if value in seen and value not in dups:
            dups.append(value)
        seen.add(value)
    return dups


def validate_params(params):
    """Every problem with the options, each as one message naming the option and the fix; [] when fine."""
    errors = []
    gateway = params.get("vpc_endpoint_type") == "Gateway"
    if gateway:
        if params.get("subnet_ids") is not None:
            errors.append(
                "subnet_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint is attached to route tables, "
                "so remove subnet_ids and use route_table_ids."
            )
        if params.get("security_group_ids") is not None:
            errors.append(
                "security_group_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint has no security "
                "groups, so remove security_group_ids."
            )
        if params.get("private_dns_enabled"):
            errors.append(
                "private_dns_enabled=true is only for vpc_endpoint_type=Interface: a Gateway endpoint has no private "
                "DNS, so remove private_dns_enabled (or use vpc_endpoint_type=Interface)."
            )
    elif params.get("route_table_ids") is not None:
        errors.append(
            "route_table_ids is only for vpc_endpoint_type=Gateway: an Interface endpoint sits in subnets, so remove "
            "route_table_ids and use subnet_ids (or set vpc_endpoint_type=Gateway)."
        )
    for option in (entry[0] for entry in LIST_OPTIONS):
        dups = _duplicates(params.get(option) or [])
        if dups:
            errors.append(f"{option} lists {', '.join(dups)} more than once: list each ID once.")
    return errors


def wanted_from_params(params):
    """What the options ask of the endpoint; None means 'leave that attribute alone'."""
    private_dns = params.get("private_dns_enabled")
    if private_dns is None and params.get("vpc_endpoint_type") == "Interface":
        private_dns = True
    if params.get("vpc_endpoint_type") == "Gateway":
        private_dns = None  # a Gateway endpoint has no private DNS to manage
    return {
        "subnet_ids": params.get("subnet_ids"),
        "security_group_ids": params.get("security_group_ids"),
        "route_table_ids": params.get("route_table_ids"),
        "private_dns_enabled": private_dns,
        "policy": params.get("policy"),
    }


def is_live(endpoint):
    return str(endpoint.get("State", "")).lower() not in DEAD_STATES


def _created(endpoint):
    stamp = endpoint.get("CreationTimestamp")
    return "" if stamp is None else str(stamp.isoformat() if hasattr(stamp, "isoformat") else stamp)


def pick_endpoint(endpoints, vpc_endpoint_type):
    """(the oldest live endpoint of this type or None, the other live ones)."""
    live = [
        e
        for e in endpoints
        if is_live(e) and str(e.get("VpcEndpointType", "")).lower() == vpc_endpoint_type.lower()
    ]
    live.sort(key=lambda e: (_created(e), e.get("VpcEndpointId", "")))
    if not live:
        return None, []
    return live[0], live[1:]


def current_lists(endpoint):
    """The endpoint's subnets, security groups and route tables, keyed like the options."""
    return {
        "subnet_ids": list(endpoint.get("SubnetIds") or []),
        "security_group_ids": [g["GroupId"] for g in endpoint.get("Groups") or []],
        "route_table_ids": list(endpoint.get("RouteTableIds") or []),
    }


def list_changes(current, wanted):
    """(IDs to add, IDs to remove) to turn current into exactly wanted."""
    return [i for i in wanted if i not in current], [i for i in current if i not in wanted]


def policy_differs(current_document, wanted_document):
    if wanted_document is None:
        return False
    if not current_document:
        return True
    try:
        current = json.loads(current_document)
    except ValueError:
        return True
    return compare_policies(current, json.loads(wanted_document))


def plan_modify(endpoint, wanted):
    """The ModifyVpcEndpoint arguments (without VpcEndpointId) that make endpoint what is wanted; {} if none."""
    plan = {}
    have = current_lists(endpoint)
    for option, add_key, remove_key in LIST_OPTIONS:
        if wanted.get(option) is None:
            continue
        add, remove = list_changes(have[option], wanted[option])
        if add:
            plan[add_key] = add
        if remove:
            plan[remove_key] = remove
    private_dns = wanted.get("private_dns_enabled")
    if private_dns is not None and bool(endpoint.get("PrivateDnsEnabled")) != private_dns:
        plan["PrivateDnsEnabled"] = private_dns
    if policy_differs(endpoint.get("PolicyDocument"), wanted.get("policy")):
        plan["PolicyDocument"] = wanted["policy"]
    return plan


def apply_modify(endpoint, plan):
    """A copy of endpoint as it would be after ModifyVpcEndpoint with plan."""
    after = deepcopy(endpoint)
    subnets = [s for s in after.get("SubnetIds") or [] if s not in plan.get("RemoveSubnetIds", [])]
    after["SubnetIds"] = subnets + plan.get("AddSubnetIds", [])
    groups = [g for g in after.get("Groups") or [] if g["GroupId"] not in plan.get("RemoveSecurityGroupIds", [])]
    after["Groups"] = groups + [{"GroupId": g} for g in plan.get("AddSecurityGroupIds", [])]
    tables = [t for t in after.get("RouteTableIds") or [] if t not in plan.get("RemoveRouteTableIds", [])]
    after["RouteTableIds"] = tables + plan.get("AddRouteTableIds", [])
    if "PrivateDnsEnabled" in plan:
        after["PrivateDnsEnabled"] = plan["PrivateDnsEnabled"]
    if "PolicyDocument" in plan:
        after["PolicyDocument"] = plan["PolicyDocument"]
    return after


def plan_tags(endpoint, tags, purge_tags):
    """(tags to set, tag keys to unset); nothing when tags is None."""
    if tags is None:
        return {}, []
    current = boto3_tag_list_to_ansible_dict(endpoint.get("Tags") or [])
    to_set, to_unset = compare_aws_tags(current, tags, purge_tags)
    return to_set, list(to_unset)


def apply_tags(endpoint, to_set, to_unset):
    after = deepcopy(endpoint)
    tags = boto3_tag_list_to_ansible_dict(after.get("Tags") or [])
    for key in to_unset:
        tags.pop(key, None)
    tags.update(to_set)
    after["Tags"] = ansible_dict_to_boto3_tag_list(tags)
    return after


def create_params(vpc_id, service_name, vpc_endpoint_type, wanted, tags):
    """The CreateVpcEndpoint arguments."""
    params = {"VpcId": vpc_id, "ServiceName": service_name, "VpcEndpointType": vpc_endpoint_type}
    if vpc_endpoint_type == "Interface":
        if wanted.get("subnet_ids"):
            params["SubnetIds"] = list(wanted["subnet_ids"])
        if wanted.get("security_group_ids"):
            params["SecurityGroupIds"] = list(wanted["security_group_ids"])
        params["PrivateDnsEnabled"] = bool(wanted.get("private_dns_enabled"))
    elif wanted.get("route_table_ids"):
        params["RouteTableIds"] = list(wanted["route_table_ids"])
    if wanted.get("policy") is not None:
        params["PolicyDocument"] = wanted["policy"]
    if tags:
        params["TagSpecifications"] = boto3_tag_specifications(tags, ["vpc-endpoint"])
    return params


def predict_created(params, wait):
    """The endpoint CreateVpcEndpoint with params would make, for check mode."""
    endpoint = {
        "VpcEndpointId": None,
        "VpcEndpointType": params["VpcEndpointType"],
        "VpcId": params["VpcId"],
        "ServiceName": params["ServiceName"],
        "State": "available" if wait else "pending",
        "SubnetIds": list(params.get("SubnetIds", [])),
        "Groups": [{"GroupId": g} for g in params.get("SecurityGroupIds", [])],
        "RouteTableIds": list(params.get("RouteTableIds", [])),
        "PrivateDnsEnabled": bool(params.get("PrivateDnsEnabled")),
        "Tags": [],
    }
    if "PolicyDocument" in params:
        endpoint["PolicyDocument"] = params["PolicyDocument"]
    for spec in params.get("TagSpecifications", []):
        endpoint["Tags"] = list(spec["Tags"])
    return endpoint


def diff_view(endpoint):
    """What the diff shows of an endpoint; {} when there is none."""
    if not endpoint:
        return {}
    lists = current_lists(endpoint)
    return {
        "service_name": endpoint.get("ServiceName"),
        "vpc_endpoint_type": endpoint.get("VpcEndpointType"),
        "subnet_ids": sorted(lists["subnet_ids"]),
        "security_group_ids": sorted(lists["security_group_ids"]),
        "route_table_ids": sorted(lists["route_table_ids"]),
        "private_dns_enabled": bool(endpoint.get("PrivateDnsEnabled")),
        "state": endpoint.get("State"),
    }


def to_result(endpoint):
    """The endpoint as returned: snake_case keys, tags as a dictionary; {} when there is none."""
    if not endpoint:
        return {}
    endpoint = normalize_boto3_result(endpoint)
    endpoint["Tags"] = boto3_tag_list_to_ansible_dict(endpoint.get("Tags") or [])
    return camel_dict_to_snake_dict(endpoint, ignore_list=["Tags"])


# ---------------------------------------------------------------------------------------------------------------
# AWS calls, one each.
# ---------------------------------------------------------------------------------------------------------------


@VpcEndpointErrorHandler.common_error_handler("describe VPC endpoints")
@AWSRetry.jittered_backoff()
def describe_endpoints(client, vpc_id, service_name):
    paginator = client.get_paginator("describe_vpc_endpoints")
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "service-name", "Values": [service_name]}]
    return paginator.paginate(Filters=filters).build_full_result()["VpcEndpoints"]


@VpcEndpointErrorHandler.list_error_handler("describe VPC endpoint")
@AWSRetry.jittered_backoff()
def describe_endpoint(client, endpoint_id):
    endpoints = client.describe_vpc_endpoints(VpcEndpointIds=[endpoint_id])["VpcEndpoints"]
    return endpoints[0] if endpoints else None


@VpcEndpointErrorHandler.common_error_handler("create VPC endpoint")
@AWSRetry.jittered_backoff()
def create_endpoint(client, params):
    return client.create_vpc_endpoint(**params)["VpcEndpoint"]


@VpcEndpointErrorHandler.common_error_handler("modify VPC endpoint")
@AWSRetry.jittered_backoff()
def modify_endpoint(client, endpoint_id, plan):
    client.modify_vpc_endpoint(VpcEndpointId=endpoint_id, **plan)


@VpcEndpointErrorHandler.common_error_handler("delete VPC endpoint")
@AWSRetry.jittered_backoff()
def delete_endpoint(client, endpoint_id):
    """DeleteVpcEndpoints reports failures as Unsuccessful items instead of raising; turn them into errors."""
    unsuccessful = client.delete_vpc_endpoints(VpcEndpointIds=[endpoint_id]).get("Unsuccessful") or []
    failures = [u for u in unsuccessful if (u.get("Error") or {}).get("Code") != "InvalidVpcEndpoint.NotFound"]
    if failures:
        error = failures[0].get("Error") or {}
        raise AnsibleEC2Error(
            message=f"Failed to delete VPC endpoint {endpoint_id}: {error.get('Code')}: {error.get('Message')}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Waiting.
#
# No waiter fits, so these two poll by hand. botocore's EC2 waiters have none for VPC endpoints, and amazon.aws's
# module_utils.waiters has only vpc_endpoint_exists, which succeeds once DescribeVpcEndpoints lists the endpoint,
# whatever its State: it neither waits for "available" nor for the endpoint to go. A model of our own on
# amazon.aws's module_utils.waiter.BaseWaiterFactory does not fit either: its acceptors compare State exactly,
# while the API's enum says "Available"/"PendingAcceptance" and the service answers "available"/"pendingAcceptance"
# (hence the .lower() below), and its WaiterError would have to be taken apart again to keep the messages that say
# which of pendingAcceptance, a dead state, a missing endpoint or the timeout stopped the wait. The loops keep
# wait_timeout's meaning: the state is read at once and every POLL_DELAY seconds, and the wait gives up
# after the first read at or after the deadline.
# ---------------------------------------------------------------------------------------------------------------


def wait_available(client, endpoint_id, service_name, timeout, sleep=time.sleep, clock=time.monotonic):
    """Poll until the endpoint is available; pendingAcceptance, a dead state or the timeout is an error."""
    deadline = clock() + timeout
    while True:
        endpoint = describe_endpoint(client, endpoint_id)
        state = str((endpoint or {}).get("State", "")).lower()
        if state == "available":
            return endpoint
        if state == "pendingacceptance":
            raise AnsibleEC2Error(
                message=f"VPC endpoint {endpoint_id} for {service_name} is pendingAcceptance: the owner of "
                f"{service_name} must accept the connection before it can be used (or set wait=false)."
            )
        if endpoint is None or state in DEAD_STATES:
            raise AnsibleEC2Error(
                message=f"VPC endpoint {endpoint_id} for {service_name} became {state or 'missing'} while waiting "
                "for it to be available."
            )
        if clock() >= deadline:
            raise AnsibleEC2Error(
                message=f"Timed out after {timeout}s waiting for VPC endpoint {endpoint_id} for {service_name} to "
                f"be available (it is {state}): raise wait_timeout or set wait=false."
            )
        sleep(POLL_DELAY)


def wait_gone(client, endpoint_id, service_name, timeout, sleep=time.sleep, clock=time.monotonic):
    """Poll until the endpoint is deleted (or no longer listed)."""
    deadline = clock() + timeout
    while True:
        endpoint = describe_endpoint(client, endpoint_id)
        state = str((endpoint or {}).get("State", "")).lower()
        if endpoint is None or state in GONE_STATES:
            return
        if clock() >= deadline:
            raise AnsibleEC2Error(
                message=f"Timed out after {timeout}s waiting for VPC endpoint {endpoint_id} for {service_name} to "
                f"be deleted (it is {state}): raise wait_timeout or set wait=false."
            )
        sleep(POLL_DELAY)


# ---------------------------------------------------------------------------------------------------------------
# The states.
# ---------------------------------------------------------------------------------------------------------------


def ensure_present(client, module, current, service_name):
    """(changed, endpoint after)."""
    params = module.params
    wanted = wanted_from_params(params)
    wait, timeout = params["wait"], params["wait_timeout"]

    if current is None:
        create = create_params(params["vpc_id"], service_name, params["vpc_endpoint_type"], wanted, params["tags"])
        if module.check_mode:
            return True, predict_created(create, wait)
        endpoint = create_endpoint(client, create)
        if wait:
            endpoint = wait_available(client, endpoint["VpcEndpointId"], service_name, timeout)
        return True, endpoint

    endpoint_id = current["VpcEndpointId"]
    plan = plan_modify(current, wanted)
    to_set, to_unset = plan_tags(current, params["tags"], params["purge_tags"])
    changed = bool(plan or to_set or to_unset)
    if module.check_mode:
        return changed, apply_tags(apply_modify(current, plan), to_set, to_unset)

    if plan and wait and str(current.get("State", "")).lower() == "pending":
        current = wait_available(client, endpoint_id, service_name, timeout)  # AWS refuses to modify it until then
    if plan:
        modify_endpoint(client, endpoint_id, plan)
    if to_set or to_unset:
        ensure_ec2_tags(
            client, module, endpoint_id, resource_type="vpc-endpoint", tags=params["tags"],
            purge_tags=params["purge_tags"],
        )
    if wait and (changed or str(current.get("State", "")).lower() != "available"):
        return changed, wait_available(client, endpoint_id, service_name, timeout)
    if changed:
        return changed, describe_endpoint(client, endpoint_id)
    return changed, current


def ensure_absent(client, module, current, service_name):
    """(changed, endpoint after: always None)."""
    if current is None:
        return False, None
    if module.check_mode:
        return True, None
    delete_endpoint(client, current["VpcEndpointId"])
    if module.params["wait"]:
        wait_gone(client, current["VpcEndpointId"], service_name, module.params["wait_timeout"])
    return True, None


def run(module, client, service_name):
    params = module.params
    found = describe_endpoints(client, params["vpc_id"], service_name)
    current, others = pick_endpoint(found, params["vpc_endpoint_type"])
    if others:
        warn(
            f"{len(others) + 1} live {params['vpc_endpoint_type']} endpoints for {service_name} in {params['vpc_id']}: "
            f"managing the oldest, {current['VpcEndpointId']}, and leaving "
            f"{', '.join(e['VpcEndpointId'] for e in others)} alone; delete the extra ones."
        )
    if params["state"] == "present":
        changed, after = ensure_present(client, module, current, service_name)
    else:
        changed, after = ensure_absent(client, module, current, service_name)
    result = {"changed": changed, "vpc_endpoint": to_result(after)}
    if module._diff:
        result["diff"] = {"before": diff_view(current), "after": diff_view(after)}
    return result


def main():
    argument_spec = dict(
        vpc_id=dict(type="str", required=True),
        service=dict(type="str", required=True),
        vpc_endpoint_type=dict(type="str", default="Interface", choices=["Interface", "Gateway"]),
        subnet_ids=dict(type="list", elements="str"),
        security_group_ids=dict(type="list", elements="str"),
        route_table_ids=dict(type="list", elements="str"),
        private_dns_enabled=dict(type="bool"),
        policy=dict(type="json"),
        tags=dict(type="dict"),
        purge_tags=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=320),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)

    errors = validate_params(module.params)
    if errors:
        module.fail_json(msg=" ".join(errors))
    try:
        service_name = expand_service(module.params["service"], module.region)
    except ValueError as e:
        module.fail_json(msg=str(e))

    client = module.client("ec2")
    try:
        result = run(module, client, service_name)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
