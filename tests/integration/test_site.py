"""playbooks/site.yml against a lab of 2 offline nodes (no instance profile, no route out), with the collection as
installed: check mode, the real run, idempotence, no SSH, transcripts, Run As, ad-hoc commands.

Both connections run in every play: the first node keeps the lab inventory's amazon.aws.aws_ssm, the other is
reached over bastionless.ssm.session (ansible_cli.run adds the connection, see CONNECTION_ENV)."""

import json
import os
import re
import socket
import subprocess
import urllib.request

import pytest
from ansible_cli import ROOT, run
from ansible_cli import warnings_in as _warnings
from session_connection import CONNECTION, connection_env
from ssm_lab.harness.testing import running_lab, wait_until

INVENTORY = "inventories/lab"
SITE = "playbooks/site.yml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # alice and moto, whom the lab inventory maps (ssm-lab up's own default), and bob, an operator nobody mapped: the
    # default Run As user, without sudo.
    with running_lab(tmp_path_factory.mktemp("site"), "--nodes", "2", "--iam-users", "alice,moto,bob") as lab:
        iam = lab.client("iam")
        lab.alice = iam.create_access_key(UserName="alice")["AccessKey"]
        lab.bob = iam.create_access_key(UserName="bob")["AccessKey"]
        # _who runs Ansible as them over amazon.aws.aws_ssm, whose every connection starts with HeadBucket on the
        # transfer bucket: the lab judges their keys on it, so they get what docs/transfer-bucket.md says the
        # identity that runs Ansible needs there (the session itself is the operator policy's).
        transfer = "arn:aws:s3:::bastionless-lab-transfer"
        for user in ("alice", "bob"):
            iam.put_user_policy(UserName=user, PolicyName="transfer-bucket", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"], "Resource": [transfer]},
                    {"Effect": "Allow", "Action": ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                                                   "s3:PutObject"], "Resource": [f"{transfer}/*"]}]}))
        yield lab


@pytest.fixture(scope="module", autouse=True)
def both_connections(lab):  # pylint: disable=redefined-outer-name
    """The first node over amazon.aws.aws_ssm, the others over bastionless.ssm.session, in the same runs."""
    nodes = sorted(lab.network["nodes"])
    with connection_env(f"{CONNECTION}=" + ",".join(nodes[1:])):
        yield {"amazon.aws.aws_ssm": nodes[:1], CONNECTION: nodes[1:]}


def _nodes(lab):
    return [n["id"] for n in json.loads(lab.cli("status", "--json").stdout)["nodes"]]


def _boot(lab, node):
    """How many times the lab has booted the node again (its admin API)."""
    with urllib.request.urlopen(f"{lab.endpoint}/_lab/nodes/{node}", timeout=10) as response:
        return json.load(response)["booted"]


def _buckets(lab):
    return {b["Name"] for b in lab.client("s3").list_buckets()["Buckets"]}


def test_nodes_start_unreachable(lab):
    status = json.loads(lab.cli("status", "--json").stdout)["nodes"]
    assert len(status) == 2 and all(n["ping_status"] == "NotRegistered" for n in status)
    assert all({"NO_INSTANCE_PROFILE", "NO_ROUTE_TO_INTERNET"} <= {p["code"] for p in n["problems"]} for n in status)


def test_check_mode_on_a_fresh_lab_predicts_and_changes_nothing(lab):
    # The region comes from the inventory alone (bastionless_region, the hosts' ansible_aws_ssm_region): with none in
    # the environment, every AWS call the run makes is signed for it. The lab inventory lists the fleet in two regions
    # (lab.managed_nodes.yml), so the other region sees exactly the calls of loading the inventory (twice: configure.yml
    # refreshes it once the nodes are up), and no more.
    no_region = ("AWS_REGION", "AWS_DEFAULT_REGION")
    lab.api_calls(reset=True)
    listing, _recap = run(lab, "ansible-inventory", "-i", INVENTORY, "--list", unset=no_region)
    inventory = lab.api_calls()["regions"]
    lab.api_calls(reset=True)
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, SITE, "--check", unset=no_region)
    regions = lab.api_calls()["regions"]
    assert sum(regions["us-east-1"].values()) >= 20, regions
    assert {r: c for r, c in regions.items() if r != "us-east-1"} == {
        r: {action: 2 * n for action, n in c.items()} for r, c in inventory.items() if r != "us-east-1"}, regions
    assert recap["localhost"]["changed"] >= 5 and recap["localhost"]["failed"] == 0, output
    assert "check mode: 2 of 2 nodes are not Online yet" in output
    # On a fresh lab the inventory is empty (no node is Online yet): the repository's ansible.cfg says why that is
    # no warning; the lab inventory itself causes none.
    assert _warnings(listing) == [], listing
    assert _warnings(output) == [], output
    assert _buckets(lab) == set()
    assert lab.client("iam").list_instance_profiles()["InstanceProfiles"] == []
    assert lab.client("ec2").describe_vpc_endpoints()["VpcEndpoints"] == []
    assert lab.client("kms").list_aliases()["Aliases"] == [] or all(
        a["AliasName"].startswith("alias/aws/") for a in lab.client("kms").list_aliases()["Aliases"])
    assert all(n["ping_status"] == "NotRegistered" for n in json.loads(lab.cli("status", "--json").stdout)["nodes"])


