"""ssh over Session Manager against the lab, through ansible-playbook: the bastionless.ssm.ssh_over_ssm role's block
(check mode, idempotence, diff, absent, bad input); Ansible's ssh connection over AWS-StartSSHSession with the
managed_nodes inventory, ControlPersist (one session per node for a whole play, and none for a second run) and
pipelining (no file put on the node); EC2 Instance Connect keys: the operator's key pushed by the proxy at each
connection, and a fresh key per run (bastionless.ssm.instance_connect_key) that is gone after the run, written in
no authorized_keys, and refused once its validity has passed; nothing listens on port 22.

Every path (ssh config, known hosts, control sockets, keys) is under the test's temporary directory: the real
~/.ssh is never touched (ssh is always given -F)."""

import json
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
import urllib.request

import pytest
import yaml
from ansible_cli import run, run_cases, save_task
from ssm_lab.harness.testing import running_lab, wait_until

ROLE = "bastionless.ssm.ssh_over_ssm"
DOCUMENT = "AWS-StartSSHSession"
BEGIN = "# BEGIN bastionless.ssm ssh_over_ssm"

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs /usr/sbin/sshd (make system-deps)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--sshd", "2", "--provisioned") as lab:
        yield lab


@pytest.fixture(scope="module")
def nodes(lab) -> list:
    return sorted(n for n in lab.network["nodes"] if n.startswith("i-"))


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory) -> str:
    """The operator's own key pair: the role's block pushes its .pub at each connection."""
    path = tmp_path_factory.mktemp("operator") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)


def role_play(tmp_path, **role_vars) -> str:
    path = tmp_path / "role.yml"
    path.write_text(json.dumps([{
        "name": "ssh over SSM", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "roles": [{"role": ROLE, **role_vars}],
        "post_tasks": [save_task("ssh_over_ssm_result", tmp_path / "result.json")],
    }]))
    return str(path)


def apply_role(lab, tmp_path, *flags, check=True, **role_vars):
    output, recap = run(lab, "ansible-playbook", "-i", "localhost,", role_play(tmp_path, **role_vars), *flags,
                        check=check)
    result = json.loads((tmp_path / "result.json").read_text()) if (tmp_path / "result.json").exists() else None
    return output, recap.get("localhost", {}), result


@pytest.fixture
def sockets():
    """A short directory for control sockets (a socket path must stay at most 90 characters with %C expanded)."""
    path = tempfile.mkdtemp(prefix="bso-")
    yield pathlib.Path(path)
    stop_masters(path)
    shutil.rmtree(path, ignore_errors=True)


def ssh_home(base, key: str = "", sockets=None) -> dict:
    """Role variables that keep everything under ``base`` (and the control sockets in ``sockets``)."""
    base.mkdir(parents=True, exist_ok=True)
    values = {"ssh_over_ssm_config_path": str(base / "ssh" / "config"),
              "ssh_over_ssm_proxy_path": str(base / "ssh" / "proxy.py"),
              "ssh_over_ssm_control_path": str((sockets or base) / "cm-%C"),
              "ssh_over_ssm_known_hosts_file": str(base / "ssh" / "known_hosts"),
              "ssh_over_ssm_region": "us-east-1"}
    if key:
        values["ssh_over_ssm_instance_connect_key"] = key
    return values


def ssh_sessions(lab, node: str) -> list:
    found = []
    for state in ("Active", "History"):
        found += [s for s in lab.client("ssm").describe_sessions(
            State=state, Filters=[{"key": "Target", "value": node}], MaxResults=200)["Sessions"]
            if s["DocumentName"] == DOCUMENT]
    return found


def set_key_seconds(lab, seconds: float) -> None:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/instance-connect", method="POST",
                                     data=json.dumps({"key_seconds": seconds}).encode())
    urllib.request.urlopen(request, timeout=10).close()


def active_keys(lab, node: str, user: str) -> list:
    with urllib.request.urlopen(f"{lab.endpoint}/_lab/nodes/{node}/instance-connect-keys/{user}", timeout=10) as answer:
        return json.load(answer)["keys"]


