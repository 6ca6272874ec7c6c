"""The filter and lookup plugins' EXAMPLES, run as written by ansible-playbook on the installed collection (no lab:
they compute on the controller), and what each example prints. Their logic is unit-tested in tests/unit/plugins."""

import glob
import json
import os
import subprocess

import yaml
from ansible_cli import ROOT

FILTER_DOCS = sorted(glob.glob(os.path.join(ROOT, "plugins", "filter", "*.yml")))


def test_every_filter_has_its_documentation_beside_it():
    names = {os.path.basename(path)[:-4] for path in FILTER_DOCS}
    assert names == {"operator_access_problems", "operator_access_plan", "operator_access_missing",
                     "operator_access_principals", "run_as_users_problems", "run_as_users_plan",
                     "run_as_users_node_problems", "run_as_users_node_plan", "run_as_users_verify_problems",
                     "vpc_endpoints_cost_estimate", "vpc_endpoints_cost_lines", "preflight_offline_lines",
                     "vpc_endpoints_nat_paths", "kms_key_form", "transfer_bucket_problems",
                     "transfer_bucket_controller_policy", "transfer_bucket_changes", "transfer_bucket_verify_problems",
                     "session_logging_problems", "session_logging_key_policy",
                     "instance_role_problems", "instance_role_logging_statements", "instance_role_target_problems",
                     "instance_role_verify_problems", "instance_role_would_attach", "vpc_endpoints_problems", "vpc_endpoints_subnet_problems",
                     "vpc_endpoints_nat_lines", "vpc_endpoints_nat_message", "vpc_endpoints_dns_off",
                     "vpc_endpoints_dns_message", "vpc_endpoints_security_group_rules", "vpc_endpoints_verify_problems",
                     "audit_report_html", "audit_report_csv",
                     "vpc_endpoints_interface_policy", "vpc_endpoints_gateway_policy", "vpc_endpoints_policy_problems",
                     "aws_retry_config"}
    for path in FILTER_DOCS:
        docs = yaml.safe_load(open(path, encoding="utf-8"))
        assert docs["DOCUMENTATION"]["name"] == os.path.basename(path)[:-4]
        assert docs["DOCUMENTATION"]["version_added"] == "0.1.0" and docs["RETURN"]["_value"]["description"]


