"""bastionless.ssm.managed_nodes against labs, with the real ansible-inventory and ansible commands.

``fleet``: 2 EC2 nodes and 1 hybrid node in us-east-1 and 1 EC2 node in us-west-2, all with agents and
provisioned, so sessions work. ``records``: a fleet of registrations only (EC2 instances launched in batches,
hybrid nodes), to count API calls. Every test reads what the inventory printed or what the lab saw (its API
call counts, its sessions); none times anything.
"""

import json
import math
import os
import secrets
import subprocess
import time
import urllib.request

import pytest
from ansible_cli import ROOT, run
from ssm_lab.harness.testing import running_lab, wait_until

LAB_INVENTORY = "inventories/lab/lab.managed_nodes.yml"
BUCKET = "bastionless-lab-transfer"  # inventories/lab/group_vars/all.yml
SECOND_REGION = "us-west-2"
# Without inventories/lab/group_vars, a configuration also needs the lab's plugin and Python for sessions.
LAB_CONNECTION = {
    "bucket_name": BUCKET,
    "compose": {
        "ansible_aws_ssm_plugin": "lookup('ansible.builtin.env', 'AWS_SESSION_MANAGER_PLUGIN')",
        "ansible_python_interpreter": "'/usr/bin/python3'",
    },
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("fleet"), "--nodes", "2", "--hybrid", "1", "--provisioned",
                     "--region-nodes", f"{SECOND_REGION}=1") as lab:
        lab.client("s3").create_bucket(Bucket=BUCKET)
        yield lab


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("records"), "--nodes", "0", "--records", "120",
                     "--hybrid-records", "7") as lab:
        yield lab


# --- helpers -----------------------------------------------------------------------------------------------


def calls(lab, reset=False) -> dict:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/calls", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def config(tmp_path, name="test", **options) -> str:
    """Write an inventory configuration; returns its path (its name must end with managed_nodes.yml)."""
    path = tmp_path / f"{name}.managed_nodes.yml"
    path.write_text(json.dumps({"plugin": "bastionless.ssm.managed_nodes", "regions": ["us-east-1"], **options}))
    return str(path)


def inventory_run(lab, source, *flags, fails=False):
    """ansible-inventory --list; returns (inventory JSON or None, stderr)."""
    # An inventory source that fails to parse is only a warning to ansible, unless this is set.
    result = subprocess.run(["ansible-inventory", "-i", source, "--list", *flags], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False,
                            env=lab.environ(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
                                            ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true"))
    if fails:
        assert result.returncode != 0, result.stdout
        return None, result.stderr
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout), result.stderr


def inventory(lab, source, *flags):
    """ansible-inventory --list; returns its JSON."""
    return inventory_run(lab, source, *flags)[0]


def plain(value):
    """A value as ansible-inventory prints it: untrusted strings come as {"__ansible_unsafe": ...}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def hostvars(listing) -> dict:
    return {host: plain(v) for host, v in listing["_meta"]["hostvars"].items()}


def members(listing, group) -> set:
    return set(listing.get(group, {}).get("hosts", []))


def lab_nodes(lab) -> dict:
    """The lab's nodes with agents, by id: region and kind (from network.json and the admin API)."""
    second = set(lab.network.get("regions", {}).get(SECOND_REGION, {}).get("nodes", []))
    with urllib.request.urlopen(f"{lab.endpoint}/_lab/nodes", timeout=10) as response:
        listed = json.load(response)["nodes"]
    return {n["id"]: {"region": SECOND_REGION if n["id"] in second else "us-east-1", "kind": n["kind"],
                      "hostname": n["hostname"]} for n in listed}


def ping_status(lab, node_id, region="us-east-1"):
    rows = lab.client("ssm", region=region).describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [node_id]}])["InstanceInformationList"]
    return rows[0]["PingStatus"] if rows else None


# --- the lab inventory: everything ready to connect ------------------------------------------------------------


