"""DescribeInstanceInformation over the main lab's 6 EC2 and 2 hybrid nodes: paging, filters, hybrid fields."""

from __future__ import annotations

import secrets

import pytest
from botocore.exceptions import ClientError


def _ids(lab, **kwargs) -> list[str]:
    return [i["InstanceId"] for i in lab.ssm.describe_instance_information(**kwargs)["InstanceInformationList"]]


@pytest.fixture
def online(main_lab):
    main_lab.wait_all_online()
    return main_lab


def test_the_lab_has_six_ec2_and_two_hybrid_nodes(online):
    assert len(online.ec2_ids) == 6
    assert len(online.hybrid_ids) == 2


def test_pages_of_five_list_every_node_once(online):
    seen, pages, token = [], [], None
    while True:
        kwargs = {"MaxResults": 5, **({"NextToken": token} if token else {})}
        page = online.ssm.describe_instance_information(**kwargs)
        pages.append(len(page["InstanceInformationList"]))
        seen += [i["InstanceId"] for i in page["InstanceInformationList"]]
        token = page.get("NextToken")
        if not token:
            break
    assert pages == [5, 3]
    assert len(seen) == len(set(seen)) == 8
    assert set(seen) == set(online.node_ids)


def test_paginator_agrees(online):
    paginator = online.ssm.get_paginator("describe_instance_information")
    ids = [i["InstanceId"] for page in paginator.paginate(PaginationConfig={"PageSize": 5})
           for i in page["InstanceInformationList"]]
    assert sorted(ids) == sorted(online.node_ids)


def test_max_results_above_50_is_rejected(online):
    with pytest.raises(ClientError) as raised:
        online.ssm.describe_instance_information(MaxResults=51)
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_filter_by_ping_status(online):
    assert sorted(_ids(online, Filters=[{"Key": "PingStatus", "Values": ["Online"]}])) == sorted(online.node_ids)
    assert _ids(online, Filters=[{"Key": "PingStatus", "Values": ["ConnectionLost", "Inactive"]}]) == []
    legacy = _ids(online, InstanceInformationFilterList=[{"key": "PingStatus", "valueSet": ["Online"]}])
    assert sorted(legacy) == sorted(online.node_ids)


def test_filter_by_resource_type(online):
    managed = online.ssm.describe_instance_information(
        Filters=[{"Key": "ResourceType", "Values": ["ManagedInstance"]}])["InstanceInformationList"]
    assert sorted(i["InstanceId"] for i in managed) == sorted(online.hybrid_ids)
    assert all(i["InstanceId"].startswith("mi-") for i in managed)
    assert all(i["ResourceType"] == "ManagedInstance" for i in managed)
    ec2 = _ids(online, Filters=[{"Key": "ResourceType", "Values": ["EC2Instance"]}])
    assert sorted(ec2) == sorted(online.ec2_ids)


def test_filter_by_instance_ids(online):
    wanted = [online.ec2_ids[1], online.hybrid_ids[0]]
    assert sorted(_ids(online, Filters=[{"Key": "InstanceIds", "Values": wanted}])) == sorted(wanted)


def test_filter_by_name_tag(online):
    assert _ids(online, Filters=[{"Key": "tag:Name", "Values": ["lab-node-3"]}]) == [online.ec2_ids[2]]
    assert sorted(_ids(online, Filters=[{"Key": "tag:ssm-lab", "Values": ["node"]}])) == sorted(online.ec2_ids)
    assert _ids(online, Filters=[{"Key": "tag:Name", "Values": ["no-such-node"]}]) == []


def test_ec2_node_fields(online):
    node = online.ec2_ids[0]
    [info] = online.ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [node]}])["InstanceInformationList"]
    instance = online.instance(node)
    assert info["ResourceType"] == "EC2Instance"
    assert info["PingStatus"] == "Online"
    assert info["IPAddress"] == instance["PrivateIpAddress"]
    assert info["ComputerName"] == "ip-" + instance["PrivateIpAddress"].replace(".", "-") + ".ec2.internal"
    assert info["PlatformType"] == "Linux"
    assert info["PlatformName"] == "Amazon Linux"
    assert "Name" not in info and "IamRole" not in info


def test_hybrid_node_fields(online):
    infos = online.ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": online.hybrid_ids}])["InstanceInformationList"]
    assert len(infos) == 2
    for info in infos:
        assert info["ResourceType"] == "ManagedInstance"
        assert info["Name"].startswith("lab-hybrid-")
        assert info["IamRole"] == "SSMServiceRole"
        assert info["RegistrationDate"].year >= 2024
        assert info["ActivationId"]


def test_tags_added_to_a_managed_instance_are_filterable(online):
    hybrid = online.hybrid_ids[1]
    value = f"team-{secrets.token_hex(4)}"
    online.ssm.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=hybrid,
                                    Tags=[{"Key": "Team", "Value": value}])
    assert _ids(online, Filters=[{"Key": "tag:Team", "Values": [value]}]) == [hybrid]
    tags = online.ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=hybrid)["TagList"]
    assert {"Key": "Team", "Value": value} in tags
    online.ssm.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=hybrid, TagKeys=["Team"])
    assert _ids(online, Filters=[{"Key": "tag:Team", "Values": [value]}]) == []
