# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure helpers of bastionless.ssm.vpc_endpoint: names, validation, plans, predictions, views."""

import datetime
import json

import pytest

from ansible_collections.amazon.aws.plugins.module_utils.ec2 import AnsibleEC2Error
from ansible_collections.bastionless.ssm.plugins.modules import vpc_endpoint

REGION = "eu-west-1"
SSM = "com.amazonaws.eu-west-1.ssm"
ALLOW_ALL = {"Version": "2008-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}


def params(**overrides):
    base = {
        "vpc_id": "vpc-1",
        "service": "ssm",
        "vpc_endpoint_type": "Interface",
        "subnet_ids": None,
        "security_group_ids": None,
        "route_table_ids": None,
        "private_dns_enabled": None,
        "policy": None,
        "tags": None,
        "purge_tags": False,
        "state": "present",
        "wait": True,
        "wait_timeout": 320,
    }
    base.update(overrides)
    return base


def endpoint(**overrides):
    base = {
        "VpcEndpointId": "vpce-1",
        "VpcEndpointType": "Interface",
        "VpcId": "vpc-1",
        "ServiceName": SSM,
        "State": "available",
        "SubnetIds": ["subnet-a", "subnet-b"],
        "Groups": [{"GroupId": "sg-1", "GroupName": "one"}],
        "RouteTableIds": [],
        "PrivateDnsEnabled": True,
        "PolicyDocument": json.dumps(ALLOW_ALL),
        "Tags": [{"Key": "Name", "Value": "ssm"}],
        "CreationTimestamp": datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc),
    }
    base.update(overrides)
    return base


# --- service names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "service, expected",
    [
        ("ssm", "com.amazonaws.eu-west-1.ssm"),
        ("ssmmessages", "com.amazonaws.eu-west-1.ssmmessages"),
        ("ec2messages", "com.amazonaws.eu-west-1.ec2messages"),
        ("kms", "com.amazonaws.eu-west-1.kms"),
        ("logs", "com.amazonaws.eu-west-1.logs"),
        ("s3", "com.amazonaws.eu-west-1.s3"),
        ("com.amazonaws.us-east-1.ssm", "com.amazonaws.us-east-1.ssm"),
        ("com.amazonaws.vpce.eu-west-1.vpce-svc-0123456789abcdef0", "com.amazonaws.vpce.eu-west-1.vpce-svc-0123456789abcdef0"),
    ],
)
def test_expand_service(service, expected):
    assert vpc_endpoint.expand_service(service, REGION) == expected


def test_a_short_name_without_a_region_says_what_to_set():
    with pytest.raises(ValueError, match="service=ssm is a short name and needs a region"):
        vpc_endpoint.expand_service("ssm", None)


def test_a_full_name_needs_no_region():
    assert vpc_endpoint.expand_service("com.amazonaws.eu-west-1.ssm", None) == "com.amazonaws.eu-west-1.ssm"


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, messages",
    [
        ({}, []),
        ({"subnet_ids": ["subnet-a"], "security_group_ids": ["sg-1"], "private_dns_enabled": True}, []),
        ({"vpc_endpoint_type": "Gateway", "service": "s3", "route_table_ids": ["rtb-1"]}, []),
        ({"vpc_endpoint_type": "Gateway", "private_dns_enabled": False}, []),
        ({"vpc_endpoint_type": "Gateway", "subnet_ids": ["subnet-a"]},
         ["subnet_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint is attached to route tables, "
          "so remove subnet_ids and use route_table_ids."]),
        ({"vpc_endpoint_type": "Gateway", "security_group_ids": ["sg-1"]},
         ["security_group_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint has no security groups, "
          "so remove security_group_ids."]),
        ({"vpc_endpoint_type": "Gateway", "private_dns_enabled": True},
         ["private_dns_enabled=true is only for vpc_endpoint_type=Interface: a Gateway endpoint has no private DNS, "
          "so remove private_dns_enabled (or use vpc_endpoint_type=Interface)."]),
        ({"route_table_ids": ["rtb-1"]},
         ["route_table_ids is only for vpc_endpoint_type=Gateway: an Interface endpoint sits in subnets, so remove "
          "route_table_ids and use subnet_ids (or set vpc_endpoint_type=Gateway)."]),
        ({"subnet_ids": ["subnet-a", "subnet-b", "subnet-a"]},
         ["subnet_ids lists subnet-a more than once: list each ID once."]),
        ({"security_group_ids": ["sg-1", "sg-1", "sg-2", "sg-2"]},
         ["security_group_ids lists sg-1, sg-2 more than once: list each ID once."]),
        ({"vpc_endpoint_type": "Gateway", "route_table_ids": ["rtb-1", "rtb-1"]},
         ["route_table_ids lists rtb-1 more than once: list each ID once."]),
        ({"vpc_endpoint_type": "Gateway", "subnet_ids": [], "private_dns_enabled": True},
         ["subnet_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint is attached to route tables, "
          "so remove subnet_ids and use route_table_ids.",
          "private_dns_enabled=true is only for vpc_endpoint_type=Interface: a Gateway endpoint has no private DNS, "
          "so remove private_dns_enabled (or use vpc_endpoint_type=Interface)."]),
    ],
)
def test_validate_params(overrides, messages):
    assert vpc_endpoint.validate_params(params(**overrides)) == messages


