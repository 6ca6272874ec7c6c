"""bastionless.ssm.operator_access against the lab: the operator groups' policies, their attachments to IAM
groups, users and roles, the Run As tags, check mode, bad input (a second run is test_site.py's second
site.yml run, and the molecule scenario's idempotence step with the same groups); the generated policies judged by
an IAM evaluator (the lab does not enforce IAM) and linted by parliament; and a session that runs as the OS user
the role's tag names."""

import json
import os
import re
import time

import pytest
from ansible_cli import controller_play, module_examples, run, run_cases, save_task, warnings_in
from ssm_lab.aws.iamsim import ALLOWED as ALLOW
from ssm_lab.aws.iamsim import EXPLICIT_DENY, IMPLICIT_DENY
from ssm_lab.aws.iamsim import decide as evaluate
from parliament import analyze_policy_string, enhance_finding
from ssm_lab.harness.testing import run_plugin, running_lab

PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "operator_access.yml")
PREFIX = "bastionless-ssm-"
ACCOUNT, REGION = "123456789012", "us-east-1"
TRUST_EC2 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
KEEP = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}]}

GROUPS = [
    {"name": "dev-operators", "documents": ["shell"], "resource_tags": {"Env": "dev"},
     "iam_groups": ["developers"], "iam_users": ["bob"]},
    {"name": "ops", "documents": ["shell", "ssh", "port_forwarding", "port_forwarding_remote_host"],
     "iam_groups": ["operators"], "iam_roles": ["ci-deployer"]},
]
RUN_AS = {"alice": "alice", "ci-deployer": "deploy"}
WANTED = {"operator_access_groups": GROUPS, "operator_access_run_as": RUN_AS}


def play(lab, *options, check=True, **extra):
    """Run the playbook with ``extra`` as extra vars; return (flattened output, localhost's recap)."""
    output, recap = run(lab, "ansible-playbook", "-i", "localhost,", PLAYBOOK, "-e", json.dumps(extra), *options,
                        check=check)
    return " ".join(output.split()), recap.get("localhost", {})


def our_policies(lab) -> dict:
    policies = lab.client("iam").list_policies(Scope="Local")["Policies"]
    return {p["PolicyName"]: p["Arn"] for p in policies if p["PolicyName"].startswith(PREFIX)}


def attached(lab, kind: str, name: str) -> set:
    iam = lab.client("iam")
    call = {"group": (iam.list_attached_group_policies, "GroupName"),
            "user": (iam.list_attached_user_policies, "UserName"),
            "role": (iam.list_attached_role_policies, "RoleName")}[kind]
    return {p["PolicyName"] for p in call[0](**{call[1]: name})["AttachedPolicies"]}


def tags(lab, kind: str, name: str) -> dict:
    iam = lab.client("iam")
    listed = iam.list_user_tags(UserName=name) if kind == "user" else iam.list_role_tags(RoleName=name)
    return {t["Key"]: t["Value"] for t in listed["Tags"]}


