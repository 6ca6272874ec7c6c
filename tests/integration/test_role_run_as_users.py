"""bastionless.ssm.run_as_users on a lab node over bastionless.ssm.session (test_site.py runs the role over
amazon.aws.aws_ssm too, in site.yml, and the first sudo test here does, with two users' rules and two stale rule
files, asserting that nothing warns): the OS accounts that Session Manager Run As maps IAM users to, from the same
variable bastionless.ssm.operator_access tags them with;
sudo rules checked by visudo before they land, removed with their user's rules; accounts no longer mapped removed
only when asked, never system ones; check mode, a second run, bad input. The "Done when" of issue 5: with Run As
on, the IAM user tagged SSMSessionRunAs=alice opens a session with her own keys and ``whoami`` says alice; before
the role ran, the same session failed because the account did not exist."""

import json
import os
import re
import subprocess
import sys

import pytest
from ansible_cli import node_variables, run, run_cases, warnings_in
from roles_helpers import run_command
from session_connection import CONNECTION, connection_env, session_connection  # noqa: F401 pylint: disable=unused-import
from ssm_lab.harness.testing import run_plugin, running_lab, wait_until

PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "run_as_users.yml")
OPERATOR_ACCESS = os.path.join(os.path.dirname(__file__), "playbooks", "operator_access.yml")
INVENTORY = "inventories/lab"
RUN_AS = {"alice": "alice", "ci-deployer": "deploy"}  # IAM user or role -> OS user, for both roles
OPTIONS = {"deploy": {"shell": "/bin/sh", "comment": "CI deployments", "groups": ["users"]}}
SUDOERS = "/etc/sudoers.d"
STATE = "/var/lib/bastionless-ssm-run-as-users.json"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One Online node, the connection's transfer bucket, the IAM user alice and the role ci-deployer."""
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1", "--provisioned") as lab:
        lab.client("s3").create_bucket(Bucket="bastionless-lab-transfer")
        iam = lab.client("iam")
        iam.create_user(UserName="alice")
        # The lab judges an IAM user's own policies: alice may start sessions and open their data channels (which
        # account they run as is the test).
        iam.put_user_policy(UserName="alice", PolicyName="start-sessions", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["ssm:StartSession", "ssmmessages:OpenDataChannel"], "Resource": "*"}]}))
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        iam.create_role(RoleName="ci-deployer", AssumeRolePolicyDocument=json.dumps(trust))
        yield lab


@pytest.fixture(scope="module")
def node(lab):
    [node] = lab.network["nodes"]
    return node


def play(lab, *options, check=True, over_aws_ssm=False, **extra):
    """The role over Session Manager with ``extra`` as extra vars; return (flattened output, the node's recap).
    The lab inventory's run_as_users_extra (session-user, its default Run As account) is left out: the accounts
    here are the map's. ``over_aws_ssm``: over the inventory's amazon.aws.aws_ssm rather than the session connection,
    and nothing may warn (a task looped on the node would leave a traceback of the connection it drops)."""
    extra = {"run_as_users_extra": [], **extra}
    with connection_env("" if over_aws_ssm else CONNECTION):
        output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "-e", json.dumps(extra), *options,
                            check=check)
    if over_aws_ssm:
        assert warnings_in(output) == [], output
    [node] = lab.network["nodes"]
    return " ".join(output.split()), recap.get(node, {})


def on_node(lab, command: str) -> str:
    """The stdout of ``command`` run as root on the node, by Run Command (no change through the role's connection)."""
    [node] = lab.network["nodes"]
    return run_command(lab, node, command).strip()