@pytest.mark.parametrize(
    "overrides, private_dns",
    [
        ({}, True),
        ({"private_dns_enabled": False}, False),
        ({"private_dns_enabled": True}, True),
        ({"vpc_endpoint_type": "Gateway"}, None),
        ({"vpc_endpoint_type": "Gateway", "private_dns_enabled": False}, None),
    ],
)
def test_private_dns_defaults_to_true_for_interface_endpoints_only(overrides, private_dns):
    assert vpc_endpoint.wanted_from_params(params(**overrides))["private_dns_enabled"] is private_dns


# --- lookup ---------------------------------------------------------------------------------------


def _at(day):
    return datetime.datetime(2024, 5, day, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    "found, kind, chosen, others",
    [
        ([], "Interface", None, []),
        ([endpoint(State="deleted")], "Interface", None, []),
        ([endpoint(VpcEndpointId="vpce-%s" % s, State=s)
          for s in ("deleted", "deleting", "failed", "rejected", "expired", "Deleted")], "Interface", None, []),
        ([endpoint(VpcEndpointId="vpce-old", State="deleted", CreationTimestamp=_at(1)),
          endpoint(VpcEndpointId="vpce-new", CreationTimestamp=_at(2))], "Interface", "vpce-new", []),
        ([endpoint(VpcEndpointId="vpce-pending", State="pending")], "Interface", "vpce-pending", []),
        ([endpoint(VpcEndpointId="vpce-accept", State="pendingAcceptance")], "Interface", "vpce-accept", []),
        ([endpoint(VpcEndpointId="vpce-b", CreationTimestamp=_at(3)),
          endpoint(VpcEndpointId="vpce-a", CreationTimestamp=_at(1)),
          endpoint(VpcEndpointId="vpce-c", CreationTimestamp=_at(2))], "Interface", "vpce-a", ["vpce-c", "vpce-b"]),
        ([endpoint(VpcEndpointId="vpce-gw", VpcEndpointType="Gateway", CreationTimestamp=_at(1)),
          endpoint(VpcEndpointId="vpce-if", CreationTimestamp=_at(2))], "Interface", "vpce-if", []),
        ([endpoint(VpcEndpointId="vpce-gw", VpcEndpointType="Gateway", CreationTimestamp=_at(1)),
          endpoint(VpcEndpointId="vpce-if", CreationTimestamp=_at(2))], "Gateway", "vpce-gw", []),
        ([endpoint(VpcEndpointId="vpce-lower", VpcEndpointType="gateway")], "Gateway", "vpce-lower", []),
    ],
)
def test_pick_endpoint_ignores_dead_ones_and_takes_the_oldest(found, kind, chosen, others):
    picked, rest = vpc_endpoint.pick_endpoint(found, kind)
    assert (picked or {}).get("VpcEndpointId") == chosen
    assert [e["VpcEndpointId"] for e in rest] == others


