"""Pure logic of the bastionless.ssm.managed_nodes inventory: filters, the join plan, host names, variables, groups.

RegionFetch runs here against an in-memory AWS (FakeAws) that answers the three list calls the way AWS does
(page sizes, filters, tokens) and counts them; the real calls over HTTP are proven against the lab in
tests/integration/test_inventory_managed_nodes.py.
"""

import concurrent.futures
import threading

import boto3
import botocore.exceptions
import pytest
from ansible.vars.reserved import is_reserved_name
from botocore.parsers import create_parser

from ansible_collections.bastionless.ssm.plugins.plugin_utils import managed_nodes as mn

# --- options and filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, expected",
    [
        (None, ["Online"]),
        (["Online"], ["Online"]),
        (["all"], None),
        (["Online", "all"], None),
        (["ConnectionLost", "Online", "Online"], ["ConnectionLost", "Online"]),
    ],
)
def test_wanted_ping_statuses(option, expected):
    assert mn.wanted_ping_statuses(option) == expected


def test_an_unknown_ping_status_names_the_option_and_the_choices():
    with pytest.raises(mn.ManagedNodesError, match=r"ping_status: unknown value\(s\) online; use Online"):
        mn.wanted_ping_statuses(["online"])


@pytest.mark.parametrize(
    "filters, ping, expected",
    [
        ({}, ["Online"], [{"Name": "instance-state-name", "Values": ["running"]}]),
        ({}, None, [{"Name": "instance-state-name", "Values": mn.LISTED_STATES}]),
        ({}, ["ConnectionLost"], [{"Name": "instance-state-name", "Values": mn.LISTED_STATES}]),
        ({"tag:Env": "prod"}, ["Online"],
         [{"Name": "tag:Env", "Values": ["prod"]}, {"Name": "instance-state-name", "Values": ["running"]}]),
        ({"instance-state-name": ["stopped"], "tag:On": True}, ["Online"],
         [{"Name": "instance-state-name", "Values": ["stopped"]}, {"Name": "tag:On", "Values": ["true"]}]),
    ],
)
def test_ec2_filter_list(filters, ping, expected):
    assert mn.ec2_filter_list(filters, ping) == expected


def test_exclude_filters_get_no_state_filter():
    assert mn.ec2_filter_list({"tag:Drain": "yes"}, None, states=False) == [{"Name": "tag:Drain", "Values": ["yes"]}]


@pytest.mark.parametrize(
    "filters, include, expected",
    [
        ({}, [], [{}]),
        ({"tag:A": "1"}, [], [{"tag:A": "1"}]),
        ({"tag:A": "1"}, [{"tag:B": "2"}], [{"tag:A": "1"}, {"tag:B": "2"}]),
        ({}, [{"tag:B": "2"}], [{"tag:B": "2"}]),
    ],
)
def test_include_filter_dicts(filters, include, expected):
    assert mn.include_filter_dicts(filters, include) == expected


def hybrid(instance_id="mi-0123456789abcdef0", tags=None, ip="192.168.50.11", platform="Linux", region="us-east-1"):
    return {"region": region, "ec2": None, "tags": tags if tags is not None else {"Env": "onprem", "Name": "db-1"},
            "ssm": {"instance_id": instance_id, "ip_address": ip, "platform_type": platform, "ping_status": "Online",
                    "resource_type": "ManagedInstance", "computer_name": "db-1.corp.example"}}


