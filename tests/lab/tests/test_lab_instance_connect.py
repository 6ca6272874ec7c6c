"""EC2 Instance Connect in the lab: SendSSHPublicKey (shape, validation, errors), and a node's sshd that accepts a
pushed key only for the pushed OS user and only while the key is valid, run in inetd mode by the agent for
AWS-StartSSHSession, reached with the real ssh client through the plugin shim (never a port on the node)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import urllib.request

import botocore.config
import botocore.exceptions
import pytest
from labhelpers import wait_until
from ssm_lab.harness import testing

SSM_LAB_PLUGIN = testing.plugin_path()  # AWS's own plugin under make interop, else the lab's stand-in

# A ProxyCommand made of boto3 and the plugin shim alone (the collection's own proxy is tested elsewhere).
PROXY = r"""
import json, os, sys, boto3
target, port = sys.argv[1], sys.argv[2]
request = {"Target": target, "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": [port]}}
ssm = boto3.client("ssm")
response = ssm.start_session(**request)
started = {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}
os.execv(sys.argv[3], [sys.argv[3], json.dumps(started), ssm.meta.region_name, "StartSession", "",
                       json.dumps(request), ssm.meta.endpoint_url])
"""

UNCHECKED = botocore.config.Config(parameter_validation=False)
pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs /usr/sbin/sshd (make system-deps)")


@pytest.fixture(scope="module")
def lab(start_lab):
    with start_lab("instance-connect", "--nodes", "2", "--sshd", "1", "--provisioned") as lab:
        yield lab


@pytest.fixture(scope="module")
def sshd_node(lab) -> str:
    return lab.ec2_ids[0]  # --sshd 1: the first EC2 node


@pytest.fixture(scope="module")
def eic(lab):
    return lab.client("ec2-instance-connect")


@pytest.fixture
def key(tmp_path) -> dict:
    """A fresh key pair for each test: keys pushed by another test do not carry over."""
    folder = tmp_path
    path = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-test", "-f", str(path)], check=True)
    (folder / "proxy.py").write_text(PROXY)
    return {"private": str(path), "public": (folder / "id_ed25519.pub").read_text().strip(), "dir": folder}


@pytest.fixture(autouse=True)
def validity(lab):
    """Every test starts with AWS's 60 seconds."""
    set_key_seconds(lab, 60)