def snapshot(lab) -> dict:
    """Everything the role may change, to show that a run changed none of it."""
    return {"policies": sorted(our_policies(lab)),
            "attached": {(kind, name): attached(lab, kind, name) for kind, name in
                         [("group", "developers"), ("group", "operators"), ("user", "alice"), ("user", "bob"),
                          ("role", "ci-deployer")]},
            "tags": {(kind, name): tags(lab, kind, name) for kind, name in
                     [("user", "alice"), ("user", "bob"), ("role", "ci-deployer")]}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One node, Online (the Run As test opens a session on it), and the IAM principals the role attaches to:
    each already has a policy or a tag of its own that must stay."""
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1", "--provisioned") as lab:
        iam = lab.client("iam")
        keep = iam.create_policy(PolicyName="keep-me", PolicyDocument=json.dumps(KEEP))["Policy"]["Arn"]
        for group in ("developers", "operators"):
            iam.create_group(GroupName=group)
        iam.attach_group_policy(GroupName="developers", PolicyArn=keep)
        iam.create_user(UserName="alice", Tags=[{"Key": "team", "Value": "core"}])
        iam.create_user(UserName="bob")
        iam.add_user_to_group(GroupName="developers", UserName="alice")
        iam.attach_user_policy(UserName="alice", PolicyArn=keep)
        iam.create_role(RoleName="ci-deployer", AssumeRolePolicyDocument=TRUST_EC2,
                        Tags=[{"Key": "owner", "Value": "ci"}])
        iam.attach_role_policy(RoleName="ci-deployer", PolicyArn=keep)
        yield lab


class TestRole:
    def test_check_mode_predicts_and_changes_nothing(self, lab):
        before = snapshot(lab)
        output, recap = play(lab, "--check", **WANTED)
        assert recap["failed"] == 0 and recap["changed"] == 4, output  # policies, groups, users, roles
        for item in (PREFIX + "dev-operators", PREFIX + "ops", "developers", "operators", "alice", "bob",
                     "ci-deployer"):
            assert f"changed: [localhost] => (item={item})" in output, item
        assert snapshot(lab) == before

    def test_policies_created_and_attached_leaving_others(self, lab, tmp_path):
        facts = tmp_path / "facts.json"
        output, recap = play(lab, **WANTED, facts_out=str(facts))
        assert recap["failed"] == 0 and recap["changed"] == 5, output  # and the facts file
        policies = our_policies(lab)
        assert set(policies) == {PREFIX + "dev-operators", PREFIX + "ops"}
        returned = json.loads(facts.read_text())["policies"]
        iam = lab.client("iam")
        for name, arn in policies.items():
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            assert iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"] == returned[name]
        assert attached(lab, "group", "developers") == {"keep-me", PREFIX + "dev-operators"}
        assert attached(lab, "user", "bob") == {PREFIX + "dev-operators"}
        assert attached(lab, "group", "operators") == {PREFIX + "ops"}
        assert attached(lab, "role", "ci-deployer") == {"keep-me", PREFIX + "ops"}
        assert attached(lab, "user", "alice") == {"keep-me"}  # tagged only; her group carries the policy

    def test_run_as_tags_set_other_tags_and_the_trust_policy_kept(self, lab, tmp_path):
        assert tags(lab, "user", "alice") == {"team": "core", "SSMSessionRunAs": "alice"}
        assert tags(lab, "role", "ci-deployer") == {"owner": "ci", "SSMSessionRunAs": "deploy"}
        assert tags(lab, "user", "bob") == {}
        role = lab.client("iam").get_role(RoleName="ci-deployer")["Role"]
        assert role["AssumeRolePolicyDocument"] == json.loads(TRUST_EC2)
        assert lab.client("iam").list_instance_profiles_for_role(RoleName="ci-deployer")["InstanceProfiles"] == []
        facts = tmp_path / "facts.json"
        output, recap = play(lab, "--check", **WANTED, facts_out=str(facts))
        assert recap["failed"] == 0, output
        assert json.loads(facts.read_text())["os_users"] == RUN_AS

    # Each bad input next to a good new group (whose policy would be made first): one error, nothing made. All the
    # cases in one run, each a host of its own.
    NEW = {"name": "half-made", "documents": ["ssh"], "iam_groups": ["operators"]}
    BAD_INPUT = {
        "no-documents": ({"operator_access_groups": [NEW, {"name": "empty", "documents": []}]},
                         "operator_access_groups: 'empty' has no documents; list at least one of port_forwarding, "
                         "port_forwarding_remote_host, shell, ssh"),
        "unknown-document": ({"operator_access_groups": [NEW, {"name": "desktop", "documents": ["rdp"]}]},
                             "value of documents must be one or more of: shell, ssh, port_forwarding, "
                             "port_forwarding_remote_host. Got no match for: rdp found in operator_access_groups"),
        "bad-os-user": ({"operator_access_groups": [NEW], "operator_access_run_as": {"alice": "Alice Smith"}},
                        "operator_access_run_as: 'alice' maps to \"Alice Smith\", which is not a Linux user name"),
        "duplicate-name": ({"operator_access_groups": [NEW, {"name": "half-made", "documents": ["shell"]}]},
                           "operator_access_groups: 'half-made' is listed 2 times; give each group a unique name"),
        "missing-principals": ({"operator_access_groups": [NEW, {"name": "x", "documents": ["shell"],
                                                                 "iam_groups": ["nope"], "iam_users": ["ghost"],
                                                                 "iam_roles": ["phantom"]}]},
                               "IAM group nope, IAM user ghost, IAM role phantom do not exist"),
        "missing-run-as-principal": ({"operator_access_groups": [NEW], "operator_access_run_as": {"nobody": "nobody"}},
                                     "IAM user or role nobody does not exist"),
        "tag-value-not-a-string": ({"operator_access_groups": [NEW, {"name": "x", "documents": ["shell"],
                                                                     "resource_tags": {"Tier": 1}}]},
                                   "operator_access_groups: 'x' has resource_tags.Tier = 1; a tag key must be a "
                                   "non-empty string and its value a non-empty string or list of them"),
    }

    def test_bad_input_one_clear_error_and_nothing_made(self, lab, tmp_path):
        before = snapshot(lab)
        cases = run_cases(lab, tmp_path, "bastionless.ssm.operator_access",
                          {name: extra for name, (extra, _message) in self.BAD_INPUT.items()})
        for name, (_extra, message) in self.BAD_INPUT.items():
            assert message in cases.only_failure(name), (name, cases.failures.get(name))
        assert snapshot(lab) == before

    def test_a_group_set_to_absent_loses_its_policy(self, lab):
        temporary = {"name": "temporary", "documents": ["ssh"], "iam_groups": ["operators"], "iam_users": ["bob"]}
        output, recap = play(lab, operator_access_groups=GROUPS + [temporary])
        assert recap["failed"] == 0, output
        assert PREFIX + "temporary" in attached(lab, "group", "operators")
        output, recap = play(lab, operator_access_groups=GROUPS + [{"name": "temporary", "state": "absent"}])
        assert recap["failed"] == 0 and recap["changed"] == 1, output
        assert set(our_policies(lab)) == {PREFIX + "dev-operators", PREFIX + "ops"}
        assert attached(lab, "group", "operators") == {PREFIX + "ops"}
        assert attached(lab, "user", "bob") == {PREFIX + "dev-operators"}


# --- the generated policies -----------------------------------------------------------------------------------

# A representative set of groups: every document kind, with and without tags, exact and wildcard values.
RENDERED = [
    {"name": "dev", "documents": ["shell"], "resource_tags": {"Env": "dev"}},
    {"name": "dev-tunnels", "documents": ["port_forwarding"], "resource_tags": {"Env": "dev"}},
    {"name": "everything", "documents": ["shell", "ssh", "port_forwarding", "port_forwarding_remote_host"]},
    {"name": "web-databases", "documents": ["ssh", "port_forwarding_remote_host"],
     "resource_tags": {"Team": ["web-*", "api"], "Env": "staging"}},
]
INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
HYBRID = f"arn:aws:ssm:{REGION}:{ACCOUNT}:managed-instance/mi-0123456789abcdef0"
SHELL = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/SSM-SessionManagerRunShell"
SSH = f"arn:aws:ssm:{REGION}::document/AWS-StartSSHSession"
PORT = f"arn:aws:ssm:{REGION}::document/AWS-StartPortForwardingSession"
REMOTE = f"arn:aws:ssm:{REGION}::document/AWS-StartPortForwardingSessionToRemoteHost"


@pytest.fixture(scope="module")
def rendered(lab, tmp_path_factory):
    """The policies the role builds for RENDERED, from a check-mode run of the preflight phase alone."""
    facts = tmp_path_factory.mktemp("rendered") / "facts.json"
    output, recap = play(lab, "--check", "--tags", "preflight", operator_access_groups=RENDERED,
                         facts_out=str(facts))
    assert recap["failed"] == 0, output
    policies = json.loads(facts.read_text())["policies"]
    assert set(policies) == {PREFIX + group["name"] for group in RENDERED}
    return {name[len(PREFIX):]: policy for name, policy in policies.items()}


def start_session(policy, target: str, target_tags: dict, document: str, user: str = "alice") -> str:
    """ssm:StartSession as IAM evaluates it for a request that names its session document: once on the target
    node (with the node's tags as ssm:resourceTag/KEY) and once on the document; both must be allowed."""
    who = {"aws:username": user, "aws:userid": "AIDA" + user.upper(), "ssm:SessionDocumentAccessCheck": "true"}
    node_tags = {f"ssm:resourceTag/{key}": value for key, value in target_tags.items()}
    decisions = [evaluate([policy], "ssm:StartSession", target, {**who, **node_tags}),
                 evaluate([policy], "ssm:StartSession", document, who)]
    if EXPLICIT_DENY in decisions:
        return EXPLICIT_DENY
    return ALLOW if decisions == [ALLOW, ALLOW] else IMPLICIT_DENY


class TestPolicies:
    def test_dev_may_open_a_shell_on_dev_nodes_only(self, rendered):
        dev = rendered["dev"]
        assert start_session(dev, INSTANCE, {"Env": "dev"}, SHELL) == ALLOW
        assert start_session(dev, HYBRID, {"Env": "dev"}, SHELL) == ALLOW
        assert start_session(dev, INSTANCE, {"Env": "prod"}, SHELL) == IMPLICIT_DENY
        assert start_session(dev, INSTANCE, {}, SHELL) == IMPLICIT_DENY
        other_account = INSTANCE.replace(ACCOUNT, "210987654321")
        assert start_session(dev, other_account, {"Env": "dev"}, SHELL) == IMPLICIT_DENY

    def test_port_forwarding_only_for_groups_that_have_it(self, rendered):
        assert start_session(rendered["dev"], INSTANCE, {"Env": "dev"}, PORT) == IMPLICIT_DENY
        assert start_session(rendered["dev-tunnels"], INSTANCE, {"Env": "dev"}, PORT) == ALLOW
        assert start_session(rendered["dev-tunnels"], INSTANCE, {"Env": "dev"}, SHELL) == IMPLICIT_DENY
        assert start_session(rendered["dev-tunnels"], INSTANCE, {"Env": "dev"}, REMOTE) == IMPLICIT_DENY
        assert start_session(rendered["dev"], INSTANCE, {"Env": "dev"}, SSH) == IMPLICIT_DENY

    def test_no_tags_means_every_node_with_every_listed_document(self, rendered):
        for document in (SHELL, SSH, PORT, REMOTE):
            assert start_session(rendered["everything"], INSTANCE, {"Env": "prod"}, document) == ALLOW
            assert start_session(rendered["everything"], HYBRID, {}, document) == ALLOW
        custom = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/My-Own-Shell"
        assert start_session(rendered["everything"], INSTANCE, {}, custom) == IMPLICIT_DENY

    def test_several_tags_all_match_and_wildcards(self, rendered):
        policy = rendered["web-databases"]
        assert start_session(policy, INSTANCE, {"Team": "web-1", "Env": "staging"}, REMOTE) == ALLOW
        assert start_session(policy, INSTANCE, {"Team": "api", "Env": "staging"}, SSH) == ALLOW
        assert start_session(policy, INSTANCE, {"Team": "web-1", "Env": "prod"}, REMOTE) == IMPLICIT_DENY
        assert start_session(policy, INSTANCE, {"Team": "db", "Env": "staging"}, REMOTE) == IMPLICIT_DENY
        assert start_session(policy, INSTANCE, {"Team": "api-2", "Env": "staging"}, REMOTE) == IMPLICIT_DENY

    def test_own_sessions_only_to_end_or_resume(self, rendered):
        """By the session-id tag Session Manager sets (the starter's aws:userid), not by the session id's name
        prefix: alice-admin's sessions (alice-admin-...) are not alice's."""
        alice, alice_admin = {"aws:username": "alice", "aws:userid": "AIDAALICE"}, \
            {"aws:username": "alice-admin", "aws:userid": "AIDAALICEADMIN"}
        for policy in rendered.values():
            for action in ("ssm:TerminateSession", "ssm:ResumeSession"):
                mine = (f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/alice-0123",
                        {"ssm:resourceTag/aws:ssmmessages:session-id": "AIDAALICE"})
                theirs = (f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/alice-admin-0123",
                          {"ssm:resourceTag/aws:ssmmessages:session-id": "AIDAALICEADMIN"})
                assert evaluate([policy], action, mine[0], {**alice, **mine[1]}) == ALLOW
                assert evaluate([policy], action, theirs[0], {**alice, **theirs[1]}) == IMPLICIT_DENY
                assert evaluate([policy], action, theirs[0], {**alice_admin, **theirs[1]}) == ALLOW

    def test_nothing_else_is_allowed(self, rendered):
        dev = rendered["dev"]
        assert evaluate([dev], "ssm:SendCommand", INSTANCE, {"ssm:resourceTag/Env": "dev"}) == IMPLICIT_DENY
        assert evaluate([dev], "ssm:UpdateDocument", SHELL, {}) == IMPLICIT_DENY
        assert evaluate([dev], "ec2:DescribeInstances", "*", {}) == ALLOW
        assert evaluate([dev], "ssm:DescribeInstanceInformation", "*", {}) == ALLOW


def _medium_or_worse(policy: dict) -> list:
    """parliament's findings of MEDIUM severity or worse, less the two it reports wrongly for these policies."""
    severities = ["MUTE", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
    kept = []
    for finding in analyze_policy_string(json.dumps(policy)).findings:
        finding = enhance_finding(finding)
        if severities.index(finding.severity) < severities.index("MEDIUM"):
            continue
        # parliament's IAM definitions (1.6.4) do not know the ssm:SessionDocumentAccessCheck key; AWS documents
        # it for ssm:StartSession ("Enforce a session document permission check", BoolIfExists true) and uses
        # it in its sample end user policies.
        if (finding.issue == "UNKNOWN_CONDITION_FOR_ACTION"
                and finding.detail == "Unknown condition ssm:SessionDocumentAccessCheck for action ssm:StartSession"):
            continue
        # Nor that ssmmessages:OpenDataChannel can be scoped to sessions: they list no resource type for it,
        # while AWS's current sample end user policies grant it on arn:aws:ssm:*:*:session/${aws:userid}-*.
        if (finding.issue == "RESOURCE_MISMATCH" and isinstance(finding.detail, list)
                and all(d.get("action") == "ssmmessages:OpenDataChannel" for d in finding.detail)):
            continue
        # Nor any condition key for ssmmessages:OpenDataChannel. The own-data-channels statement tests the session's
        # owner tag with StringEqualsIfExists: where AWS supplies no such key, the session token, which only the
        # owner's StartSession or ResumeSession hands out, decides (docs/operator-access.md).
        if (finding.issue == "UNKNOWN_CONDITION_FOR_ACTION" and finding.detail == (
                "Unknown condition ssm:resourceTag/aws:ssmmessages:session-id for action ssmmessages:OpenDataChannel")):
            continue
        kept.append(f"{finding.issue} ({finding.severity}): {finding.detail}")
    return kept


class TestParliament:
    def test_every_generated_policy_is_clean(self, rendered):
        found = {name: _medium_or_worse(policy) for name, policy in rendered.items()}
        assert found == {name: [] for name in rendered}

    def test_the_filter_still_reports_real_problems(self, rendered):
        broken = json.loads(json.dumps(rendered["dev"]))
        own_sessions = broken["Statement"][3]
        own_sessions["Resource"] = ["arn:aws:s3:::some-bucket/*"]  # TerminateSession needs a session ARN
        own_sessions["Condition"] = {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}
        broken["Statement"][0]["Condition"]["StringEquals"]["ec2:InstanceType"] = "t3.micro"
        found = _medium_or_worse(broken)
        assert any(f.startswith("RESOURCE_MISMATCH") for f in found), found
        assert any("ec2:InstanceType" in f for f in found), found
        # The exception is for StartSession only: the same key on another action is still reported.
        assert any("ssm:SessionDocumentAccessCheck for action ssm:TerminateSession" in f for f in found), found


# --- Run As in the lab ----------------------------------------------------------------------------------------

def _run_command(lab, node: str, script: str) -> dict:
    ssm = lab.client("ssm")
    command = ssm.send_command(InstanceIds=[node], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": [script]})["Command"]["CommandId"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            invocation = ssm.get_command_invocation(CommandId=command, InstanceId=node)
        except ssm.exceptions.InvocationDoesNotExist:
            invocation = {"Status": "Pending"}
        if invocation["Status"] in ("Success", "Failed", "TimedOut", "Cancelled"):
            return invocation
        time.sleep(0.3)
    raise AssertionError(f"{script!r} on {node} did not finish in 30 s: {invocation}")


def _whoami(lab, node: str, user: str) -> str:
    """Start a shell session with ``user``'s own access key and the lab's plugin; the OS user it runs as."""
    key = lab.client("iam").create_access_key(UserName=user)["AccessKey"]
    ssm = lab.client("ssm", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    response = ssm.start_session(Target=node, DocumentName="SSM-SessionManagerRunShell")
    assert response["SessionId"].startswith(f"{user}-")  # an IAM user's session ids start with their name
    plugin = [lab.environ()["AWS_SESSION_MANAGER_PLUGIN"],
              json.dumps({k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}), lab.region,
              "StartSession", "", json.dumps({"Target": node}), lab.endpoint]
    code, output = run_plugin(plugin, "echo user=$(whoami)=\nexit\n", lab.environ())
    assert code == 0, output
    users = re.findall(r"user=([a-z_][a-z0-9_-]*)=", output)
    assert len(users) == 1, output
    return users[0]


def test_a_session_runs_as_the_os_user_the_tag_names(lab):
    """With Run As on in the preferences, alice (tagged SSMSessionRunAs=alice by the role) gets a shell as the OS
    user alice; bob (no tag) as the default user."""
    node = lab.network["nodes"][0]
    assert tags(lab, "user", "alice")["SSMSessionRunAs"] == "alice"
    # The OS account must exist on the node: made there as the run_as_users role will (each lab node has its own
    # /etc/passwd in its overlay).
    made = _run_command(lab, node, "id -u alice >/dev/null 2>&1 || useradd -m alice")
    assert made["Status"] == "Success", made
    # The lab enforces their policies: dev-operators (alice through developers, bob directly) reach Env=dev nodes.
    lab.client("ec2").create_tags(Resources=[node], Tags=[{"Key": "Env", "Value": "dev"}])
    preferences = json.dumps({"schemaVersion": "1.0", "description": "Run As for the operator_access test",
                              "sessionType": "Standard_Stream",
                              "inputs": {"runAsEnabled": True, "runAsDefaultUser": "ssm-user"}})
    lab.client("ssm").create_document(Name="SSM-SessionManagerRunShell", DocumentType="Session",
                                      DocumentFormat="JSON", Content=preferences)
    assert _whoami(lab, node, "alice") == "alice"
    assert _whoami(lab, node, "bob") == "ssm-user"


def test_iam_quiet_runs_the_amazon_aws_module_with_its_defaults_and_prints_no_notice(lab, tmp_path):
    """The documented examples of bastionless.ssm.iam_quiet, through which the roles call amazon.aws's IAM role and
    user modules: they run, print no warning, and return no deprecated value; the module's module_defaults reach
    it, and check mode predicts a change without making it."""
    iam = lab.client("iam")
    iam.create_role(RoleName="bastionless-ssm-instance", AssumeRolePolicyDocument=TRUST_EC2)
    try:
        saved = tmp_path / "results.json"
        tasks = module_examples("iam_quiet") + [
            {"name": "Read the role again, to save it", "bastionless.ssm.iam_quiet": {
                "module": "amazon.aws.iam_role_info", "params": {"name": "bastionless-ssm-instance"}},
             "register": "read"},
            {"name": "Tag bob, in check mode", "bastionless.ssm.iam_quiet": {
                "module": "amazon.aws.iam_user", "params": {"name": "bob", "tags": {"checked": "yes"},
                                                            "purge_tags": False, "state": "present"}},
             "check_mode": True, "register": "tagged"},
            {"name": "A profile from module_defaults", "bastionless.ssm.iam_quiet": {
                "module": "amazon.aws.iam_role_info", "params": {"name": "bastionless-ssm-instance"}},
             "module_defaults": {"group/amazon.aws.aws": {"profile": "no-such-profile"}},
             "ignore_errors": True, "register": "defaulted"},
            save_task("{'read': read, 'tagged': tagged, 'defaulted': defaulted}", saved)]
        output, recap = controller_play(lab, tmp_path, tasks)
        assert recap["localhost"]["failed"] == 0 and "...ignoring" in output, output
        assert warnings_in(output) == [] and "DEPRECATION" not in output, output
        results = json.loads(saved.read_text())
        role = results["read"]["iam_roles"][0]
        assert role["assume_role_policy_document"] == json.loads(TRUST_EC2)
        assert "assume_role_policy_document_raw" not in role and "deprecations" not in results["read"]
        assert results["tagged"]["changed"] is True and "iam_user" not in results["tagged"]
        assert tags(lab, "user", "bob") == {}
        # the profile reached the module, beside the lab's keys in the environment
        assert results["defaulted"]["msg"] == "Passing both a profile and access tokens is not supported."
    finally:
        iam.delete_role(RoleName="bastionless-ssm-instance")