@pytest.mark.parametrize(
    "filters, matches",
    [
        ({}, True),
        ({"tag:Env": "onprem"}, True),
        ({"tag:Env": ["prod", "onprem"]}, True),
        ({"tag:Env": "prod"}, False),
        ({"tag:Name": "db-*"}, True),
        ({"tag:Name": "db-?"}, True),
        ({"tag:Name": "DB-*"}, False),  # case sensitive, as EC2
        ({"tag:Name": "db.*"}, False),  # a dot is a dot, not a regular expression
        ({"tag:Missing": "*"}, False),
        ({"tag-key": "Env"}, True),
        ({"tag-key": "Team"}, False),
        ({"tag-value": "onprem"}, True),
        ({"instance-id": "mi-0123456789abcdef0"}, True),
        ({"instance-id": "i-*"}, False),
        ({"private-ip-address": "192.168.50.*"}, True),
        ({"platform": "windows"}, False),
        ({"instance-state-name": "running"}, True),  # no instance state on a hybrid node: ignored
        ({"instance-state-name": "running", "tag:Env": "prod"}, False),
        ({"vpc-id": "vpc-12345678"}, False),  # a key hybrid nodes do not have does not match
    ],
)
def test_ec2_filters_on_a_hybrid_node(filters, matches):
    assert mn.hybrid_matches(hybrid(), filters) is matches


def test_windows_hybrid_matches_platform_windows():
    assert mn.hybrid_matches(hybrid(platform="Windows"), {"platform": "windows"})


def test_hybrid_selected_includes_any_and_excludes_any():
    node = hybrid()
    assert mn.hybrid_selected(node, [{"tag:Env": "prod"}, {"tag:Env": "onprem"}], [])
    assert not mn.hybrid_selected(node, [{}], [{"tag:Name": "db-*"}])
    assert not mn.hybrid_selected(node, [{"tag:Env": "prod"}], [])


@pytest.mark.parametrize("size, expected", [(0, []), (3, [[0, 1], [2]]), (4, [[0, 1], [2, 3]])])
def test_chunks(size, expected):
    assert mn.chunks(range(size), 2) == expected


# --- AWS answers --------------------------------------------------------------------------------------------


def test_node_information_snake_cases_and_drops_empty_fields():
    import datetime

    info = {"InstanceId": "i-1", "PingStatus": "Online", "IPAddress": "10.0.0.1", "ComputerName": "",
            "LastPingDateTime": datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            "IsLatestVersion": False, "Name": "web"}
    assert mn.node_information(info) == {
        "instance_id": "i-1", "ping_status": "Online", "ip_address": "10.0.0.1",
        "last_ping_date_time": "2025-01-02T03:04:05+00:00", "is_latest_version": False, "node_name": "web"}


def test_instance_facts_keep_placement_state_network_and_profile():
    instance = {"InstanceId": "i-1", "InstanceType": "t3.micro", "ImageId": "ami-1", "VpcId": "vpc-1",
                "SubnetId": "subnet-1", "PrivateIpAddress": "10.0.1.5", "PrivateDnsName": "ip-10-0-1-5.ec2.internal",
                "PublicDnsName": "", "State": {"Code": 16, "Name": "running"},
                "Placement": {"AvailabilityZone": "eu-west-1b", "Tenancy": "default"},
                "IamInstanceProfile": {"Arn": "arn:aws:iam::1:instance-profile/p", "Id": "AIPA1"},
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvda"}]}
    assert mn.instance_facts(instance) == {
        "instance_type": "t3.micro", "image_id": "ami-1", "vpc_id": "vpc-1", "subnet_id": "subnet-1",
        "private_ip_address": "10.0.1.5", "private_dns_name": "ip-10-0-1-5.ec2.internal",
        "state": {"name": "running", "code": 16},
        "placement": {"availability_zone": "eu-west-1b", "region": "eu-west-1"},
        "iam_instance_profile": {"arn": "arn:aws:iam::1:instance-profile/p", "id": "AIPA1"}}


INSTANCE_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    b"<requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><ownerId>1</ownerId>"
    b"<groupSet/><instancesSet><item><instanceId>i-1</instanceId><imageId>ami-1</imageId><instanceState>"
    b"<code>16</code><name>running</name></instanceState><privateDnsName>ip-10-0-1-5.ec2.internal"
    b"</privateDnsName><dnsName/><reason/><amiLaunchIndex>0</amiLaunchIndex><productCodes/>"
    b"<instanceType>t3.micro</instanceType><placement><availabilityZone>eu-west-1b</availabilityZone>"
    b"</placement><monitoring><state>disabled</state></monitoring><subnetId>subnet-1</subnetId><vpcId>vpc-1"
    b"</vpcId><privateIpAddress>10.0.1.5</privateIpAddress><groupSet><item><groupId>sg-1</groupId>"
    b"<groupName>nodes</groupName></item></groupSet><blockDeviceMapping><item><deviceName>/dev/xvda"
    b"</deviceName><ebs><volumeId>vol-1</volumeId></ebs></item></blockDeviceMapping><iamInstanceProfile>"
    b"<arn>arn:aws:iam::1:instance-profile/p</arn><id>AIPA1</id></iamInstanceProfile><networkInterfaceSet>"
    b"<item><networkInterfaceId>eni-1</networkInterfaceId><groupSet><item><groupId>sg-1</groupId></item>"
    b"</groupSet><sourceDestCheck>true</sourceDestCheck></item></networkInterfaceSet><tagSet><item><key>Name"
    b"</key><value>web &lt;blockDeviceMapping&gt;</value></item></tagSet><metadataOptions><httpTokens>required"
    b"</httpTokens></metadataOptions></item></instancesSet></item></reservationSet>"
    b"<nextToken>t2</nextToken></DescribeInstancesResponse>"
)