def test_the_lab_inventory_lists_every_node_ready_to_connect(fleet):
    listing = inventory(fleet, LAB_INVENTORY)
    nodes = lab_nodes(fleet)
    found = hostvars(listing)
    assert set(found) == set(nodes)
    assert members(listing, "ssm_nodes") == set(nodes)
    for node_id, node in nodes.items():
        variables = found[node_id]
        assert variables["ansible_connection"] == "amazon.aws.aws_ssm"
        assert variables["ansible_aws_ssm_instance_id"] == variables["ansible_host"] == node_id
        assert variables["ansible_aws_ssm_region"] == variables["region"] == node["region"]
        assert variables["ping_status"] == "Online"
        assert variables["computer_name"] == node["hostname"]
        assert variables["resource_type"] == ("ManagedInstance" if node_id.startswith("mi-") else "EC2Instance")
        assert variables["platform_type"] == "Linux" and variables["agent_version"]
        if node_id.startswith("i-"):
            ec2 = fleet.client("ec2", region=node["region"]).describe_instances(
                InstanceIds=[node_id])["Reservations"][0]["Instances"][0]
            assert variables["vpc_id"] == ec2["VpcId"] and variables["subnet_id"] == ec2["SubnetId"]
            assert variables["private_ip_address"] == ec2["PrivateIpAddress"]
            assert variables["placement"]["availability_zone"] == ec2["Placement"]["AvailabilityZone"]
            assert variables["state"]["name"] == "running"
            assert variables["iam_instance_profile"]["arn"].endswith(":instance-profile/ssm-lab-node")
    assert members(listing, "ssm_resource_managedinstance") == {n for n in nodes if n.startswith("mi-")}
    assert members(listing, "ssm_ping_online") == set(nodes)


def _new_history_targets(fleet, before: set) -> set:
    """The targets of the sessions in the history that are not in ``before`` (their ids)."""
    return {s["Target"] for r in ("us-east-1", SECOND_REGION)
            for s in fleet.client("ssm", region=r).describe_sessions(State="History")["Sessions"]
            if s["SessionId"] not in before}


def test_ansible_pings_every_node_over_session_manager_with_no_other_variables(fleet):
    before = {s["SessionId"] for s in fleet.client("ssm").describe_sessions(State="History")["Sessions"]}
    output, _recap = run(fleet, "ansible", "-i", LAB_INVENTORY, "all", "-m", "ansible.builtin.ping")
    nodes = lab_nodes(fleet)
    for node_id in nodes:
        assert f"{node_id} | SUCCESS" in output, output
    # TerminateSession returns before the session has ended (as on AWS): wait for the history to have them all.
    wait_until(lambda: _new_history_targets(fleet, before) == set(nodes), 30,
               what=f"the sessions to {sorted(nodes)} in the history")


def test_two_regions_are_merged(fleet, tmp_path):
    one = inventory(fleet, config(tmp_path, "one"))
    both = inventory(fleet, config(tmp_path, "both", regions=["us-east-1", SECOND_REGION]))
    west = {n for n, node in lab_nodes(fleet).items() if node["region"] == SECOND_REGION}
    assert len(west) == 1
    assert set(hostvars(both)) == set(hostvars(one)) | west and not west & set(hostvars(one))
    assert members(both, f"ssm_region_{SECOND_REGION.replace('-', '_')}") == west
    assert members(both, "ssm_region_us_east_1") == set(hostvars(one))
    (west_id,) = west
    assert hostvars(both)[west_id]["ansible_aws_ssm_region"] == SECOND_REGION
    assert hostvars(both)[west_id]["placement"]["region"] == SECOND_REGION


def test_a_node_in_both_sources_appears_once(fleet, tmp_path):
    # Every EC2 node is in SSM's answer and in EC2's, and matches both include filters: one host each.
    source = config(tmp_path, include_filters=[{"tag:ssm-lab": "node"}, {"instance-state-name": "running"}])
    listing = inventory(fleet, source)
    ec2_nodes = {n for n, node in lab_nodes(fleet).items() if node["region"] == "us-east-1" and n.startswith("i-")}
    found = hostvars(listing)
    hybrids = {n for n in lab_nodes(fleet) if n.startswith("mi-")}
    assert set(found) == ec2_nodes | hybrids
    listed = listing["ssm_nodes"]["hosts"]
    assert len(listed) == len(set(listed)) == len(ec2_nodes) + len(hybrids)
    for node_id in ec2_nodes:
        assert found[node_id]["ping_status"] == "Online"  # from SSM
        assert found[node_id]["vpc_id"].startswith("vpc-")  # from EC2


