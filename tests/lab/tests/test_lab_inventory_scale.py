"""What the managed_nodes inventory and its benchmark need from the lab at scale: record nodes registered with
batched RunInstances, hybrid records, DescribeInstances paged by instance as on AWS, GetInventory and the
tagging API's GetResources for managed instances, all with AWS's page limits."""

from __future__ import annotations

import json
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

RECORDS = 600
HYBRID_RECORDS = 30
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def scale_lab(start_lab):
    with start_lab("scale-lab", "--nodes", "0", "--records", str(RECORDS), "--hybrid-records",
                   str(HYBRID_RECORDS)) as lab:
        yield lab


def _calls(lab) -> dict:
    with urllib.request.urlopen(f"{lab.endpoint}/_lab/calls", timeout=10) as response:
        return json.load(response)["calls"]


def _all_information(ssm, **kwargs) -> list[dict]:
    rows, token = [], None
    while True:
        page = ssm.describe_instance_information(MaxResults=50, **kwargs, **({"NextToken": token} if token else {}))
        rows += page["InstanceInformationList"]
        token = page.get("NextToken")
        if not token:
            return rows


def _instances(page: dict) -> list[dict]:
    return [i for reservation in page["Reservations"] for i in reservation["Instances"]]


def _error(call, **kwargs) -> str:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return raised.value.response["Error"]["Code"]


# --- registration -----------------------------------------------------------------------------------------------


def test_records_are_launched_500_per_run_instances_into_subnets_of_their_own(scale_lab):
    assert _calls(scale_lab)["ec2:RunInstances"] == 2  # 500 + 100
    (subnet,) = scale_lab.network["record_subnets"]
    described = scale_lab.ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]
    assert described["CidrBlock"] == "10.42.16.0/20"
    assert {t["Key"]: t["Value"] for t in described["Tags"]}["Tier"] == "private"
    ids = [n for n in scale_lab.node_ids if n.startswith("i-")]
    assert len(ids) == len(set(ids)) == RECORDS


def test_every_record_is_registered_once_and_refuses_sessions(scale_lab):
    rows = _all_information(scale_lab.ssm)
    assert len(rows) == len({r["InstanceId"] for r in rows}) == RECORDS + HYBRID_RECORDS
    assert set(scale_lab.node_ids) == {r["InstanceId"] for r in rows}
    assert {r["PingStatus"] for r in rows} == {"Online"}
    ec2_record = next(r for r in rows if r["InstanceId"].startswith("i-"))
    hybrid_record = next(r for r in rows if r["InstanceId"].startswith("mi-"))
    assert ec2_record["ResourceType"] == "EC2Instance"
    assert ec2_record["ComputerName"].endswith(".ec2.internal")
    assert hybrid_record["ResourceType"] == "ManagedInstance" and hybrid_record["Name"].startswith("lab-hybrid-")
    for record in (ec2_record, hybrid_record):
        assert _error(scale_lab.ssm.start_session, Target=record["InstanceId"]) == "TargetNotConnected"
    tags = scale_lab.ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=hybrid_record["InstanceId"])
    assert {t["Key"]: t["Value"] for t in tags["TagList"]} == {"Name": hybrid_record["Name"], "Env": "onprem"}


def test_records_share_their_name_tag_like_an_auto_scaling_group(scale_lab):
    names = scale_lab.ssm.describe_instance_information(
        Filters=[{"Key": "tag:Name", "Values": ["lab-record"]}, {"Key": "tag:ssm-lab-kind", "Values": ["record"]}],
        MaxResults=5)
    assert len(names["InstanceInformationList"]) == 5 and names.get("NextToken")