def _parse_describe_instances(body):
    model = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a",
                         aws_secret_access_key="b").meta.service_model.operation_model("DescribeInstances")
    return create_parser("ec2").parse({"body": body, "headers": {}, "status_code": 200}, model.output_shape)


def test_dropping_unused_instance_xml_keeps_what_the_inventory_reads():
    response = {"body": INSTANCE_XML, "status_code": 200, "headers": {}}
    mn.drop_unused_instance_xml(response_dict=response)
    assert b"blockDeviceMapping>" not in response["body"].replace(b"&lt;blockDeviceMapping&gt;", b"")
    assert b"networkInterfaceSet" not in response["body"]
    full, lean = _parse_describe_instances(INSTANCE_XML), _parse_describe_instances(response["body"])
    assert lean["NextToken"] == "t2"
    instance = lean["Reservations"][0]["Instances"][0]
    assert "BlockDeviceMappings" not in instance and "NetworkInterfaces" not in instance
    assert instance["Tags"] == [{"Key": "Name", "Value": "web <blockDeviceMapping>"}]
    assert mn.instance_facts(instance) == mn.instance_facts(full["Reservations"][0]["Instances"][0])


def test_an_error_answer_is_left_alone():
    response = {"body": b"<Response><Errors><Error><Code>X</Code></Error></Errors></Response>", "status_code": 400}
    before = dict(response)
    mn.drop_unused_instance_xml(response_dict=response)
    assert response == before


# --- host names -------------------------------------------------------------------------------------------------


def ec2_node(instance_id, name=None, region="us-east-1", **ssm):
    tags = {"Name": name} if name else {}
    return {"region": region, "tags": tags,
            "ssm": {"instance_id": instance_id, "computer_name": f"{instance_id}.internal", "platform_type": "Linux",
                    "ping_status": "Online", "resource_type": "EC2Instance", **ssm},
            "ec2": {"private_dns_name": f"ip-{instance_id[-4:]}.ec2.internal", "private_ip_address": "10.0.0.9",
                    "placement": {"availability_zone": region + "a", "region": region}}}


def names(nodes, preferences, transform=None):
    return mn.assign_hostnames(nodes, mn.check_hostnames(preferences), transform)


def test_default_host_names_are_instance_ids():
    nodes = [ec2_node("i-0000000000000000b", "web"), hybrid()]
    assert names(nodes, None)[0] == {"i-0000000000000000b": "i-0000000000000000b",
                                     "mi-0123456789abcdef0": "mi-0123456789abcdef0"}


def test_tag_name_then_instance_id():
    nodes = [ec2_node("i-01", "web-1"), ec2_node("i-02"), hybrid()]
    assert names(nodes, ["tag:Name", "instance-id"])[0] == {"i-01": "web-1", "i-02": "i-02",
                                                            "mi-0123456789abcdef0": "db-1"}