# The real run meets throttling: 15% of the AWS calls (EC2, IAM, KMS, SSM, CloudWatch Logs; S3 aside) are refused
# with ThrottlingException. The playbooks' module_defaults and the plugins' options retry them (docs/reliability.md).
# AWS_MAX_ATTEMPTS=2, below botocore's default, is what any client the collection does not configure gets, so a module
# that missed module_defaults is likely to fail the run (tests/unit/plugins/test_playbook_retries.py checks that none
# does, from the files). amazon.aws.aws_ssm, which has no retry option, gets it too and rides on its
# reconnection_retries. The rate and the unthrottled second run (which proves idempotence) keep botocore's backoff
# sleeps inside make test's time budget; make chaos throttles 30% of the calls in both runs, on more nodes.
THROTTLED = {"AWS_MAX_ATTEMPTS": "2"}


@pytest.fixture()
def throttled(lab):
    lab.cli("faults", "--throttle-rate", "0.15")
    lab.api_calls(reset=True)
    try:
        yield lab
    finally:
        lab.cli("faults", "--throttle-rate", "0")


def _throttled_services(lab) -> set:
    """The services of the calls the lab throttled since the fixture reset its counters."""
    return {action.split(":")[0] for action in lab.api_calls()["throttled"]}


# A recognisable session token in the controller's environment during the first run: amazon.aws.aws_ssm puts it into
# every presigned transfer URL it types into the node's shell.
SESSION_TOKEN = "bl-token-" + os.urandom(6).hex()


def test_node_filters_that_match_nothing_fail_before_any_change(lab):
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, SITE, "-e",
                        '{"bastionless_node_filters": {"tag:ssm-lab": "nodes"}}', check=False)
    assert recap["localhost"]["failed"] == 1, output
    assert ('bastionless_node_filters {"tag:ssm-lab": "nodes"} match no EC2 instance in us-east-1: there is no node '
            "to provision, wait for or configure. Fix them in the inventory's group_vars (the lab's nodes carry the "
            "tag ssm-lab=node). Nothing was changed.") in output
    assert _buckets(lab) == set()
    assert lab.client("iam").list_instance_profiles()["InstanceProfiles"] == []


def test_site_takes_offline_nodes_to_configured(lab, throttled):  # pylint: disable=redefined-outer-name,unused-argument
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, SITE,
                        env={**THROTTLED, "AWS_SESSION_TOKEN": SESSION_TOKEN})
    assert _warnings(output) == [], output
    nodes = _nodes(lab)
    assert sorted(h for h in recap if h != "localhost") == sorted(nodes), output
    for node in nodes:
        assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
        assert recap[node]["changed"] >= 3, output
    assert output.count("serves: Served over Session Manager from the lab") == 2
    assert {"bastionless-lab-transfer", "bastionless-lab-sessions"} <= _buckets(lab)
    assert {"ec2", "iam", "ssm"} <= _throttled_services(lab), lab.api_calls()["throttled"]
    assert all(n["ping_status"] == "Online" for n in json.loads(lab.cli("status", "--json").stdout)["nodes"])


def test_second_run_changes_nothing_on_any_host(lab):
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, SITE)
    assert len(recap) == 3 and all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), output
    assert _warnings(output) == [], output