def node_hostname(lab, node: str) -> str:
    with urllib.request.urlopen(f"{lab.endpoint}/_lab/nodes/{node}", timeout=10) as answer:
        return json.load(answer)["hostname"]


def inventory(tmp_path, connection_vars: dict, **extra) -> str:
    """The managed_nodes inventory with connection ansible.builtin.ssh and the role's connection_vars as group_vars."""
    folder = tmp_path / "inventory"
    (folder / "group_vars").mkdir(parents=True, exist_ok=True)
    (folder / "lab.managed_nodes.yml").write_text(yaml.safe_dump({
        "plugin": "bastionless.ssm.managed_nodes", "regions": ["us-east-1"], "connection": "ansible.builtin.ssh"}))
    (folder / "group_vars" / "ssm_nodes.yml").write_text(yaml.safe_dump({
        **connection_vars, "ansible_python_interpreter": "/usr/bin/python3", **extra}))
    return str(folder)


def stop_masters(control_dir) -> None:
    """End the ssh master connections ControlPersist keeps (each ends its proxy and its session)."""
    for name in os.listdir(control_dir) if os.path.isdir(control_dir) else []:
        path = os.path.join(control_dir, name)
        if stat.S_ISSOCK(os.stat(path).st_mode):
            subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={path}", "-O", "exit", "lab-node"],
                           capture_output=True, timeout=30, check=False)


# --- the role -------------------------------------------------------------------------------------------------


def test_the_role_writes_its_block_in_check_mode_idempotently_and_removes_it(lab, tmp_path, sockets):
    home = ssh_home(tmp_path / "home", sockets=sockets)
    config = tmp_path / "home" / "ssh" / "config"

    _out, recap, result = apply_role(lab, tmp_path, "--check", **home)
    assert recap["changed"] > 0 and recap["failed"] == 0
    assert not config.exists()
    assert result["connection_vars"]["ansible_ssh_common_args"] == f"-F {config}"

    config.parent.mkdir(mode=0o755)
    config.write_text("Host build-box\n  User builder\n")
    output, recap, result = apply_role(lab, tmp_path, "--diff", **home)
    assert recap["changed"] > 0 and recap["failed"] == 0
    text = config.read_text()
    assert text.startswith(BEGIN) and text.rstrip().endswith("Host build-box\n  User builder")
    assert "Host i-* mi-*" in text and f"ProxyCommand {result['proxy_command']}" in text
    assert "--target %h --port %p --region us-east-1" in result["proxy_command"]
    assert f"ControlPath {sockets}/cm-%C" in text and "ControlPersist 10m" in text
    assert "User ec2-user" in text and "IdentityFile" not in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert "+Host i-* mi-*" in output  # the diff
    assert result["connection_vars"] == {
        "ansible_connection": "ansible.builtin.ssh", "ansible_user": "ec2-user", "ansible_pipelining": True,
        "ansible_ssh_args": f"-C -o ControlMaster=auto -o ControlPersist=10m -o ControlPath={sockets}/cm-%C",
        "ansible_ssh_common_args": f"-F {config}"}

    _out, recap, _result = apply_role(lab, tmp_path, **home)
    assert recap["changed"] == 0 and recap["failed"] == 0

    _out, recap, _result = apply_role(lab, tmp_path, "--check", **home, ssh_over_ssm_user="ubuntu")
    assert recap["changed"] > 0 and config.read_text() == text

    _out, recap, _result = apply_role(lab, tmp_path, **home, ssh_over_ssm_state="absent")
    assert recap["changed"] > 0
    assert config.read_text() == "Host build-box\n  User builder\n"
    assert not (tmp_path / "home" / "ssh" / "proxy.py").exists()
    _out, recap, _result = apply_role(lab, tmp_path, **home, ssh_over_ssm_state="absent")
    assert recap["changed"] == 0