def test_a_name_wanted_by_several_nodes_goes_to_none_of_them():
    nodes = [ec2_node("i-01", "asg"), ec2_node("i-02", "asg"), ec2_node("i-03", "asg"), ec2_node("i-04", "solo")]
    chosen, shared = names(nodes, ["tag:Name", "computer-name"])
    assert chosen == {"i-01": "i-01.internal", "i-02": "i-02.internal", "i-03": "i-03.internal", "i-04": "solo"}
    assert shared == {"asg": 3}
    assert len(set(chosen.values())) == len(nodes)


def test_a_name_equal_to_another_nodes_id_is_not_taken():
    nodes = [ec2_node("i-01", "i-02"), ec2_node("i-02", "web")]
    chosen = names(nodes, ["tag:Name"])[0]
    assert chosen == {"i-01": "i-01", "i-02": "web"}


@pytest.mark.parametrize(
    "preference, expected",
    [
        ("computer-name", "i-01.internal"),
        ("private-dns-name", "ip-i-01.ec2.internal"),
        ("private-ip-address", "10.0.0.9"),
        ("tag:Role,Name", "web"),
        ("tag:Name=web", "Name_web"),
        ("tag:Name=db", "i-01"),
        ("dns-name", "i-01"),  # no public name: falls through to the id
        ({"name": "tag:Name", "prefix": "tag:Env", "separator": "-"}, "prod-web"),
        ({"name": "tag:Name", "prefix": "aws"}, "aws_web"),
        ({"name": "tag:Name", "prefix": "tag:Missing"}, "i-01"),
    ],
)
def test_host_name_sources(preference, expected):
    node = ec2_node("i-01", "web")
    node["tags"]["Env"] = "prod"
    assert names([node], [preference])[0] == {"i-01": expected}


def test_hybrid_private_ip_address_is_its_reported_address():
    assert names([hybrid()], ["private-ip-address"])[0] == {"mi-0123456789abcdef0": "192.168.50.11"}


def test_a_jinja_filter_goes_through_the_transform():
    seen = []

    def transform(value, jinja_filter):
        seen.append((value, jinja_filter))
        return value.upper()

    assert names([ec2_node("i-01", "web")], ["tag:Name | upper"], transform)[0] == {"i-01": "WEB"}
    assert seen == [("web", "upper")]


@pytest.mark.parametrize("bad", ["hostname", "tag", {"prefix": "x"}, 42, {"name": ""}])
def test_bad_host_name_sources_are_refused_with_the_fix(bad):
    with pytest.raises(mn.ManagedNodesError, match=r"^hostnames: "):
        mn.check_hostnames([bad])


# --- host variables and groups ----------------------------------------------------------------------------------


def test_host_vars_carry_the_connection_to_the_instance_id_in_its_region():
    got = mn.host_vars(ec2_node("i-01", "web", region="us-west-2"), "amazon.aws.aws_ssm", "bucket", "virtual", "ops")
    assert got["ansible_host"] == got["ansible_aws_ssm_instance_id"] == "i-01"
    assert got["ansible_aws_ssm_region"] == got["region"] == "us-west-2"
    assert got["ansible_connection"] == "amazon.aws.aws_ssm"
    assert got["ansible_aws_ssm_bucket_name"] == "bucket"
    assert got["ansible_aws_ssm_s3_addressing_style"] == "virtual"
    assert got["ansible_aws_ssm_profile"] == "ops"
    assert got["node_tags"] == {"Name": "web"} and got["ping_status"] == "Online"
    assert got["placement"]["availability_zone"] == "us-west-2a"
    assert "ansible_shell_type" not in got


def test_host_vars_leave_unset_options_unset():
    got = mn.host_vars(hybrid(), None, None, None, None)
    for name in ("ansible_connection", "ansible_aws_ssm_bucket_name", "ansible_aws_ssm_s3_addressing_style",
                 "ansible_aws_ssm_profile"):
        assert name not in got