def test_instance_information_pages_come_from_one_snapshot(scale_lab):
    first = scale_lab.ssm.describe_instance_information(MaxResults=50)
    token = first["NextToken"]
    again = scale_lab.ssm.describe_instance_information(MaxResults=50, NextToken=token)
    assert again == {**scale_lab.ssm.describe_instance_information(MaxResults=50, NextToken=token),
                     "ResponseMetadata": again["ResponseMetadata"]}
    assert {r["InstanceId"] for r in first["InstanceInformationList"]}.isdisjoint(
        r["InstanceId"] for r in again["InstanceInformationList"])
    assert _error(scale_lab.ssm.describe_instance_information, NextToken="bm90IGEgdG9rZW4=") == "InvalidNextToken"


def test_an_instance_ids_filter_takes_at_most_100_values(scale_lab):
    ids = [n for n in scale_lab.node_ids if n.startswith("i-")]
    found = scale_lab.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ids[:50]}],
                                                        MaxResults=50)
    assert sorted(r["InstanceId"] for r in found["InstanceInformationList"]) == sorted(ids[:50])
    assert "NextToken" not in found
    assert _error(scale_lab.ssm.describe_instance_information,
                  Filters=[{"Key": "InstanceIds", "Values": ids[:101]}]) == "ValidationException"


# --- DescribeInstances as AWS pages it -------------------------------------------------------------------------------


def test_describe_instances_pages_by_instance_up_to_1000(scale_lab):
    ec2 = scale_lab.client("ec2", config=NO_RETRIES)
    assert len(_instances(ec2.describe_instances(MaxResults=1000))) == RECORDS
    assert len(_instances(ec2.describe_instances())) == RECORDS  # no MaxResults: everything at once
    pages, token, reservations = [], None, []
    while True:
        page = ec2.describe_instances(MaxResults=250, **({"NextToken": token} if token else {}))
        pages.append(len(_instances(page)))
        reservations += [r["ReservationId"] for r in page["Reservations"]]
        token = page.get("NextToken")
        if not token:
            break
    assert pages == [250, 250, 100]
    assert reservations[0] == reservations[1] != reservations[2]  # the 500-instance reservation spans 2 pages
    for size in (4, 1001):
        with pytest.raises(ClientError) as raised:
            ec2.describe_instances(MaxResults=size)
        assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert "between 5 and 1000" in raised.value.response["Error"]["Message"]


def test_instance_id_filters_and_changes_show_at_once(scale_lab):
    ec2 = scale_lab.ec2
    ids = [n for n in scale_lab.node_ids if n.startswith("i-")][:200]
    page = ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": ids}], MaxResults=1000)
    assert sorted(i["InstanceId"] for i in _instances(page)) == sorted(ids)
    target = ids[7]
    before = scale_lab.instance(target)
    ec2.create_tags(Resources=[target], Tags=[{"Key": "Seen", "Value": "yes"}])
    after = scale_lab.instance(target)
    assert {t["Key"]: t["Value"] for t in after["Tags"]}["Seen"] == "yes"
    assert "Seen" not in {t["Key"] for t in before["Tags"]}
    listed = [i for i in _instances(ec2.describe_instances(Filters=[{"Name": "tag:Seen", "Values": ["yes"]}]))]
    assert [i["InstanceId"] for i in listed] == [target]
    ec2.stop_instances(InstanceIds=[target])
    assert scale_lab.instance(target)["State"]["Name"] in ("stopping", "stopped")


# --- GetInventory (amazon.aws.aws_ec2's use_ssm_inventory) -------------------------------------------------------


def test_get_inventory_answers_instance_information_40_ids_at_a_time(scale_lab):
    ids = [n for n in scale_lab.node_ids if n.startswith("i-")][:40]
    found = scale_lab.ssm.get_inventory(Filters=[{"Key": "AWS:InstanceInformation.InstanceId", "Values": ids}])
    assert sorted(e["Id"] for e in found["Entities"]) == sorted(ids)
    item = found["Entities"][0]["Data"]["AWS:InstanceInformation"]
    assert item["TypeName"] == "AWS:InstanceInformation" and item["SchemaVersion"] == "1.0"
    (content,) = item["Content"]
    assert content["InstanceId"] == found["Entities"][0]["Id"]
    assert content["PlatformType"] == "Linux" and content["InstanceStatus"] == "Active"
    assert content["ResourceType"] == "EC2Instance" and content["ComputerName"].startswith("ip-10-42-")
    assert all(isinstance(v, str) for v in content.values())
    ssm = scale_lab.client("ssm", config=NO_RETRIES)
    assert _error(ssm.get_inventory, Filters=[{"Key": "AWS:InstanceInformation.InstanceId",
                                               "Values": ids + ["i-0"]}]) == "ValidationException"
    assert _error(ssm.get_inventory, MaxResults=51) == "ValidationException"