def test_offline_nodes_are_left_out_by_default_and_listed_with_ping_status_all(fleet, tmp_path):
    node_id = sorted(n for n, node in lab_nodes(fleet).items() if node["region"] == "us-east-1" and
                     n.startswith("i-"))[0]
    fleet.cli("agent", "stop", node_id)
    try:
        wait_until(lambda: ping_status(fleet, node_id) == "ConnectionLost", 20, what=f"{node_id} to go offline")
        default = inventory(fleet, config(tmp_path, "default"))
        assert node_id not in hostvars(default)
        assert len(hostvars(default)) == 2  # the other EC2 node and the hybrid node
        everything = inventory(fleet, config(tmp_path, "all", ping_status=["all"]))
        found = hostvars(everything)
        assert found[node_id]["ping_status"] == "ConnectionLost"
        assert members(everything, "ssm_ping_connectionlost") == {node_id}
        assert set(found) == set(hostvars(default)) | {node_id}
        offline_only = inventory(fleet, config(tmp_path, "lost", ping_status=["ConnectionLost"]))
        assert set(hostvars(offline_only)) == {node_id}
    finally:
        fleet.cli("agent", "start", node_id)
        wait_until(lambda: ping_status(fleet, node_id) == "Online", 30, what=f"{node_id} to come back")


def test_a_hybrid_node_appears_with_its_ssm_tags_and_tag_filters_select_it(fleet, tmp_path):
    (hybrid,) = [n for n in lab_nodes(fleet) if n.startswith("mi-")]
    team = "team-" + secrets.token_hex(3)
    ssm = fleet.client("ssm")
    ssm.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=hybrid, Tags=[{"Key": "Team", "Value": team}])
    try:
        listing = inventory(fleet, config(tmp_path))
        assert hostvars(listing)[hybrid]["node_tags"] == {"Name": "lab-hybrid-1", "Env": "onprem", "Team": team}
        filtered = inventory(fleet, config(tmp_path, "team", filters={"tag:Team": team}))
        assert set(hostvars(filtered)) == {hybrid}
        wildcard = inventory(fleet, config(tmp_path, "wild", filters={"tag:Name": "lab-hybrid-*"}))
        assert set(hostvars(wildcard)) == {hybrid}
        team_groups = [{"key": "node_tags.Team | default('none')", "prefix": "team"}]
        keyed = inventory(fleet, config(tmp_path, "keyed", keyed_groups=team_groups))
        assert members(keyed, f"team_{team.replace('-', '_')}") == {hybrid}
    finally:
        ssm.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=hybrid, TagKeys=["Team"])


def test_tag_name_host_names_still_connect_by_instance_id(fleet, tmp_path):
    source = config(tmp_path, regions=["us-east-1", SECOND_REGION], hostnames=["tag:Name", "instance-id"],
                    **LAB_CONNECTION)
    listing = inventory(fleet, source)
    by_name = {name: v["instance_id"] for name, v in hostvars(listing).items()}
    nodes = lab_nodes(fleet)
    assert sorted(by_name) == ["lab-hybrid-1", "lab-node-1", "lab-node-2", f"lab-{SECOND_REGION}-node-1"]
    assert set(by_name.values()) == set(nodes)
    before = {s["SessionId"] for r in ("us-east-1", SECOND_REGION)
              for s in fleet.client("ssm", region=r).describe_sessions(State="History")["Sessions"]}
    output, _recap = run(fleet, "ansible", "-i", source, "all", "-m", "ansible.builtin.ping")
    for name in by_name:
        assert f"{name} | SUCCESS" in output, output
    # the sessions went to the instance ids, not to the names (ended after TerminateSession has returned: waited for)
    wait_until(lambda: _new_history_targets(fleet, before) == set(nodes), 30,
               what=f"the sessions to {sorted(nodes)} in the history")