@pytest.mark.parametrize("connection", ["ssh", "ansible.builtin.ssh", "ansible.legacy.ssh"])
def test_over_ssh_a_host_keeps_its_instance_id_and_nothing_of_aws_ssm(connection):
    from ansible_collections.bastionless.ssm.plugins.inventory.managed_nodes import for_connection

    node = ec2_node("i-01", "web", region="us-west-2")
    got = for_connection(mn.host_vars(node, connection, "bucket", "virtual", "ops"), connection)
    assert got["ansible_host"] == "i-01" and got["ansible_connection"] == connection
    assert not [name for name in got if name.startswith("ansible_aws_ssm_")]
    assert got["region"] == "us-west-2" and got["node_tags"] == {"Name": "web"}


@pytest.mark.parametrize("connection", ["amazon.aws.aws_ssm", "community.aws.aws_ssm", None])
def test_other_connections_keep_every_variable(connection):
    from ansible_collections.bastionless.ssm.plugins.inventory.managed_nodes import for_connection

    wanted = mn.host_vars(ec2_node("i-01", "web"), connection, "bucket", "virtual", "ops")
    assert for_connection(dict(wanted), connection) == wanted


def test_windows_nodes_use_powershell():
    assert mn.host_vars(hybrid(platform="Windows"), "amazon.aws.aws_ssm")["ansible_shell_type"] == "powershell"


def test_default_groups():
    assert mn.default_groups(ec2_node("i-01", region="eu-central-1")) == [
        "ssm_region_eu_central_1", "ssm_platform_linux", "ssm_ping_online", "ssm_resource_ec2instance"]
    node = hybrid(platform="MacOS")
    node["ssm"]["ping_status"] = "ConnectionLost"
    assert mn.default_groups(node) == [
        "ssm_region_us_east_1", "ssm_platform_macos", "ssm_ping_connectionlost", "ssm_resource_managedinstance"]


# --- the join plan, against an in-memory AWS ---------------------------------------------------------------------


class FakeAws:
    """DescribeInstances, DescribeInstanceInformation and GetResources over in-memory nodes, with AWS's page
    limits and the filters the plan uses; every call is counted."""

    def __init__(self, instances, infos, hybrid_tags=None):
        self.instances = instances  # DescribeInstances entries
        self.infos = infos  # DescribeInstanceInformation entries
        self.hybrid_tags = hybrid_tags or {}
        self.calls = {}
        self.lock = threading.Lock()

    def __call__(self, service, operation, **kwargs):
        with self.lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
        return getattr(self, operation)(**kwargs)

    @staticmethod
    def _page(rows, token, size):
        start = int(token or 0)
        out = rows[start:start + size]
        return out, (str(start + size) if start + size < len(rows) else None)

    def describe_instances(self, Filters, MaxResults, NextToken=None):
        assert 5 <= MaxResults <= 1000
        rows = self.instances
        for f in Filters:
            assert len(f["Values"]) <= mn.EC2_FILTER_VALUES
            if f["Name"] == "instance-id":
                rows = [i for i in rows if i["InstanceId"] in f["Values"]]
            elif f["Name"] == "instance-state-name":
                rows = [i for i in rows if i["State"]["Name"] in f["Values"]]
            elif f["Name"].startswith("tag:"):
                rows = [i for i in rows if mn.tag_dict(i.get("Tags")).get(f["Name"][4:]) in f["Values"]]
            else:
                raise AssertionError(f"FakeAws does not know filter {f['Name']}")
        page, token = self._page(rows, NextToken, MaxResults)
        answer = {"Reservations": [{"Instances": page}]}
        if token:
            answer["NextToken"] = token
        return answer

    def describe_instance_information(self, Filters, MaxResults, NextToken=None):
        assert 5 <= MaxResults <= 50
        rows = self.infos
        for f in Filters:
            assert len(f["Values"]) <= 100
            field = {"InstanceIds": "InstanceId", "ResourceType": "ResourceType", "PingStatus": "PingStatus",
                     "PlatformTypes": "PlatformType"}[f["Key"]]
            rows = [i for i in rows if i[field] in f["Values"]]
        page, token = self._page(rows, NextToken, MaxResults)
        answer = {"InstanceInformationList": page}
        if token:
            answer["NextToken"] = token
        return answer

    def get_resources(self, ResourceTypeFilters, ResourcesPerPage, PaginationToken=None):
        assert ResourceTypeFilters == ["ssm:managed-instance"] and ResourcesPerPage <= 100
        rows = [{"ResourceARN": f"arn:aws:ssm:us-east-1:1:managed-instance/{k}",
                 "Tags": [{"Key": a, "Value": b} for a, b in v.items()]} for k, v in self.hybrid_tags.items()]
        page, token = self._page(rows, PaginationToken, ResourcesPerPage)
        return {"ResourceTagMappingList": page, "PaginationToken": token or ""}