def test_the_examples_run_and_print_what_they_say(tmp_path):
    tasks = []
    for path in FILTER_DOCS:
        tasks += yaml.safe_load(yaml.safe_load(open(path, encoding="utf-8"))["EXAMPLES"])
    playbook = tmp_path / "examples.yml"
    playbook.write_text(json.dumps([{"name": "Filter examples", "hosts": "localhost", "connection": "local",
                                     "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1")
    done = subprocess.run(["ansible-playbook", "-i", "localhost,", str(playbook)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout[-4000:] + done.stderr
    printed = {task["task"]["name"]: task["hosts"]["localhost"]["msg"]
               for task in json.loads(done.stdout)["plays"][0]["tasks"]}

    assert printed["The retry setting of a play when nothing is set, and an adaptive one"] == [
        {"retries": {"mode": "standard", "total_max_attempts": 10}}, {"retries": {"mode": "adaptive", "total_max_attempts": 20}}]
    assert printed["Every AWS module of a play retries as set in the inventory (bastionless_aws_retry_mode and "
                   "_max_attempts)"] == {"retries": {"mode": "standard", "total_max_attempts": 15}}
    missing, problems = printed["Name what is missing"], printed["Every problem of the inputs, one sentence each"]
    assert missing == ["IAM group web-ops", "IAM user or role carol"]
    assert [p.split(";")[0] for p in problems] == [
        "operator_access_groups: 'web' has resource_tags.Env = 1",
        "operator_access_run_as: 'alice' maps to \"Alice\", which is not a Linux user name"]
    assert problems[1].endswith("(for example 'alice').")
    assert printed["What alice gets"] == {"roles": [], "users": [{
        "name": "alice", "managed_policies": ["arn:aws:iam::123456789012:policy/bastionless-ssm-web"],
        "tags": {"SSMSessionRunAs": "alice"}}]}
    policy = printed["The policy of one group, as the role would create it"]
    [on_nodes] = [s for s in policy["Statement"] if s["Sid"] == "StartSessionOnNodes"]
    assert on_nodes["Condition"]["StringEquals"] == {"ssm:resourceTag/Team": ["web"]}
    assert on_nodes["Condition"]["StringLike"] == {"ssm:resourceTag/Env": ["dev", "stag*"]}

    run_as = printed["What is wrong with the Run As inputs"]
    assert [p.split(";")[0] for p in run_as] == [
        "run_as_users_map: 'alice' maps to \"Alice\", which is not a Linux user name",
        "run_as_users_sudo: 'bob' is not one of the users (run_as_users_map's values and run_as_users_extra)"]
    two = printed["The accounts for two operators, one of them with sudo"]
    assert [(u["name"], u["iam"]) for u in two["users"]] == [("alice", ["alice", "alice-admin"]), ("bob", ["bob"])]
    assert two["sudo"] == {"bob": ["bob ALL=(ALL) NOPASSWD: ALL"]}
    assert printed["A group the node does not have"][0].startswith(
        "run_as_users_groups / run_as_users_options: 'alice' should join ops, which does not exist on web-1;")
    assert printed["Carol was made by the role and is no longer wanted"] == {
        "previous": ["carol"], "removable": ["carol"], "state": []}
    assert printed["A rule file for nobody the plan names"] == ["the role's sudo rule files are for bob, not for nobody;"]

    assert printed["Why the nodes are not Online"] == [
        "i-0123456789abcdef0 (ConnectionLost): AGENT_CONNECTION_LOST - The agent last reported 2 h ago. Fix: Restart "
        "the agent."]
    interface = printed["The interface endpoints' policy for one account"]
    assert interface["Statement"][0]["Condition"] == {"StringEquals": {"aws:PrincipalAccount": "123456789012"}}
    gateway = printed["The S3 gateway endpoint's policy for the transcripts and transfer buckets"]
    assert [s["Sid"] for s in gateway["Statement"]] == ["FleetBuckets", "AgentBuckets"]
    assert "arn:aws:s3:::acme-sessions/*" in gateway["Statement"][0]["Resource"]
    assert gateway["Statement"][1]["Resource"][-1] == "arn:aws:s3:::patch-baseline-snapshot-eu-west-1/*"
    assert printed["An ARN where a bucket name belongs"][0].startswith(
        "vpc_endpoints_s3_extra_buckets: 'arn:aws:s3:::logs' is not a bucket name;")
    paths = printed["One subnet routed to an available NAT gateway, one on the main table without a route out"]
    assert {s: (p["route_table_id"], p["nat_gateway_id"], p["ok"]) for s, p in paths.items()} == {
        "subnet-a": ("rtb-private", "nat-1", True), "subnet-b": ("rtb-main", "", False)}
    estimate = printed["Two zones, no NAT gateway yet, 100 GB a month"]
    assert (estimate["modes"]["nat"]["monthly"], estimate["modes"]["endpoints"]["monthly"]) == (70.2, 44.8)
    assert printed["Print an estimate"][1:3] == [
        "  nat       $   32.85  1 NAT gateway(s) x $0.045/h x 730 h + 0 GB x $0.045",
        "  endpoints $   21.90  3 interface endpoints x 1 AZ(s) x $0.01/h x 730 h + 0 GB x $0.01; s3 gateway endpoint "
        "free"]

    assert printed["The form of each way to name a key"] == ["key_arn", "alias_arn", "key_id", "alias", ""]
    transfer = printed["What is wrong with the transfer bucket's inputs"]
    assert [p.split(";")[0] for p in transfer] == [
        "transfer_bucket_name: Team_Transfer is not a bucket name S3 accepts",
        "transfer_bucket_expiration_days: 0 is not a whole number of days of at least 1"]
    assert transfer[0].endswith("(for example team-transfer).")
    controller = printed["The controller's policy for a bucket encrypted with a KMS key"]["Statement"]
    assert [s["Sid"] for s in controller] == ["FindTheTransferBucket", "MoveModuleFilesThroughTheBucket",
                                              "EncryptAndDecryptThroughS3"]
    assert controller[2]["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    assert printed["A bucket with public access open and no policy"] == ["block public access",
                                                                         "the TLS-only bucket policy"]
    assert printed["A bucket that is gone"] == ["it does not exist"]

    assert [p.split(" (")[0].split(";")[0] for p in printed["What is wrong with the session logging inputs"]] == [
        "session_logging_bucket: Audit_Logs is not a bucket name AWS accepts",
        "session_logging_idle_timeout: 90 is out of range"]
    key_policy = printed["The session key's policy for one instance role"]["Statement"]
    assert [s["Sid"] for s in key_policy] == ["AccountAdministers", "CloudWatchLogsEncryptsTheSessionLogGroup",
                                              "InstancesEncryptWhatTheyUpload", "InstancesDecryptSessionStreams"]
    assert key_policy[2]["Condition"]["StringLike"] == {"kms:EncryptionContext:aws:s3:arn": [
        "arn:aws:s3:::acme-sessions", "arn:aws:s3:::acme-sessions/sessions/*"]}
    assert key_policy[1]["Condition"]["ArnEquals"] == {
        "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:123456789012:log-group:/bastionless/ssm/sessions"}

    assert printed["What is wrong with the instance role's inputs"] == [
        "instance_role_path: ssm must start and end with / (for example /ssm/).",
        "instance_role_instance_ids: web-1 are not EC2 instance ids (i-...)."]
    assert [(s["Sid"], s["Resource"]) for s in printed["Transcripts to a bucket prefix, nothing else"]] == [
        ("SessionTranscriptsToS3", ["arn:aws:s3:::audit-logs/sessions/*"]),
        ("SessionBucketEncryption", ["arn:aws:s3:::audit-logs"])]
    [imdsv1] = printed["Default Host Management and an instance with IMDSv1 still allowed"]
    assert imdsv1.startswith("Default Host Management only manages instances that require IMDSv2, and "
                             "i-0123456789abcdef0 does not (HttpTokens is optional).")
    assert printed["One instance without a profile, one with someone else's"] == ["i-0123456789abcdef0"]
    assert printed["A role that lost its policy"] == [
        "The role ssm-instance is not as it should be: it lacks arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore."]

    assert printed["What is wrong with the VPC endpoints' inputs"] == [
        "vpc_endpoints_vpc_id: 'my-vpc' is not a VPC id; set it to the id of the instances' VPC (vpc-...).",
        "vpc_endpoints_subnet_ids: lists a subnet twice; list each subnet once."]
    [zone] = printed["Two subnets in one zone"]
    assert zone.startswith("vpc_endpoints_subnet_ids: subnet-a and subnet-b are all in us-east-1a;")
    assert printed["Print the NAT paths"] == ["subnet-a (us-east-1a): routes 0.0.0.0/0 to nat-1 (available).",
                                              "subnet-b (us-east-1b): no 0.0.0.0/0 route to a NAT gateway in rtb-main."]
    assert printed["nat mode and a NAT gateway that is not available yet"].startswith(
        "vpc_endpoints_mode is nat, but subnet-a routes 0.0.0.0/0 to nat-1, which is pending. Add the route")
    assert printed["A VPC without DNS hostnames"] == ["enableDnsHostnames"]
    assert printed["Why DNS hostnames must be on"].startswith("vpc-1 has enableDnsHostnames off; the private DNS")
    assert printed["Why DNS hostnames must be on"].endswith("(aws ec2 modify-vpc-attribute --vpc-id vpc-1 "
                                                            "--enable-dns-hostnames).")
    assert printed["HTTPS from the VPC's CIDR block"] == [{
        "proto": "tcp", "ports": [443], "cidr_ip": ["10.0.0.0/16"],
        "rule_desc": "HTTPS from the VPC to the Session Manager endpoints"}]
    assert printed["An ssm endpoint with private DNS off and no ssmmessages endpoint"] == [
        "The ssm endpoint of vpc-1 is not as it should be: private DNS is off.",
        "The ssmmessages endpoint of vpc-1 is not as it should be: missing or not available."]
    assert printed["A report of one session, as a page"] == "<!DOCTYPE html>"
    assert printed["The sessions of an audit as CSV"] == ["start_time", "2025-01-31T08:00:00Z"]


def test_the_region_lookup_examples(tmp_path):
    """The examples of bastionless.ssm.aws_region: a role's region, and a profile's from the configuration file."""
    with open(os.path.join(ROOT, "plugins", "lookup", "aws_region.py"), encoding="utf-8") as handle:
        source = handle.read()
    examples = source.split('EXAMPLES = r"""')[1].split('"""')[0]
    playbook = tmp_path / "examples.yml"
    playbook.write_text(json.dumps([{"name": "Lookup examples", "hosts": "localhost", "connection": "local",
                                     "gather_facts": False, "vars": {"bastionless_region": "eu-west-3"},
                                     "tasks": yaml.safe_load(examples)}]))
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-2\n\n[profile audit]\nregion = ap-southeast-2\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "EC2_REGION",
                                                            "AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    env.update(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", AWS_CONFIG_FILE=str(config))
    done = subprocess.run(["ansible-playbook", "-i", "localhost,", str(playbook)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout[-4000:] + done.stderr
    printed = [task["hosts"]["localhost"]["msg"] for task in json.loads(done.stdout)["plays"][0]["tasks"]]
    assert printed == ["eu-west-3", "ap-southeast-2"]