def test_no_credential_is_left_on_a_node(lab, both_connections):  # pylint: disable=redefined-outer-name
    """Everything the nodes wrote (their overlay's upper directory) after site.yml ran over both connections with a
    session token exported: the token is in no file, and the session account has no shell history (the preferences'
    shell profile unsets HISTFILE; amazon.aws.aws_ssm typed its presigned URLs into an interactive bash)."""
    written = {}
    for node in _nodes(lab):
        upper = os.path.join(lab.state_dir, "nodes", node, "upper")
        for parent, _dirs, files in os.walk(upper):
            for name in files:
                path = os.path.join(parent, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        written[os.path.relpath(path, upper)] = SESSION_TOKEN.encode() in handle.read()
    assert any(path.startswith("home/ssm-user/") for path in written), sorted(written)  # Ansible's sessions were there
    assert [path for path, found in written.items() if found] == []
    assert not [path for path in written if path.endswith(".bash_history")]


def test_no_ssh_anywhere(lab):
    # Each node has its own PID namespace: ps sees the node's processes only. Nothing listens on port 22.
    output, _recap = run(lab, "ansible", "-i", INVENTORY, "all", "-m", "ansible.builtin.shell",
                         "-a", "ps -eo comm | grep -c '^sshd' || true")
    assert output.count("\n0") == 2, output
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.1", 22)) != 0


def test_ad_hoc_command_across_the_fleet(lab):
    output, _recap = run(lab, "ansible", "-i", INVENTORY, "all", "-m", "ansible.builtin.command", "-a", "cat /etc/hostname")
    assert _warnings(output) == [], output
    for node in json.loads(lab.cli("status", "--json").stdout)["nodes"]:
        assert f"{node['id']} | CHANGED | rc=0" in output
        assert node["hostname"] in output
    assert not os.path.exists("/srv/bastionless/index.html")  # the configuration lives on the nodes


def test_sessions_leave_transcripts_in_s3_and_cloudwatch(lab):
    ssm, s3, logs = lab.client("ssm"), lab.client("s3"), lab.client("logs")
    pages = ssm.get_paginator("describe_sessions")
    history = [s for page in pages.paginate(State="History") for s in page["Sessions"]]
    active = [s for page in pages.paginate(State="Active") for s in page["Sessions"]]
    # A node reached over the session connection may still hold its persistent session.
    assert history and {s["Target"] for s in history + active} == set(_nodes(lab))
    session = history[0]["SessionId"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bastionless-lab-sessions", Prefix="sessions/")["Contents"]]
    assert f"sessions/{session}.log" in keys
    streams = logs.describe_log_streams(logGroupName="/bastionless/lab/sessions", logStreamNamePrefix=session)
    assert session in {s["logStreamName"] for s in streams["logStreams"]}


def test_each_node_was_reached_over_its_connection(lab, both_connections):  # pylint: disable=redefined-outer-name
    # Two site.yml runs and the ad-hoc tests: with aws_ssm every node task is a session of its own; with the
    # persistent connection a node needs one session per master (a few), far fewer than its tasks.
    pages = lab.client("ssm").get_paginator("describe_sessions")
    per_node = {}
    for state in ("History", "Active"):
        for page in pages.paginate(State=state):
            for session in page["Sessions"]:
                per_node[session["Target"]] = per_node.get(session["Target"], 0) + 1
    [aws_ssm] = both_connections["amazon.aws.aws_ssm"]
    persistent = [per_node.get(node, 0) for node in both_connections["bastionless.ssm.session"]]
    assert all(1 <= count <= 10 for count in persistent), per_node
    assert per_node.get(aws_ssm, 0) > 3 * max(persistent), per_node


_WHO = 'echo "who=$(id -un) sudo=$(sudo -n id -u 2>/dev/null || echo none)"'


def _who(lab, node: str, key: dict) -> tuple:
    """(OS user, uid under sudo -n or none) of a raw command over Session Manager with these access keys."""
    env = lab.environ(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
                      ANSIBLE_NOCOLOR="1")
    result = subprocess.run(["ansible", "-i", INVENTORY, node, "-m", "ansible.builtin.raw", "-a", _WHO],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.findall(r"^who=(\S+) sudo=(\S+)\s*$", result.stdout, re.M)
    assert len(found) == 1, result.stdout
    return found[0]


def test_a_run_as_user_opens_a_session_as_themselves(lab, both_connections):  # pylint: disable=redefined-outer-name
    """alice lands on her own account, an operator nobody mapped on session-user, and neither gets root; site.yml's
    own identity (moto) is on ssm-user, with the sudo its become needs (the second run above proved it)."""
    [node] = both_connections["amazon.aws.aws_ssm"]
    assert _who(lab, node, lab.alice) == ("alice", "none")
    iam = lab.client("iam")
    policy = next(p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"]
                  if p["PolicyName"].endswith("lab-operators"))
    iam.attach_user_policy(UserName="bob", PolicyArn=policy)
    assert _who(lab, node, lab.bob) == ("session-user", "none")
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName="moto")["Tags"]}
    assert tags == {"SSMSessionRunAs": "ssm-user"}
    wait_until(lambda: any(s["Owner"].endswith(":user/alice")
                           for s in lab.client("ssm").describe_sessions(State="History")["Sessions"]),
               what="alice's session in the history")


def test_reboot_with_its_defaults_over_both_connections(lab):
    # Last: it ends every session. ansible.builtin.reboot runs /sbin/shutdown -r 0 and waits until the node's
    # /proc/sys/kernel/random/boot_id changes, then runs whoami; only reboot_timeout is set (from 600 s), so that
    # a node that never came back would fail this test in bounded time.
    boots = {node: _boot(lab, node) for node in _nodes(lab)}
    output, _recap = run(lab, "ansible", "-i", INVENTORY, "all", "-b", "-m", "ansible.builtin.reboot",
                         "-a", "reboot_timeout=180")
    assert _warnings(output) == [], output
    for node, boot in boots.items():
        assert f"{node} | CHANGED" in output and _boot(lab, node) == boot + 1, output
    assert output.count('"rebooted": true') == 2, output