def fleet(ec2_count, managed_every=1, hybrids=0, offline=()):
    instances, infos, tags = [], [], {}
    for n in range(ec2_count):
        instance_id = f"i-{n:017x}"
        instances.append({"InstanceId": instance_id, "State": {"Name": "running", "Code": 16},
                          "Placement": {"AvailabilityZone": "us-east-1a"}, "VpcId": "vpc-1",
                          "Tags": [{"Key": "Name", "Value": f"node-{n}"}, {"Key": "Env", "Value": "prod" if n % 2 else "dev"}]})
        if n % managed_every == 0:
            infos.append({"InstanceId": instance_id, "ResourceType": "EC2Instance", "PlatformType": "Linux",
                          "PingStatus": "ConnectionLost" if instance_id in offline else "Online"})
    for n in range(hybrids):
        node_id = f"mi-{n:017x}"
        infos.append({"InstanceId": node_id, "ResourceType": "ManagedInstance", "PlatformType": "Linux",
                      "PingStatus": "Online"})
        tags[node_id] = {"Name": f"onprem-{n}", "Env": "prod" if n % 2 else "dev"}
    return FakeAws(instances, infos, tags)


def run(aws, ping=("Online",), include=({},), exclude=(), resource_types=mn.RESOURCE_TYPES, platforms=()):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        fetch = mn.RegionFetch("us-east-1", aws, pool.submit, list(ping) if ping else None, list(platforms),
                               list(resource_types), list(include), list(exclude))
        nodes = fetch.run()
    return fetch, nodes


def test_dense_fleet_is_joined_with_page_sized_calls():
    aws = fleet(2400, hybrids=120)
    fetch, nodes = run(aws)
    assert fetch.plan == "dense"
    assert len(nodes) == 2520
    assert len({n["ssm"]["instance_id"] for n in nodes}) == 2520
    # 3 pages of 1,000 instances, 48 calls of 50 ids, 3 pages of 50 hybrid nodes, 2 pages of 100 tags
    assert aws.calls == {"describe_instances": 3, "describe_instance_information": 48 + 3, "get_resources": 2}


def test_every_ec2_node_has_both_sources_and_every_hybrid_its_ssm_tags():
    _fetch, nodes = run(fleet(30, hybrids=3))
    by_id = {n["ssm"]["instance_id"]: n for n in nodes}
    ec2 = by_id["i-00000000000000007"]
    assert ec2["ssm"]["ping_status"] == "Online" and ec2["ec2"]["vpc_id"] == "vpc-1"
    assert ec2["tags"] == {"Name": "node-7", "Env": "prod"}
    assert by_id["mi-00000000000000001"]["tags"] == {"Name": "onprem-1", "Env": "prod"}
    assert by_id["mi-00000000000000001"]["ec2"] is None


def test_instances_outside_ssm_are_not_listed_and_offline_ones_only_when_asked():
    aws = fleet(40, managed_every=2, offline={"i-00000000000000002"})
    _fetch, nodes = run(aws)
    listed = {n["ssm"]["instance_id"] for n in nodes}
    assert len(listed) == 19 and "i-00000000000000001" not in listed and "i-00000000000000002" not in listed
    _fetch, nodes = run(aws, ping=None)
    assert {n["ssm"]["instance_id"]: n["ssm"]["ping_status"] for n in nodes}["i-00000000000000002"] == "ConnectionLost"
    assert len(nodes) == 20