def _resolved(config, host: str) -> dict:
    """What ssh makes of host with config (ssh -G connects nowhere): {option: [values]}."""
    done = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=30,
                          check=True)
    values = {}
    for line in done.stdout.splitlines():
        name, _sep, value = line.partition(" ")
        values.setdefault(name, []).append(value)
    return values


def test_the_key_is_for_ec2_instances_only_and_the_rest_of_the_file_stays_global(lab, tmp_path, sockets):
    """The Instance Connect key goes to i- nodes only (the proxy pushes none to hybrid mi- nodes, which keep ssh's
    own keys), and global options the file had at its top still apply to every host after the block is put above
    them."""
    home = ssh_home(tmp_path / "home", key=str(tmp_path / "operator_key"), sockets=sockets)
    config = tmp_path / "home" / "ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text("ServerAliveInterval 42\n\nHost build-box\n  User builder\n")
    _out, recap, _result = apply_role(lab, tmp_path, check=False, **home)
    assert recap["failed"] == 0 and recap["changed"] > 0
    ec2, hybrid, other = (_resolved(config, h) for h in ("i-0123456789abcdef0", "mi-0123456789abcdef0", "build-box"))
    key = str(tmp_path / "operator_key")
    assert ec2["identityfile"] == [key] and ec2["identitiesonly"] == ["yes"]
    assert key not in hybrid["identityfile"] and hybrid["identitiesonly"] == ["no"]
    assert hybrid["proxycommand"] == ec2["proxycommand"] and hybrid["user"] == ["ec2-user"]
    assert ec2["serveraliveinterval"] == hybrid["serveraliveinterval"] == other["serveraliveinterval"] == ["42"]
    assert other["user"] == ["builder"] and "proxycommand" not in other
    _out, recap, _result = apply_role(lab, tmp_path, check=False, **home)
    assert recap["changed"] == 0


# The bad inputs, all in one run (each case a host of its own, with a home of its own).
BAD_INPUT = {
    "no-%C": ({"ssh_over_ssm_control_path": "/tmp/sockets"}, "must contain %C"),
    "socket-too-long": ({"ssh_over_ssm_control_path": "/tmp/" + "x" * 80 + "/%C"}, "too long for a unix socket"),
    # 92 characters with %C expanded: ssh's temporary socket name would be 109 (the old check let it through)
    "socket-over-90": ({"ssh_over_ssm_control_path": "/tmp/" + "x" * 46 + "/%C"}, "keep it at most 90 characters"),
    "no-patterns": ({"ssh_over_ssm_host_patterns": []}, "ssh_over_ssm_host_patterns must list"),
    "pattern-list": ({"ssh_over_ssm_host_patterns": ["i-*,mi-*"]}, "without spaces or commas"),
    "key-with-aws-cli": ({"ssh_over_ssm_proxy": "aws_cli", "ssh_over_ssm_instance_connect_key": "/tmp/k"},
                         "needs ssh_over_ssm_proxy=collection"),
    "python-without-boto3": ({"ssh_over_ssm_python": "/nonexistent/python"}, "cannot import boto3"),
    "unknown-proxy": ({"ssh_over_ssm_proxy": "scp"}, "ssh_over_ssm_proxy"),
    "missing-plugin": ({"ssh_over_ssm_plugin": "/nonexistent/session-manager-plugin"},
                       "is not a file on this machine"),
    "plugin-with-aws-cli": ({"ssh_over_ssm_proxy": "aws_cli", "ssh_over_ssm_plugin": "/bin/true"},
                            "ssh_over_ssm_plugin needs ssh_over_ssm_proxy=collection"),
    # with a key set, the error still names what is wrong (it used to speak of the key)
    "key-and-no-%C": ({"ssh_over_ssm_instance_connect_key": "/tmp/k", "ssh_over_ssm_control_path": "/tmp/sockets"},
                      "must contain %C"),
    # ssh reads the block before it is written: a value it refuses names itself, and no config is left behind
    "control-persist": ({"ssh_over_ssm_control_persist": "10 minutes"},
                        "keyword controlpersist extra arguments at end of line /dev/stdin: terminating, 1 bad "
                        "configuration options (line 1 is the Host line; check ssh_over_ssm_control_persist, a time "
                        "such as 10m or yes/no,"),
}