def set_key_seconds(lab, seconds: float) -> dict:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/instance-connect", method="POST",
                                     data=json.dumps({"key_seconds": seconds}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def node_keys(lab, node: str, user: str) -> list:
    return lab.admin(f"nodes/{node}/instance-connect-keys/{user}")["keys"]


def ssh(lab, key: dict, node: str, user: str, command: str) -> subprocess.CompletedProcess:
    proxy = f"{sys.executable} {key['dir']}/proxy.py %h %p {SSM_LAB_PLUGIN}"
    argv = ["ssh", "-F", "none", "-o", f"ProxyCommand={proxy}", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={key['dir']}/known_hosts",
            "-i", key["private"], "-l", user, node, command]
    return subprocess.run(argv, capture_output=True, text=True, env=lab.environ(), timeout=60, check=False)


def push(eic, node: str, user: str, public_key: str, **extra) -> dict:
    return eic.send_ssh_public_key(InstanceId=node, InstanceOSUser=user, SSHPublicKey=public_key, **extra)


# --- the API --------------------------------------------------------------------------------------------------


def test_a_pushed_key_is_served_to_that_node_and_user_only(lab, eic, sshd_node, key):
    answer = push(eic, sshd_node, "ec2-user", key["public"])
    assert answer["Success"] is True and answer["RequestId"]
    assert node_keys(lab, sshd_node, "ec2-user") == [key["public"]]
    assert node_keys(lab, sshd_node, "root") == []
    assert node_keys(lab, lab.ec2_ids[1], "ec2-user") == []


def test_a_key_expires_after_the_validity(lab, eic, sshd_node, key):
    assert set_key_seconds(lab, 1)["key_seconds"] == 1
    push(eic, sshd_node, "expiring", key["public"])
    assert node_keys(lab, sshd_node, "expiring") == [key["public"]]
    wait_until(lambda: node_keys(lab, sshd_node, "expiring") == [], 15, what="the pushed key to expire")


def test_the_availability_zone_is_checked_when_given(lab, eic, sshd_node, key):
    zone = lab.instance(sshd_node)["Placement"]["AvailabilityZone"]
    assert push(eic, sshd_node, "ec2-user", key["public"], AvailabilityZone=zone)["Success"] is True
    other = "us-east-1a" if zone != "us-east-1a" else "us-east-1b"
    with pytest.raises(eic.exceptions.InvalidArgsException, match=other):
        push(eic, sshd_node, "ec2-user", key["public"], AvailabilityZone=other)


@pytest.mark.parametrize("user, public_key, match", [
    ("ec2 user", None, "InstanceOSUser"),
    ("-leading-dash", None, "InstanceOSUser"),
    ("ec2-user", "ssh-ed25519 AAAA", "80 to 4096"),
    ("ec2-user", "-----BEGIN OPENSSH PRIVATE KEY-----" + "A" * 80, "Unsupported key type"),
    ("ec2-user", "ssh-dss " + "A" * 100, "Unsupported key type"),
])
def test_bad_arguments_are_refused(lab, sshd_node, key, user, public_key, match):
    # As the service would see them: botocore itself refuses a key shorter than 80 characters.
    eic = lab.client("ec2-instance-connect", config=UNCHECKED)
    with pytest.raises(eic.exceptions.InvalidArgsException, match=match):
        push(eic, sshd_node, user, public_key or key["public"])


def test_an_unknown_instance_is_not_found(eic, key):
    with pytest.raises(eic.exceptions.EC2InstanceNotFoundException):
        push(eic, "i-0123456789abcdef0", "ec2-user", key["public"])


def test_a_stopped_instance_is_refused(lab, eic, key):
    instance = lab.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    lab.ec2.stop_instances(InstanceIds=[instance])
    with pytest.raises(eic.exceptions.EC2InstanceStateInvalidException, match="stopped"):
        push(eic, instance, "ec2-user", key["public"])


def test_the_service_name_and_error_shape_are_those_of_botocore(eic, key):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        push(eic, "i-0123456789abcdef0", "ec2-user", key["public"])
    assert raised.value.response["Error"]["Code"] == "EC2InstanceNotFoundException"
    assert raised.value.operation_name == "SendSSHPublicKey"


# --- the node's sshd ------------------------------------------------------------------------------------------


def test_sshd_accepts_a_pushed_key_only_for_that_user_and_only_while_valid(lab, eic, sshd_node, key):
    refused = ssh(lab, key, sshd_node, "ec2-user", "true")
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr

    push(eic, sshd_node, "ec2-user", key["public"])
    done = ssh(lab, key, sshd_node, "ec2-user", "id -un; hostname; sudo -n id -u")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ec2-user", lab.node_status(sshd_node)["hostname"], "0"]

    other = ssh(lab, key, sshd_node, "root", "true")
    assert other.returncode == 255 and "Permission denied" in other.stderr

    set_key_seconds(lab, 1)
    push(eic, sshd_node, "ec2-user", key["public"])
    wait_until(lambda: key["public"] not in node_keys(lab, sshd_node, "ec2-user"), 15,
               what="the pushed key to expire")
    expired = ssh(lab, key, sshd_node, "ec2-user", "true")
    assert expired.returncode == 255 and "Permission denied (publickey)" in expired.stderr


def test_no_key_is_written_on_the_node_and_nothing_listens(lab, eic, sshd_node, key):
    push(eic, sshd_node, "ec2-user", key["public"])
    body = key["public"].split()[1]
    script = ("for f in $(find /home /root /etc/ssh -maxdepth 3 -name 'authorized_keys*' 2>/dev/null); do "
              f"grep -q '{body}' \"$f\" && echo \"FOUND $f\"; done; "
              "awk 'NR > 1 && $4 == \"0A\" {split($2, a, \":\"); print a[2]}' /proc/net/tcp /proc/net/tcp6")
    done = ssh(lab, key, sshd_node, "ec2-user", f"sudo -n sh -c {shlex.quote(script)}")
    assert done.returncode == 0, done.stderr
    listening = done.stdout.split()
    assert "0016" not in listening  # port 22, in /proc/net/tcp's hex: nothing listens on it
    assert "FOUND" not in done.stdout  # no authorized_keys file on the node holds the pushed key


def test_each_node_has_a_host_key_of_its_own(lab, eic, sshd_node, key):
    push(eic, sshd_node, "ec2-user", key["public"])
    done = ssh(lab, key, sshd_node, "ec2-user", "cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert done.returncode == 0, done.stderr
    with open("/etc/ssh/ssh_host_ed25519_key.pub", encoding="utf-8") as handle:
        machine = handle.read().split()[1]
    assert done.stdout.split()[1] != machine


def test_a_node_without_sshd_does_not_answer_ssh(lab, eic, key):
    node = lab.ec2_ids[1]
    push(eic, node, "ec2-user", key["public"])
    refused = ssh(lab, key, node, "ec2-user", "true")
    assert refused.returncode == 255


def test_bad_lab_settings_are_refused(lab):
    request = urllib.request.Request(f"{lab.endpoint}/_lab/instance-connect", method="POST",
                                     data=json.dumps({"key_seconds": 0}).encode())
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400