def test_overlapping_include_filters_list_a_node_once():
    aws = fleet(60, hybrids=4)
    _fetch, nodes = run(aws, include=[{"tag:Env": "prod"}, {"tag:Env": ["prod", "dev"]}, {}])
    ids = [n["ssm"]["instance_id"] for n in nodes]
    assert len(ids) == len(set(ids)) == 64
    # SSM is asked about each instance once, whatever the number of include filters
    assert aws.calls["describe_instance_information"] == 2 + 1


def test_filters_apply_to_hybrid_nodes_through_their_tags():
    _fetch, nodes = run(fleet(10, hybrids=4), include=[{"tag:Env": "prod"}])
    assert sorted(n["ssm"]["instance_id"] for n in nodes if n["ec2"] is None) == ["mi-00000000000000001",
                                                                                  "mi-00000000000000003"]
    assert all(n["tags"]["Env"] == "prod" for n in nodes)


def test_exclude_filters_win():
    _fetch, nodes = run(fleet(10, hybrids=2), exclude=[{"tag:Env": "dev"}])
    assert nodes and all(n["tags"]["Env"] == "prod" for n in nodes)


def test_resource_types_pick_the_kind_of_node():
    aws = fleet(10, hybrids=2)
    _fetch, nodes = run(aws, resource_types=["ManagedInstance"])
    assert {n["ssm"]["resource_type"] for n in nodes} == {"ManagedInstance"}
    assert "describe_instances" not in aws.calls
    aws = fleet(10, hybrids=2)
    _fetch, nodes = run(aws, resource_types=["EC2Instance"])
    assert {n["ssm"]["resource_type"] for n in nodes} == {"EC2Instance"} and "get_resources" not in aws.calls


def test_no_hybrid_node_means_no_tag_call():
    aws = fleet(10)
    run(aws)
    assert "get_resources" not in aws.calls


def test_a_sparse_region_switches_to_listing_ssm():
    # 5,000 instances, one in ten a managed node: the dense plan would ask SSM about all 5,000 (100 calls)
    aws = fleet(5000, managed_every=10)
    fetch, nodes = run(aws, resource_types=["EC2Instance"])
    assert fetch.plan == "sparse"
    assert len(nodes) == 500 and all(n["ec2"] is not None for n in nodes)
    # the probe: 1 EC2 page and 20 calls of 50 ids; then SSM lists 500 nodes (10 pages) and EC2 fetches the
    # 400 not seen yet by id, 200 a call
    assert aws.calls == {"describe_instances": 1 + 2, "describe_instance_information": 20 + 10}


@pytest.mark.parametrize("node", [ec2_node("i-01", "web"), hybrid(), hybrid(platform="Windows")],
                         ids=["ec2", "hybrid", "windows"])
def test_no_host_variable_has_a_name_ansible_reserves(node):
    """A host variable named like a play keyword (``tags``) makes ansible-core warn on every run."""
    got = mn.host_vars(node, "amazon.aws.aws_ssm", "bucket", "path", "ops")
    assert [name for name in got if is_reserved_name(name)] == []


# --- the keys of an inventory file ------------------------------------------------------------------------------

DEFINITIONS = {"plugin": {}, "regions": {}, "ping_status": {}, "filters": {}, "hostnames": {},
               "profile": {"aliases": ["aws_profile", "boto_profile"]}, "keyed_groups": {}}


@pytest.mark.parametrize("config", [
    {"plugin": "bastionless.ssm.managed_nodes"},
    {"plugin": "bastionless.ssm.managed_nodes", "regions": ["us-east-1"], "keyed_groups": []},
    {"plugin": "bastionless.ssm.managed_nodes", "aws_profile": "ops"},  # an alias is a valid key
])
def test_an_inventory_file_of_options_and_aliases_passes(config):
    assert mn.unknown_keys_problem(config, DEFINITIONS) is None