# --- the modify plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, wanted, plan",
    [
        # nothing asked, nothing done (private DNS already on)
        ({}, {}, {}),
        # the same lists in another order are no change
        ({}, {"subnet_ids": ["subnet-b", "subnet-a"], "security_group_ids": ["sg-1"]}, {}),
        # lists are made exactly what is given
        ({}, {"subnet_ids": ["subnet-a", "subnet-c"]}, {"AddSubnetIds": ["subnet-c"], "RemoveSubnetIds": ["subnet-b"]}),
        ({}, {"subnet_ids": ["subnet-a", "subnet-b", "subnet-c"]}, {"AddSubnetIds": ["subnet-c"]}),
        ({}, {"subnet_ids": ["subnet-b"]}, {"RemoveSubnetIds": ["subnet-a"]}),
        ({}, {"security_group_ids": ["sg-2"]}, {"AddSecurityGroupIds": ["sg-2"], "RemoveSecurityGroupIds": ["sg-1"]}),
        ({"Groups": []}, {"security_group_ids": ["sg-1", "sg-2"]}, {"AddSecurityGroupIds": ["sg-1", "sg-2"]}),
        # an empty list is a list given: purge everything
        ({}, {"security_group_ids": []}, {"RemoveSecurityGroupIds": ["sg-1"]}),
        # private DNS drift either way
        ({"PrivateDnsEnabled": False}, {"private_dns_enabled": True}, {"PrivateDnsEnabled": True}),
        ({}, {"private_dns_enabled": False}, {"PrivateDnsEnabled": False}),
        ({"PrivateDnsEnabled": None}, {"private_dns_enabled": True}, {"PrivateDnsEnabled": True}),
        ({"PrivateDnsEnabled": False}, {"private_dns_enabled": None}, {}),
        # route tables on a gateway
        ({"VpcEndpointType": "Gateway", "SubnetIds": [], "Groups": [], "RouteTableIds": ["rtb-1"]},
         {"route_table_ids": ["rtb-2", "rtb-1"]}, {"AddRouteTableIds": ["rtb-2"]}),
        ({"VpcEndpointType": "Gateway", "SubnetIds": [], "Groups": [], "RouteTableIds": ["rtb-1", "rtb-2"]},
         {"route_table_ids": []}, {"RemoveRouteTableIds": ["rtb-1", "rtb-2"]}),
        # policies compare as documents, not as strings
        ({}, {"policy": json.dumps(ALLOW_ALL, indent=4, sort_keys=True)}, {}),
        ({}, {"policy": json.dumps({"Statement": ALLOW_ALL["Statement"]})}, {}),
        ({"PolicyDocument": None}, {"policy": json.dumps(ALLOW_ALL)}, {"PolicyDocument": json.dumps(ALLOW_ALL)}),
        ({}, {"policy": '{"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]}'},
         {"PolicyDocument": '{"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]}'}),
        # everything at once
        ({"PrivateDnsEnabled": False},
         {"subnet_ids": ["subnet-c"], "security_group_ids": ["sg-2"], "private_dns_enabled": True},
         {"AddSubnetIds": ["subnet-c"], "RemoveSubnetIds": ["subnet-a", "subnet-b"], "AddSecurityGroupIds": ["sg-2"],
          "RemoveSecurityGroupIds": ["sg-1"], "PrivateDnsEnabled": True}),
    ],
)
def test_plan_modify(current, wanted, plan):
    full_wanted = {"subnet_ids": None, "security_group_ids": None, "route_table_ids": None,
                   "private_dns_enabled": True, "policy": None}
    full_wanted.update(wanted)
    assert vpc_endpoint.plan_modify(endpoint(**current), full_wanted) == plan


@pytest.mark.parametrize(
    "plan, subnets, groups, tables, private_dns",
    [
        ({}, ["subnet-a", "subnet-b"], ["sg-1"], [], True),
        ({"AddSubnetIds": ["subnet-c"], "RemoveSubnetIds": ["subnet-a"]}, ["subnet-b", "subnet-c"], ["sg-1"], [], True),
        ({"AddSecurityGroupIds": ["sg-2"], "RemoveSecurityGroupIds": ["sg-1"]}, ["subnet-a", "subnet-b"], ["sg-2"], [], True),
        ({"AddRouteTableIds": ["rtb-1"]}, ["subnet-a", "subnet-b"], ["sg-1"], ["rtb-1"], True),
        ({"PrivateDnsEnabled": False}, ["subnet-a", "subnet-b"], ["sg-1"], [], False),
    ],
)
def test_apply_modify_predicts_on_a_copy(plan, subnets, groups, tables, private_dns):
    before = endpoint()
    after = vpc_endpoint.apply_modify(before, plan)
    assert after["SubnetIds"] == subnets
    assert [g["GroupId"] for g in after["Groups"]] == groups
    assert after["RouteTableIds"] == tables
    assert after["PrivateDnsEnabled"] is private_dns
    assert before == endpoint()


def test_a_predicted_modify_needs_no_further_change():
    current = endpoint(PrivateDnsEnabled=False)
    wanted = {"subnet_ids": ["subnet-c"], "security_group_ids": ["sg-2", "sg-3"], "route_table_ids": None,
              "private_dns_enabled": True, "policy": '{"Statement": []}'}
    after = vpc_endpoint.apply_modify(current, vpc_endpoint.plan_modify(current, wanted))
    assert vpc_endpoint.plan_modify(after, wanted) == {}