def test_a_cache_hit_makes_no_api_call_and_flush_cache_refetches(fleet, tmp_path):
    cache_dir = tmp_path / "cache"
    source = config(tmp_path, cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(cache_dir),
                    cache_timeout=3600, assume_role_arn="arn:aws:iam::123456789012:role/inventory-reader")
    calls(fleet, reset=True)
    first = inventory(fleet, source)
    fetched = calls(fleet)["calls"]
    assert fetched.get("sts:AssumeRole") == 1 and fetched.get("ssm:DescribeInstanceInformation", 0) >= 1
    (cache_file,) = [p for p in cache_dir.iterdir() if p.is_file()]
    written = os.stat(cache_file).st_mtime_ns

    calls(fleet, reset=True)
    time.sleep(0.05)
    second = inventory(fleet, source)
    assert calls(fleet)["total"] == 0  # no AWS call at all, not even sts:AssumeRole
    assert hostvars(second) == hostvars(first)
    assert os.stat(cache_file).st_mtime_ns == written  # a read does not rewrite the entry (its TTL runs on)

    (hybrid,) = [n for n in hostvars(first) if n.startswith("mi-")]
    fleet.client("ssm").add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=hybrid,
                                             Tags=[{"Key": "Cached", "Value": "no"}])
    try:
        stale = inventory(fleet, source)
        assert "Cached" not in hostvars(stale)[hybrid]["node_tags"]
        calls(fleet, reset=True)
        fresh = inventory(fleet, source, "--flush-cache")
        assert calls(fleet)["calls"].get("ssm:DescribeInstanceInformation", 0) >= 1
        assert hostvars(fresh)[hybrid]["node_tags"]["Cached"] == "no"
        assert os.stat(cache_file).st_mtime_ns != written
        again = inventory(fleet, source)
        assert hostvars(again)[hybrid]["node_tags"]["Cached"] == "no"  # the refetched answer is the cache now
    finally:
        fleet.client("ssm").remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=hybrid,
                                                      TagKeys=["Cached"])


def test_throttled_calls_are_retried(fleet, tmp_path):
    expected = set(hostvars(inventory(fleet, config(tmp_path, "calm"))))
    fleet.cli("faults", "--throttle-rate", "0.3", "--seed", "11")
    try:
        calls(fleet, reset=True)
        listing = inventory(fleet, config(tmp_path, "throttled"))
    finally:
        fleet.cli("faults", "--profile", "off")
    assert set(hostvars(listing)) == expected


def test_bad_options_fail_with_one_clear_error(fleet, tmp_path):
    _listing, stderr = inventory_run(fleet, config(tmp_path, "badname", hostnames=["hostname"]), fails=True)
    assert "hostnames: unknown host name source 'hostname'" in stderr
    _listing, stderr = inventory_run(fleet, config(tmp_path, "badping", ping_status=["online"]), fails=True)
    assert "ping_status" in stderr and "Online" in stderr


# --- a fleet of registrations: the API calls ------------------------------------------------------------------


def test_a_fleet_is_listed_with_page_sized_calls_never_one_per_node(records, tmp_path):
    calls(records, reset=True)
    listing = inventory(records, config(tmp_path))
    found = hostvars(listing)
    ec2_count = sum(1 for n in found if n.startswith("i-"))
    hybrid_count = sum(1 for n in found if n.startswith("mi-"))
    assert (ec2_count, hybrid_count) == (120, 7)
    assert calls(records)["calls"] == {
        "ec2:DescribeInstances": math.ceil(ec2_count / 1000),
        "ssm:DescribeInstanceInformation": math.ceil(ec2_count / 50) + math.ceil(hybrid_count / 50),
        "tagging:GetResources": math.ceil(hybrid_count / 100),
    }


def test_a_shared_name_tag_goes_to_no_host(records, tmp_path):
    listing, stderr = inventory_run(records, config(tmp_path, hostnames=["tag:Name"]))
    names = set(hostvars(listing))
    # every record instance has Name=lab-record (like an Auto Scaling group): none of them is called that
    assert "lab-record" not in names
    assert sum(1 for n in names if n.startswith("i-")) == 120
    assert {n for n in names if n.startswith("lab-hybrid-")} == {f"lab-hybrid-{i}" for i in range(1, 8)}
    assert "'lab-record' (120 nodes)" in stderr


def test_resource_types_platform_types_and_exclude_filters(records, tmp_path):
    hybrids = inventory(records, config(tmp_path, "mi", resource_types=["ManagedInstance"]))
    assert hybrids and all(n.startswith("mi-") for n in hostvars(hybrids)) and len(hostvars(hybrids)) == 7
    windows = inventory(records, config(tmp_path, "win", platform_types=["Windows"]))
    assert hostvars(windows) == {}
    linux = inventory(records, config(tmp_path, "linux", platform_types=["Linux"]))
    assert len(hostvars(linux)) == 127
    excluded = [{"tag:ssm-lab-kind": "record"}, {"tag:Name": "lab-hybrid-[12]"}]
    kept = inventory(records, config(tmp_path, "kept", exclude_filters=excluded))
    # the EC2 records all carry ssm-lab-kind=record; no hybrid name has brackets in it (no such wildcard)
    assert sorted(hostvars(kept)) == sorted(n for n in hostvars(hybrids))