def over_the_connection(lab, command: str) -> str:
    """The stdout of ``command`` run as root on the node through the connection (raw): it leaves the persistent
    session open that the next play finds."""
    result = subprocess.run(["ansible", "-i", INVENTORY, "all", "-e", f"ansible_connection={CONNECTION}", "-b",
                             "-m", "ansible.builtin.raw", "-a", command],
                            cwd=os.path.join(os.path.dirname(__file__), "..", ".."), capture_output=True, text=True,
                            env=lab.environ(ANSIBLE_NOCOLOR="1"), timeout=120, check=False)
    header, _sep, body = result.stdout.replace("\r", "").partition("\n")
    assert " | CHANGED | rc=0 >>" in header, result.stdout + result.stderr
    return body.strip()


def active_sessions(lab, node: str) -> list:
    """The ids of the node's active sessions (the persistent connection's)."""
    pages = lab.client("ssm").get_paginator("describe_sessions")
    return sorted(s["SessionId"] for page in pages.paginate(State="Active") for s in page["Sessions"]
                  if s["Target"] == node)


def _passwd(text: str) -> dict:
    return {fields[0]: fields for fields in (line.split(":") for line in text.splitlines()) if len(fields) == 7}


def accounts(lab) -> dict:
    """The node's /etc/passwd, by user name."""
    return _passwd(on_node(lab, "cat /etc/passwd"))


def sudoers_files(lab) -> list:
    return sorted(on_node(lab, f"ls -1 {SUDOERS}").split())


def node_state(lab) -> tuple:
    """(accounts, sudoers_files) read in one run."""
    passwd, _sep, files = on_node(lab, f"cat /etc/passwd; echo '-- sudoers.d --'; ls -1 {SUDOERS}").partition(
        "-- sudoers.d --")
    return _passwd(passwd), sorted(files.split())