@pytest.mark.parametrize("config, message", [
    ({"plugin": "x", "region": ["us-east-1"]},
     "unknown key region (did you mean regions?): remove or rename it; the valid keys are filters, hostnames, "
     "keyed_groups, ping_status, plugin, profile, regions"),
    ({"plugin": "x", "pingstatus": "all", "colour": "blue"},
     "unknown keys colour, pingstatus (did you mean ping_status?): remove or rename them; the valid keys are "
     "filters, hostnames, keyed_groups, ping_status, plugin, profile, regions"),
])
def test_an_unknown_key_is_named_with_the_closest_option_and_the_valid_keys(config, message):
    assert mn.unknown_keys_problem(config, DEFINITIONS) == message


# --- when AWS cannot be reached at all --------------------------------------------------------------------------


def test_missing_credentials_name_the_fix_for_aws_and_for_the_lab():
    fix = mn.unreachable_fix(botocore.exceptions.NoCredentialsError())
    assert fix.startswith("no AWS credentials were found: give the inventory a profile")
    assert 'eval "$(ssm-lab up --nodes 3)"' in fix and 'eval "$(ssm-lab env)"' in fix


def test_an_endpoint_that_does_not_answer_names_the_endpoint_setting():
    fix = mn.unreachable_fix(botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert fix.startswith("the AWS endpoint does not answer: check endpoint_url (AWS_ENDPOINT_URL)")


def test_an_error_from_aws_itself_has_no_reachability_fix():
    error = botocore.exceptions.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Describe")
    assert mn.unreachable_fix(error) is None


@pytest.mark.parametrize("code", ["ExpiredTokenException", "ExpiredToken", "RequestExpired"])
def test_expired_temporary_credentials_name_the_fix(code):
    error = botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "expired"}}, "DescribeInstances")
    assert mn.unreachable_fix(error) == (
        "the session token of the inventory's credentials has expired: get new temporary credentials (aws sso login, "
        "assume the role again, or a new AWS_SESSION_TOKEN) and run again")


# --- regions botocore does not know -------------------------------------------------------------------------------
KNOWN = frozenset({"us-east-1", "us-west-2", "eu-west-1"})


def test_a_region_botocore_does_not_know_is_refused_without_an_endpoint_naming_it_and_both_fixes():
    assert mn.region_refusal("us-west-2", KNOWN, "1.35.0", "") is None
    assert mn.region_refusal("ap-newplace-9", KNOWN, "1.35.0", "") == (
        "'ap-newplace-9' is not a region botocore 1.35.0 knows: fix the regions key of the inventory file; if "
        "ap-newplace-9 is a region newer than this botocore, upgrade it (python3 -m pip install --upgrade botocore "
        "boto3), or set endpoint_url to an endpoint that serves it")
    assert mn.region_refusal("us-esat-1", KNOWN, "1.35.0", "").startswith(
        "'us-esat-1' is not a region botocore 1.35.0 knows (did you mean us-east-1?): fix the regions key")


def test_with_an_endpoint_the_endpoint_decides_which_regions_there_are():
    assert mn.region_refusal("lab-local-1", KNOWN, "1.35.0", "http://127.0.0.1:4566") is None
    assert mn.unknown_region_note("lab-local-1", KNOWN, "1.35.0") == (
        "; 'lab-local-1' is not a region botocore 1.35.0 knows: check the regions key of the inventory file")
    assert mn.unknown_region_note("us-east-1", KNOWN, "1.35.0") == ""


@pytest.mark.parametrize("option, environ, expected", [
    (None, {}, ""),
    ("https://ssm.example", {"AWS_ENDPOINT_URL": "http://lab"}, "https://ssm.example"),
    (None, {"AWS_ENDPOINT_URL": "http://lab"}, "http://lab"),
    (None, {"AWS_ENDPOINT_URL": "http://lab", "AWS_ENDPOINT_URL_SSM": "http://ssm"}, "http://ssm"),
])
def test_the_endpoint_is_the_option_else_botocores_variables(option, environ, expected):
    assert mn.given_endpoint(option, environ) == expected