# --- tags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, purge, to_set, to_unset, result",
    [
        (None, False, {}, [], {"Name": "ssm"}),
        (None, True, {}, [], {"Name": "ssm"}),
        ({"Name": "ssm"}, False, {}, [], {"Name": "ssm"}),
        ({"Team": "ops"}, False, {"Team": "ops"}, [], {"Name": "ssm", "Team": "ops"}),
        ({"Team": "ops"}, True, {"Team": "ops"}, ["Name"], {"Team": "ops"}),
        ({"Name": "other"}, False, {"Name": "other"}, [], {"Name": "other"}),
        ({}, True, {}, ["Name"], {}),
        ({}, False, {}, [], {"Name": "ssm"}),
    ],
)
def test_plan_and_apply_tags(tags, purge, to_set, to_unset, result):
    planned_set, planned_unset = vpc_endpoint.plan_tags(endpoint(), tags, purge)
    assert (planned_set, planned_unset) == (to_set, to_unset)
    after = vpc_endpoint.apply_tags(endpoint(), planned_set, planned_unset)
    assert vpc_endpoint.to_result(after)["tags"] == result


# --- create ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, service, tags, expected",
    [
        ({"subnet_ids": ["subnet-a"], "security_group_ids": ["sg-1"]}, SSM, None,
         {"VpcId": "vpc-1", "ServiceName": SSM, "VpcEndpointType": "Interface", "SubnetIds": ["subnet-a"],
          "SecurityGroupIds": ["sg-1"], "PrivateDnsEnabled": True}),
        ({"private_dns_enabled": False}, SSM, None,
         {"VpcId": "vpc-1", "ServiceName": SSM, "VpcEndpointType": "Interface", "PrivateDnsEnabled": False}),
        ({"vpc_endpoint_type": "Gateway", "route_table_ids": ["rtb-1"], "policy": '{"Statement": []}'},
         "com.amazonaws.eu-west-1.s3", {"Name": "s3"},
         {"VpcId": "vpc-1", "ServiceName": "com.amazonaws.eu-west-1.s3", "VpcEndpointType": "Gateway",
          "RouteTableIds": ["rtb-1"], "PolicyDocument": '{"Statement": []}',
          "TagSpecifications": [{"ResourceType": "vpc-endpoint", "Tags": [{"Key": "Name", "Value": "s3"}]}]}),
    ],
)
def test_create_params(overrides, service, tags, expected):
    p = params(**overrides)
    wanted = vpc_endpoint.wanted_from_params(p)
    assert vpc_endpoint.create_params("vpc-1", service, p["vpc_endpoint_type"], wanted, tags) == expected


def test_predicted_new_endpoint():
    p = params(subnet_ids=["subnet-b", "subnet-a"], security_group_ids=["sg-1"], tags={"Name": "ssm"})
    create = vpc_endpoint.create_params("vpc-1", SSM, "Interface", vpc_endpoint.wanted_from_params(p), p["tags"])
    predicted = vpc_endpoint.predict_created(create, wait=True)
    assert vpc_endpoint.to_result(predicted) == {
        "vpc_endpoint_id": None,
        "vpc_endpoint_type": "Interface",
        "vpc_id": "vpc-1",
        "service_name": SSM,
        "state": "available",
        "subnet_ids": ["subnet-b", "subnet-a"],
        "groups": [{"group_id": "sg-1"}],
        "route_table_ids": [],
        "private_dns_enabled": True,
        "tags": {"Name": "ssm"},
    }
    assert vpc_endpoint.diff_view(predicted) == {
        "service_name": SSM, "vpc_endpoint_type": "Interface", "subnet_ids": ["subnet-a", "subnet-b"],
        "security_group_ids": ["sg-1"], "route_table_ids": [], "private_dns_enabled": True, "state": "available",
    }
    assert vpc_endpoint.predict_created(create, wait=False)["State"] == "pending"


# --- views ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, view",
    [
        (None, {}),
        ({}, {}),
        (endpoint(SubnetIds=["subnet-b", "subnet-a"], Groups=[{"GroupId": "sg-2"}, {"GroupId": "sg-1"}]),
         {"service_name": SSM, "vpc_endpoint_type": "Interface", "subnet_ids": ["subnet-a", "subnet-b"],
          "security_group_ids": ["sg-1", "sg-2"], "route_table_ids": [], "private_dns_enabled": True,
          "state": "available"}),
        (endpoint(VpcEndpointType="Gateway", SubnetIds=None, Groups=None, RouteTableIds=["rtb-2", "rtb-1"],
                  PrivateDnsEnabled=None),
         {"service_name": SSM, "vpc_endpoint_type": "Gateway", "subnet_ids": [], "security_group_ids": [],
          "route_table_ids": ["rtb-1", "rtb-2"], "private_dns_enabled": False, "state": "available"}),
    ],
)
def test_diff_view(value, view):
    assert vpc_endpoint.diff_view(value) == view