def session(lab, node: str, user: str, script: str) -> tuple:
    """A shell session (SSM-SessionManagerRunShell) started with ``user``'s own access key, through the lab's
    session-manager-plugin; ``script`` typed into it as one line that ends with exit (sudo relays the terminal to
    its command, so a line typed ahead would be swallowed). Return (plugin exit code, output)."""
    iam = lab.client("iam")
    for old in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=user, AccessKeyId=old["AccessKeyId"])
    key = iam.create_access_key(UserName=user)["AccessKey"]
    ssm = lab.client("ssm", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    response = ssm.start_session(Target=node, DocumentName="SSM-SessionManagerRunShell")
    plugin = [lab.environ()["AWS_SESSION_MANAGER_PLUGIN"],
              json.dumps({k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}), lab.region,
              "StartSession", "", json.dumps({"Target": node}), lab.endpoint]
    return run_plugin(plugin, script + "; exit\n", lab.environ())


def whoami(lab, node: str, user: str) -> str:
    code, output = session(lab, node, user, "echo user=$(whoami)=")
    assert code == 0, output
    [name] = re.findall(r"user=([a-z_][a-z0-9_-]*)=", output)
    return name


@pytest.fixture(scope="module")
def run_as_on(lab):
    """Run As as issue 5 sets it up: operator_access tags alice and ci-deployer from operator_access_run_as, and
    the preferences (bastionless.ssm.ssm_session_preferences) turn Run As on with ssm-user as the default."""
    output, _recap = run(lab, "ansible-playbook", "-i", "localhost,", OPERATOR_ACCESS,
                         "-e", json.dumps({"operator_access_run_as": RUN_AS}))
    tags = lab.client("iam").list_user_tags(UserName="alice")["Tags"]
    assert {"Key": "SSMSessionRunAs", "Value": "alice"} in tags, output
    output, _recap = run(lab, "ansible", "-i", "localhost,", "-c", "local", "localhost",
                         "-e", f"ansible_python_interpreter={sys.executable}",
                         "-m", "bastionless.ssm.ssm_session_preferences",
                         "-a", "run_as_enabled=true run_as_default_user=ssm-user")
    return True


class TestRunAs:
    def test_before_the_role_a_run_as_session_fails_for_want_of_the_account(self, lab, node, run_as_on):
        code, output = session(lab, node, "alice", "whoami")
        assert code == 0  # AWS's plugin exits 0 and prints why the session ended
        assert "Failed to start pty since RunAs user alice does not exist" in output, output

    def test_check_mode_predicts_and_changes_nothing(self, lab, node, run_as_on):
        over_the_connection(lab, "true")  # ssm-user: the agent makes it when the node's first session starts
        before = accounts(lab)
        output, recap = play(lab, "--check", operator_access_run_as=RUN_AS, run_as_users_sudo={"deploy": True})
        # alice's and deploy's accounts (a task each: a loop over amazon.aws.aws_ssm leaves a traceback), a rule file,
        # the state file
        assert recap["failed"] == 0 and recap["changed"] == 4, output
        assert "The Run As account alice]" in output and "The Run As account deploy]" in output, output
        assert accounts(lab) == before
        assert "bastionless-run-as-deploy" not in sudoers_files(lab)

    def test_the_role_makes_the_accounts_of_the_map_and_a_second_run_changes_nothing(
            self, lab, node, run_as_on, tmp_path):
        facts = tmp_path / "facts.json"
        over_the_connection(lab, "true")  # the persistent session the play finds open
        before = set(active_sessions(lab, node))
        output, recap = play(lab, operator_access_run_as=RUN_AS, run_as_users_sudo={"deploy": True},
                             run_as_users_options=OPTIONS, facts_out=str(facts))
        assert recap["failed"] == 0 and recap["changed"] == 4, output
        # The accounts changed, so the role ended that session (a session keeps the groups its user had when it
        # started) and the tasks after it started a new one.
        assert before and wait_until(lambda: not before & set(active_sessions(lab, node)),
                                     what="the session of before the accounts changed to end"), output
        found = accounts(lab)
        assert found["alice"][4:] == ["Session Manager Run As user", "/home/alice", "/bin/bash"]
        assert found["deploy"][4:] == ["CI deployments", "/home/deploy", "/bin/sh"]
        assert int(found["alice"][2]) >= 1000 and int(found["deploy"][2]) >= 1000
        assert "users" in on_node(lab, "id -nG deploy").split()
        result = json.loads(facts.read_text())[node]
        assert result["users"] == ["alice", "deploy"]
        assert result["sudo"] == {"deploy": ["deploy ALL=(ALL) NOPASSWD: ALL"]}
        kept = set(active_sessions(lab, node))
        output, recap = play(lab, operator_access_run_as=RUN_AS, run_as_users_sudo={"deploy": True},
                             run_as_users_options=OPTIONS)
        assert recap["failed"] == 0 and recap["changed"] == 0, output
        assert kept and kept <= set(active_sessions(lab, node)), output  # nothing changed: the session goes on

    def test_now_the_tagged_iam_user_opens_a_session_as_herself(self, lab, node, run_as_on):
        assert whoami(lab, node, "alice") == "alice"


class TestSudo:
    def test_a_rule_lets_the_user_sudo_and_lands_as_a_visudo_checked_file(self, lab, node, run_as_on):
        code, output = session(lab, node, "alice", "sudo -n id -u; echo rc=$?")
        assert "rc=1" in output and "password is required" in output, output
        # Two rule files the role made for users who no longer have rules (its marker line, nothing else).
        stale = ("bastionless-run-as-gone1", "bastionless-run-as-gone2")
        on_node(lab, " && ".join(f"echo '# Managed by bastionless.ssm.run_as_users' > {SUDOERS}/{name} && "
                                 f"chmod 440 {SUDOERS}/{name}" for name in stale))
        # Over amazon.aws.aws_ssm: two users' rules, each checked by visudo and installed by a task of its own, and the
        # two stale files removed by a task each (a loop over them would leave the traceback of a dropped connection;
        # play asserts there is none).
        output, recap = play(lab, operator_access_run_as=RUN_AS, run_as_users_options=OPTIONS, over_aws_ssm=True,
                             run_as_users_sudo={"alice": ["ALL=(root) NOPASSWD: /usr/bin/id"], "deploy": True})
        assert recap["failed"] == 0 and recap["changed"] == 3, output  # alice's rule file, the two stale ones gone
        assert all(f"before anything is installed, the sudo rules of {user}]" in output
                   and f"only when visudo accepts them, the sudo rules of {user}]" in output for user in ("alice", "deploy")), output
        files = sudoers_files(lab)
        assert "bastionless-run-as-alice" in files and not set(stale) & set(files), files
        rule = on_node(lab, f"cat {SUDOERS}/bastionless-run-as-alice; stat -c %a:%U {SUDOERS}/bastionless-run-as-alice")
        assert "alice ALL=(root) NOPASSWD: /usr/bin/id" in rule and "440:root" in rule, rule
        code, output = session(lab, node, "alice",
                               "echo uid=$(sudo -n /usr/bin/id -u)=; sudo -n /bin/cat /etc/shadow >/dev/null; echo rc=$?")
        assert "uid=0=" in output, output
        assert "password is required" in output and "rc=1" in output, output  # only what the rule allows

    def test_a_rule_visudo_rejects_fails_before_any_change(self, lab, node, run_as_on):
        before = (accounts(lab), sudoers_files(lab))
        output, recap = play(lab, check=False, operator_access_run_as={**RUN_AS, "bob": "bob"},
                             run_as_users_options=OPTIONS, run_as_users_sudo={"alice": ["ALL=(ALL) NOPASSWD ALL"], "deploy": True})
        assert recap.get("failed") == 1, output
        assert "run_as_users_sudo: visudo rejects the rules of 'alice' (stdin:1:26: syntax error" in output, output
        assert "Nothing was changed." in output
        assert (accounts(lab), sudoers_files(lab)) == before  # no bob, alice's old rule still in place

    def test_removing_a_rule_removes_its_file_and_leaves_others_files(self, lab, node, run_as_on):
        # A file of someone else's with the role's prefix but not its marker, and the agent's own file.
        on_node(lab, f"echo 'alice ALL=(root) NOPASSWD: /bin/true' > {SUDOERS}/bastionless-run-as-handmade && "
                     f"chmod 440 {SUDOERS}/bastionless-run-as-handmade")
        output, recap = play(lab, operator_access_run_as=RUN_AS, run_as_users_options=OPTIONS,
                             run_as_users_sudo={"deploy": True})
        assert recap["failed"] == 0 and recap["changed"] == 1, output
        files = sudoers_files(lab)
        assert "bastionless-run-as-alice" not in files
        assert {"bastionless-run-as-deploy", "bastionless-run-as-handmade", "ssm-agent-users"} <= set(files), files
        code, output = session(lab, node, "alice", "sudo -n /usr/bin/id -u; echo rc=$?")
        assert "rc=1" in output, output


class TestRemoval:
    def test_a_user_left_out_stays_unless_removal_is_asked(self, lab, node, run_as_on, tmp_path):
        facts = tmp_path / "facts.json"
        output, recap = play(lab, operator_access_run_as={"alice": "alice"}, facts_out=str(facts))
        assert recap["failed"] == 0, output
        assert "deploy" in accounts(lab)
        assert json.loads(facts.read_text())[node]["left_in_place"] == ["deploy"]
        assert "bastionless-run-as-deploy" not in sudoers_files(lab)  # its rules went with the map entry

    def test_removal_takes_only_what_the_role_made_never_system_accounts(self, lab, node, run_as_on):
        # carol exists before the role maps anyone to her: taken over, never removed. A state file edited to name
        # a system account as well: never removed either.
        on_node(lab, "useradd -m -s /bin/bash carol")
        output, recap = play(lab, operator_access_run_as={"alice": "alice", "carol-iam": "carol"})
        assert recap["failed"] == 0, output
        state = json.loads(on_node(lab, f"cat {STATE}"))["users"]
        assert state == ["alice", "deploy"], state  # carol was not made by the role
        on_node(lab, "printf '%s' '" + json.dumps({"users": ["alice", "daemon", "deploy"]}) + "' > " + STATE)
        output, recap = play(lab, "--check", operator_access_run_as={"alice": "alice"}, run_as_users_remove_absent=True)
        assert recap["failed"] == 0 and "(item=deploy)" in output and "(item=carol)" not in output, output
        assert "deploy" in accounts(lab)
        output, recap = play(lab, operator_access_run_as={"alice": "alice"}, run_as_users_remove_absent=True)
        assert recap["failed"] == 0, output
        found = accounts(lab)
        assert "deploy" not in found
        assert {"alice", "carol", "daemon", "root", "ssm-user"} <= set(found)
        assert json.loads(on_node(lab, f"cat {STATE}"))["users"] == ["alice"]
        output, recap = play(lab, operator_access_run_as={"alice": "alice"}, run_as_users_remove_absent=True)
        assert recap["failed"] == 0 and recap["changed"] == 0, output
        assert whoami(lab, node, "alice") == "alice"


# Each bad input in a run of its own would be ten runs: all of them run at once, each case a host of its own (the
# node under another name), with operator_access_run_as empty unless the case gives it.
BAD_INPUT = {
    "os-user": ({"operator_access_run_as": {"alice": "Alice Smith"}},
                "run_as_users_map: 'alice' maps to \"Alice Smith\", which is not a Linux user name"),
    "iam-arn": ({"run_as_users_map": {"arn:aws:iam::123456789012:user/alice": "alice"}},
                "run_as_users_map: 'arn:aws:iam::123456789012:user/alice' is not an IAM user or role name"),
    "sudo-unknown-user": ({"operator_access_run_as": {"alice": "alice"}, "run_as_users_sudo": {"mallory": True}},
                          "run_as_users_sudo: 'mallory' is not one of the users"),
    "sudo-string": ({"operator_access_run_as": {"alice": "alice"}, "run_as_users_sudo": {"alice": "ALL"}},
                    "run_as_users_sudo: 'alice' has \"ALL\"; give true"),
    "shell-relative": ({"operator_access_run_as": {"alice": "alice"},
                        "run_as_users_options": {"alice": {"shell": "bash"}}},
                       "run_as_users_options: 'alice' has shell \"bash\", which is not an absolute path"),
    "unknown-option": ({"operator_access_run_as": {"alice": "alice"}, "run_as_users_options": {"alice": {"sudo": True}}},
                       "run_as_users_options: 'alice' has sudo, which the role does not know"),
    "extra-name": ({"operator_access_run_as": {"alice": "alice"}, "run_as_users_extra": ["9lives"]},
                   "run_as_users_extra: \"9lives\" is not a Linux user name"),
    "system-account": ({"operator_access_run_as": {"alice": "alice", "svc": "daemon"}},
                       "run_as_users_map: 'daemon' is a system account on"),
    "missing-group": ({"operator_access_run_as": {"alice": "alice"},
                       "run_as_users_options": {"alice": {"groups": ["no-such-group"]}}},
                      "'alice' should join no-such-group, which does not exist on"),
    "no-visudo": ({"operator_access_run_as": {"alice": "alice"}, "run_as_users_sudo": {"alice": True},
                   "run_as_users_visudo": "/usr/local/sbin/visudo"},
                  "run_as_users_visudo: /usr/local/sbin/visudo is not on"),
}


def test_bad_input_one_clear_error_and_nothing_changed(lab, node, run_as_on, tmp_path):
    over_the_connection(lab, "true")  # ssm-user: the agent makes it when the node's first session starts
    before = node_state(lab)
    cases = run_cases(lab, tmp_path, "bastionless.ssm.run_as_users",
                      {name: {"operator_access_run_as": {}, **extra} for name, (extra, _message) in BAD_INPUT.items()},
                      node_vars=node_variables(lab, node))
    for name, (_extra, message) in BAD_INPUT.items():
        failure = cases.only_failure(name)
        assert message in failure and "Nothing was changed." in failure, (name, failure)
    assert node_state(lab) == before