def test_get_inventory_pages_and_filters(scale_lab):
    entities, token, pages = [], None, 0
    while True:
        page = scale_lab.ssm.get_inventory(MaxResults=50, **({"NextToken": token} if token else {}))
        entities += page["Entities"]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages == -(-(RECORDS + HYBRID_RECORDS) // 50)
    assert len({e["Id"] for e in entities}) == RECORDS + HYBRID_RECORDS
    hybrids = scale_lab.ssm.get_inventory(Filters=[{"Key": "AWS:InstanceInformation.ResourceType",
                                                    "Values": ["ManagedInstance"], "Type": "Equal"}])["Entities"]
    assert len(hybrids) == HYBRID_RECORDS and all(e["Id"].startswith("mi-") for e in hybrids)
    not_ec2 = scale_lab.ssm.get_inventory(Filters=[{"Key": "AWS:InstanceInformation.InstanceId",
                                                    "Values": ["i-"], "Type": "BeginWith"}], MaxResults=5)
    assert all(e["Id"].startswith("i-") for e in not_ec2["Entities"]) and not_ec2.get("NextToken")
    other_type = scale_lab.ssm.get_inventory(Filters=[{"Key": "AWS:Application.Name", "Values": ["nginx"]}])
    assert other_type["Entities"] == []  # the lab records no other inventory type


# --- GetResources for managed instances (their SSM tags in bulk) --------------------------------------------------


def test_get_resources_lists_the_hybrid_nodes_tags_100_a_page(scale_lab):
    tagging = scale_lab.client("resourcegroupstaggingapi")
    page = tagging.get_resources(ResourceTypeFilters=["ssm:managed-instance"], ResourcesPerPage=100)
    assert page["PaginationToken"] == "" and len(page["ResourceTagMappingList"]) == HYBRID_RECORDS
    mapping = page["ResourceTagMappingList"][0]
    node_id = mapping["ResourceARN"].rsplit("/", 1)[1]
    assert mapping["ResourceARN"] == f"arn:aws:ssm:us-east-1:123456789012:managed-instance/{node_id}"
    scale_lab.ssm.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=node_id,
                                       Tags=[{"Key": "Team", "Value": "db"}])
    seen, token, pages = {}, None, 0
    while True:
        page = tagging.get_resources(ResourceTypeFilters=["ssm:managed-instance"], ResourcesPerPage=12,
                                     **({"PaginationToken": token} if token else {}))
        pages += 1
        seen.update({m["ResourceARN"]: m["Tags"] for m in page["ResourceTagMappingList"]})
        token = page["PaginationToken"]
        if not token:
            break
    assert pages == 3 and len(seen) == HYBRID_RECORDS
    assert {"Key": "Team", "Value": "db"} in seen[mapping["ResourceARN"]]
    team = tagging.get_resources(ResourceTypeFilters=["ssm:managed-instance"],
                                 TagFilters=[{"Key": "Team", "Values": ["db"]}])["ResourceTagMappingList"]
    assert [m["ResourceARN"] for m in team] == [mapping["ResourceARN"]]
    with pytest.raises(ClientError):
        scale_lab.client("resourcegroupstaggingapi", config=NO_RETRIES).get_resources(
            ResourceTypeFilters=["ssm:managed-instance"], ResourcesPerPage=101)