def test_to_result_is_snake_case_with_tags_as_a_dict():
    result = vpc_endpoint.to_result(endpoint(Tags=[{"Key": "Name", "Value": "ssm"}, {"Key": "CamelCase", "Value": "x"}]))
    assert result["vpc_endpoint_id"] == "vpce-1"
    assert result["groups"] == [{"group_id": "sg-1", "group_name": "one"}]
    assert result["tags"] == {"Name": "ssm", "CamelCase": "x"}
    assert result["creation_timestamp"] == "2024-05-01T12:00:00+00:00"
    assert vpc_endpoint.to_result(None) == {}


# --- waiting --------------------------------------------------------------------------------------


class FakeClient:
    """Answers DescribeVpcEndpoints by id from a script of states; None means 'not found'."""

    def __init__(self, states):
        self.states = list(states)
        self.calls = 0

    def describe_vpc_endpoints(self, VpcEndpointIds):
        self.calls += 1
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            return {"VpcEndpoints": []}
        return {"VpcEndpoints": [endpoint(VpcEndpointId=VpcEndpointIds[0], State=state)]}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.mark.parametrize(
    "states, polls",
    [
        (["available"], 1),
        (["pending", "pending", "available"], 3),
    ],
)
def test_wait_available(states, polls):
    client, clock = FakeClient(states), Clock()
    found = vpc_endpoint.wait_available(client, "vpce-1", SSM, 320, sleep=clock.sleep, clock=clock)
    assert found["State"] == "available"
    assert client.calls == polls


@pytest.mark.parametrize(
    "states, message",
    [
        (["pendingAcceptance"], "VPC endpoint vpce-1 for com.amazonaws.eu-west-1.ssm is pendingAcceptance: the owner of "
                                "com.amazonaws.eu-west-1.ssm must accept the connection"),
        (["pending", "failed"], "VPC endpoint vpce-1 for com.amazonaws.eu-west-1.ssm became failed while waiting"),
        ([None], "became missing while waiting"),
        (["pending"], "Timed out after 20s waiting for VPC endpoint vpce-1 for com.amazonaws.eu-west-1.ssm to be "
                      "available (it is pending): raise wait_timeout or set wait=false."),
    ],
)
def test_wait_available_errors(states, message):
    clock = Clock()
    with pytest.raises(AnsibleEC2Error) as caught:
        vpc_endpoint.wait_available(FakeClient(states), "vpce-1", SSM, 20, sleep=clock.sleep, clock=clock)
    assert message in caught.value.message


@pytest.mark.parametrize("states", [["deleted"], [None], ["deleting", "deleting", "deleted"], ["deleting", None]])
def test_wait_gone(states):
    clock = Clock()
    vpc_endpoint.wait_gone(FakeClient(states), "vpce-1", SSM, 320, sleep=clock.sleep, clock=clock)


def test_wait_gone_times_out():
    clock = Clock()
    with pytest.raises(AnsibleEC2Error, match="to be deleted \\(it is deleting\\)"):
        vpc_endpoint.wait_gone(FakeClient(["deleting"]), "vpce-1", SSM, 20, sleep=clock.sleep, clock=clock)


# --- deletion -------------------------------------------------------------------------------------


class DeletingClient:
    def __init__(self, unsuccessful):
        self.unsuccessful = unsuccessful

    def delete_vpc_endpoints(self, VpcEndpointIds):
        return {"Unsuccessful": self.unsuccessful}


@pytest.mark.parametrize(
    "unsuccessful",
    [
        [],
        [{"ResourceId": "vpce-1", "Error": {"Code": "InvalidVpcEndpoint.NotFound", "Message": "gone already"}}],
    ],
)
def test_delete_endpoint_succeeds_when_nothing_or_only_not_found_is_unsuccessful(unsuccessful):
    vpc_endpoint.delete_endpoint(DeletingClient(unsuccessful), "vpce-1")


def test_delete_endpoint_turns_unsuccessful_items_into_an_error():
    client = DeletingClient([{"ResourceId": "vpce-1", "Error": {"Code": "OperationNotPermitted", "Message": "no"}}])
    with pytest.raises(AnsibleEC2Error) as caught:
        vpc_endpoint.delete_endpoint(client, "vpce-1")
    assert caught.value.message == "Failed to delete VPC endpoint vpce-1: OperationNotPermitted: no"