def test_bad_input_gets_one_clear_error(lab, tmp_path, sockets):
    homes = {name: ssh_home(tmp_path / name / "home", sockets=sockets) for name in BAD_INPUT}
    cases = run_cases(lab, tmp_path, ROLE, {name: {**homes[name], **override}
                                            for name, (override, _message) in BAD_INPUT.items()})
    for name, (_override, message) in BAD_INPUT.items():
        assert message in cases.only_failure(name), (name, cases.failures.get(name))
        assert not (tmp_path / name / "home" / "ssh" / "config").exists()


def test_the_plugin_named_in_the_block_needs_nothing_in_the_environment(lab, nodes, tmp_path, sockets, operator_key):
    """ssh_over_ssm_plugin: the proxy command finds session-manager-plugin where ssh runs with no
    AWS_SESSION_MANAGER_PLUGIN (an IDE, a cron job); without it, the same ssh fails and says what is missing."""
    home = ssh_home(tmp_path / "home", key=operator_key, sockets=sockets)
    plugin = lab.environ()["AWS_SESSION_MANAGER_PLUGIN"]
    env = {k: v for k, v in lab.environ().items() if k != "AWS_SESSION_MANAGER_PLUGIN"}
    ssh = ["ssh", "-F", home["ssh_over_ssm_config_path"], "-o", "BatchMode=yes", nodes[0], "id", "-un"]

    _out, recap, _result = apply_role(lab, tmp_path, **home)
    assert recap["failed"] == 0
    # no master connection this once: a backgrounded master's proxy command has no stderr to say why it failed
    alone = ssh[:3] + ["-o", "ControlMaster=no", "-o", "ControlPath=none"] + ssh[3:]
    done = subprocess.run(alone, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 255 and "session-manager-plugin not found" in done.stderr, done.stderr

    _out, recap, result = apply_role(lab, tmp_path, **home, ssh_over_ssm_plugin=plugin)
    assert recap["failed"] == 0 and result["proxy_command"].endswith(f" --plugin {plugin}")
    done = subprocess.run(ssh, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ec2-user", done.stderr


def test_the_aws_cli_form(lab, tmp_path, sockets):
    _out, recap, result = apply_role(lab, tmp_path, **ssh_home(tmp_path / "home", sockets=sockets),
                                     ssh_over_ssm_proxy="aws_cli",
                                     ssh_over_ssm_profile="ops")
    assert recap["failed"] == 0
    assert result["proxy_command"] == ("aws ssm start-session --target %h --document-name AWS-StartSSHSession "
                                       "--parameters portNumber=%p --region us-east-1 --profile ops")
    assert not (tmp_path / "home" / "ssh" / "proxy.py").exists()


# --- Ansible over ssh over SSM ----------------------------------------------------------------------------------

PLAY_TASKS = [
    {"name": "Where am I", "ansible.builtin.command": "hostname", "register": "__host", "changed_when": False},
    {"name": "A file", "ansible.builtin.copy": {"content": "over ssm\n", "dest": "/tmp/ssh-over-ssm.txt", "mode": "0644"}},
    {"name": "Become root", "ansible.builtin.command": "id -u", "become": True, "register": "__root",
     "changed_when": False},
    {"name": "Nothing listens on port 22 (0016), nor on any other port of sshd's",
     "ansible.builtin.shell": "awk 'NR > 1 && $4 == \"0A\" {split($2, a, \":\"); print a[2]}' /proc/net/tcp /proc/net/tcp6",
     "register": "__listening", "changed_when": False},
    {"name": "Save what the node said", "delegate_to": "localhost",
     "ansible.builtin.copy": {"content": "{{ {'host': __host.stdout, 'uid': __root.stdout, "
                                         "'listening': __listening.stdout_lines} | to_json }}",
                              "dest": "{{ out_dir }}/{{ inventory_hostname }}.json"},
     "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
]


def node_play(tmp_path, tasks, pre_plays=(), **play_vars) -> str:
    path = tmp_path / "site.yml"
    path.write_text(json.dumps([*pre_plays, {"name": "Nodes over ssh over SSM", "hosts": "ssm_nodes",
                                             "gather_facts": False, "vars": play_vars, "tasks": tasks}]))
    return str(path)


def test_a_playbook_runs_over_ssh_over_ssm_with_control_persist_and_pipelining(lab, nodes, tmp_path, sockets,
                                                                               operator_key):
    home = ssh_home(tmp_path / "home", key=operator_key, sockets=sockets)
    _out, recap, result = apply_role(lab, tmp_path, **home)
    assert recap["failed"] == 0
    assert f"--os-user %r --public-key {operator_key}.pub" in result["proxy_command"]
    control_dir = sockets  # the block's ControlPath, which the connection variables name for Ansible too
    inv = inventory(tmp_path, result["connection_vars"])
    listed = json.loads(subprocess_inventory(lab, inv))
    for node in nodes:
        host = {k: v.get("__ansible_unsafe", v) if isinstance(v, dict) else v
                for k, v in listed["_meta"]["hostvars"][node].items()}  # values from AWS come marked unsafe
        assert host["ansible_host"] == node and host["ansible_connection"] == "ansible.builtin.ssh"
        assert not [k for k in host if k.startswith("ansible_aws_ssm_")]
    before = {n: len(ssh_sessions(lab, n)) for n in nodes}
    try:
        output, recap = run(lab, "ansible-playbook", "-vvv", "-i", inv,
                            node_play(tmp_path, PLAY_TASKS, out_dir=str(tmp_path)))
        for node in nodes:
            assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output[-3000:]
            said = json.loads((tmp_path / f"{node}.json").read_text())
            assert said["host"] == node_hostname(lab, node) and said["uid"] == "0"
            assert "0016" not in said["listening"]
            # ControlPersist: one AWS-StartSSHSession session per node carried the whole play
            assert len(ssh_sessions(lab, node)) == before[node] + 1
        puts = [line for line in output.splitlines() if line.startswith("<i-") and "> PUT " in line]
        assert puts and not [line for line in puts if "AnsiballZ" in line]  # pipelining: copy's file only, no module
        sockets = [p for p in control_dir.iterdir() if stat.S_ISSOCK(p.stat().st_mode)]
        assert len(sockets) == len(nodes)

        output, recap = run(lab, "ansible", "-i", inv, "ssm_nodes", "-m", "ansible.builtin.command", "-a", "uptime")
        for node in nodes:
            assert recap == {} or recap.get(node, {}).get("failed", 0) == 0
            assert len(ssh_sessions(lab, node)) == before[node] + 1  # the second run reused the master connection
        assert output.count("CHANGED") == len(nodes), output

        for node in nodes:  # an operator's ssh through the block goes through Ansible's master connection
            done = subprocess.run(["ssh", "-F", home["ssh_over_ssm_config_path"], "-o", "BatchMode=yes", node, "true"],
                                  capture_output=True, text=True, env=lab.environ(), timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            assert len(ssh_sessions(lab, node)) == before[node] + 1
    finally:
        stop_masters(control_dir)
    for node in nodes:
        wait_until(lambda node=node: all(s["Status"] == "Terminated" for s in ssh_sessions(lab, node)), 30,
                   what=f"the ssh sessions to {node} to end with their master connections")


def subprocess_inventory(lab, inv: str) -> str:
    result = subprocess.run(["ansible-inventory", "-i", inv, "--list"], capture_output=True, text=True,
                            env=lab.environ(), timeout=120, check=True)
    return result.stdout


def test_a_fresh_key_per_run_is_pushed_before_connecting_and_gone_after(lab, nodes, tmp_path, sockets):
    home = ssh_home(tmp_path / "home", sockets=sockets)
    _out, recap, result = apply_role(lab, tmp_path, **home)
    assert recap["failed"] == 0
    control_dir = sockets
    inv = inventory(tmp_path, result["connection_vars"])
    set_key_seconds(lab, 5)  # shorter than the play: the master connection outlives the key
    key_play = {"name": "A key pair for this run", "hosts": "localhost", "connection": "local", "gather_facts": False,
                "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                "tasks": [{"name": "Make it", "bastionless.ssm.instance_connect_key": {}, "register": "run_key"}]}
    tasks = [
        {"name": "Connect: the ProxyCommand pushes the run's key", "ansible.builtin.command": "true",
         "changed_when": False},
        {"name": "Wait past the key's validity: the master connection carries on",
         "ansible.builtin.pause": {"seconds": 6}, "run_once": True},
        {"name": "No authorized_keys on the node holds the run's key",
         # Where sshd reads authorized keys (a node's /root and /home are the machine's, under its overlay: a
         # recursive grep of them reads every virtualenv on the machine).
         "ansible.builtin.shell": "find /home /root /etc/ssh -maxdepth 3 -path '*authorized_keys*' -type f 2>/dev/null"
                                  " | xargs -r grep -l -- \"$KEY\" || true",
         "environment": {"KEY": "{{ hostvars.localhost.run_key.public_key.split()[1] }}"}, "become": True,
         "register": "__found", "changed_when": False, "failed_when": "__found.stdout != ''"},
        {"name": "Keep the key pair for the test (a test only)", "run_once": True, "delegate_to": "localhost",
         "ansible.builtin.copy": {"src": "{{ hostvars.localhost.run_key.key_dir }}/", "dest": f"{tmp_path}/kept/",
                                  "mode": "0600"},
         "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
        {"name": "Say where it was", "run_once": True, "delegate_to": "localhost",
         "ansible.builtin.copy": {"content": "{{ hostvars.localhost.run_key | to_json }}", "dest": f"{tmp_path}/key.json"},
         "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
    ]
    play_vars = {
        "ansible_ssh_private_key_file": "{{ hostvars.localhost.run_key.private_key_file }}",
        "ansible_ssh_common_args": (result["connection_vars"]["ansible_ssh_common_args"]
                                    + " -o ProxyCommand=\"" + result["proxy_command"]
                                    + " --os-user %r --public-key {{ hostvars.localhost.run_key.public_key_file }}\""),
    }
    try:
        output, recap = run(lab, "ansible-playbook", "-i", inv, node_play(tmp_path, tasks, [key_play], **play_vars))
        for node in nodes:
            assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output[-3000:]
            assert len(ssh_sessions(lab, node)) >= 1
    finally:
        stop_masters(control_dir)
        set_key_seconds(lab, 60)
    key = json.loads((tmp_path / "key.json").read_text())
    assert "private_key" not in key and "BEGIN" not in json.dumps(key)  # only paths and the public half
    assert not os.path.exists(key["key_dir"])  # deleted when ansible-playbook exited
    kept = tmp_path / "kept" / "id_ed25519"
    for node in nodes:
        assert key["public_key"] not in active_keys(lab, node, "ec2-user")  # expired
        refused = subprocess.run(
            ["ssh", "-F", home["ssh_over_ssm_config_path"], "-o", "ControlMaster=no", "-o", "ControlPath=none",
             "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(kept), node, "true"],
            capture_output=True, text=True, env=lab.environ(), timeout=60, check=False)
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr


def test_the_node_security_groups_open_no_port_22(lab, nodes):
    for node in nodes:
        groups = [g["GroupId"] for g in lab.client("ec2").describe_instances(
            InstanceIds=[node])["Reservations"][0]["Instances"][0]["SecurityGroups"]]
        for group in lab.client("ec2").describe_security_groups(GroupIds=groups)["SecurityGroups"]:
            for rule in group["IpPermissions"]:
                low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
                assert rule.get("IpProtocol") != "-1" and not low <= 22 <= high, rule
