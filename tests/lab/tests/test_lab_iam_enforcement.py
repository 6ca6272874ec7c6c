"""IAM on the calls the lab serves (``ssm_lab.aws.authz``): an operator with the policy the operator_access role
compiles (its filter, called here without a play) opens a shell on a node tagged for her, lists nodes and sessions,
and is refused, with AWS's error codes and messages, everywhere else: untagged nodes, documents she was not given,
other principals' sessions (also one whose name starts with hers, and a role session that bears her name) and their
data channels, the transcripts in S3 and CloudWatch Logs, and Run Command. Every SSM action the lab serves itself is
judged (a principal with no policy is refused each, on AWS's resource). A node writes transcripts and Run Command
output with its role's session: its policies (and the bucket's KMS key) decide. The lab's default credentials stay
all-powerful.

Over real HTTP with boto3 against the shared lab; each principal, tag and document is this module's own."""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError
from labhelpers import collection_filter, wait_until

ACCOUNT = "123456789012"
REGION = "us-east-1"


class Principal:
    """An IAM user or role session of the lab: its ARN as AWS names a caller, and clients with its credentials."""

    def __init__(self, lab, arn: str, key_id: str, secret: str, token: str | None = None) -> None:
        self.arn = arn
        self._lab, self._key = lab, {"aws_access_key_id": key_id, "aws_secret_access_key": secret,
                                     "aws_session_token": token}
        self._clients: dict = {}

    def client(self, service: str):
        """One client per service (a client costs its service model's load)."""
        import boto3  # pylint: disable=import-outside-toplevel

        if service not in self._clients:
            self._clients[service] = boto3.client(service, endpoint_url=self._lab.endpoint, region_name=REGION,
                                                  **self._key)
        return self._clients[service]


@pytest.fixture(scope="module")
def world(main_lab, tmp_path_factory):
    lab = main_lab
    token = secrets.token_hex(3)
    tag_key = f"operator-{token}"
    mine, untagged = lab.ec2_ids[3], lab.ec2_ids[2]
    lab.ec2.create_tags(Resources=[mine], Tags=[{"Key": tag_key, "Value": "alice"}])
    operator_access = collection_filter(tmp_path_factory.mktemp("collection"), "operator_access")
    alice, admin, role = f"alice{token}", f"alice{token}-admin", f"oncall-{token}"
    plan = operator_access.plan([{"name": f"lab-{token}", "documents": ["shell"], "resource_tags": {tag_key: "alice"},
                                  "iam_users": [alice, admin], "iam_roles": [role]}], "aws", ACCOUNT, REGION)
    [policy] = plan["policies"]
    iam = lab.client("iam")
    arn = iam.create_policy(PolicyName=policy["name"], PolicyDocument=json.dumps(policy["document"]))["Policy"]["Arn"]
    assert arn == policy["arn"]
    principals = {}
    for user in (alice, admin):
        created = iam.create_user(UserName=user)["User"]
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        principals[user] = Principal(lab, created["Arn"], key["AccessKeyId"], key["SecretAccessKey"])
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}]}
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    # The role session is named like the IAM user alice: its session ids start with the same name.
    assumed = lab.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=alice)
    credentials = assumed["Credentials"]
    principals["role"] = Principal(lab, assumed["AssumedRoleUser"]["Arn"], credentials["AccessKeyId"],
                                   credentials["SecretAccessKey"], credentials["SessionToken"])
    nobody = iam.create_user(UserName=f"nobody{token}")["User"]
    key = iam.create_access_key(UserName=f"nobody{token}")["AccessKey"]
    principals["nobody"] = Principal(lab, nobody["Arn"], key["AccessKeyId"], key["SecretAccessKey"])
    return {"lab": lab, "mine": mine, "untagged": untagged, "alice": principals[alice],
            "admin": principals[admin], "role": principals["role"], "nobody": principals["nobody"],
            "alice_name": alice, "token": token, "operator_access": operator_access}


def _denied(call, code: str = "AccessDeniedException") -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == code, caught.value.response
    return caught.value.response["Error"]["Message"]


def _message(who, action: str, resource: str) -> str:
    """AWS's denial by identity-based policies of ``who`` (a Principal, or an ARN)."""
    return (f"User: {getattr(who, 'arn', who)} is not authorized to perform: {action} on resource: {resource} "
            f"because no identity-based policy allows the {action} action")


def _instance(node: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{node}"


def _session(session_id: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/{session_id}"


def test_alice_opens_a_shell_on_a_node_tagged_for_her(world, shell):
    lab, alice = world["lab"], world["alice"]
    response, process = shell(lab, world["mine"], alice.client("ssm"))
    assert response["SessionId"].startswith(world["alice_name"] + "-")
    process.write("echo iam=$((6 * 7))=\nexit\n")
    process.wait_for(r"iam=42=")
    assert process.wait_exit() == 0
    [session] = lab.ssm.describe_sessions(State="History", Filters=[
        {"key": "SessionId", "value": response["SessionId"]}])["Sessions"]
    assert session["Owner"] == alice.arn


def test_alice_is_denied_an_untagged_node(world):
    alice, untagged = world["alice"], world["untagged"]
    message = _denied(lambda: alice.client("ssm").start_session(Target=untagged))
    assert message == _message(alice, "ssm:StartSession", _instance(untagged))


def test_alice_is_denied_a_document_she_was_not_given(world):
    alice = world["alice"]
    message = _denied(lambda: alice.client("ssm").start_session(
        Target=world["mine"], DocumentName="AWS-StartPortForwardingSession", Parameters={"portNumber": ["80"]}))
    assert message == _message(alice, "ssm:StartSession",
                               f"arn:aws:ssm:{REGION}::document/AWS-StartPortForwardingSession")


def test_own_sessions_only_for_users_and_role_sessions(world):
    """alice, alice-admin (whose session ids start with alice's name) and a role session named alice each start a
    session on the same node; each may resume and end their own and none of the others'."""
    lab = world["lab"]
    who = {name: world[name] for name in ("alice", "admin", "role")}
    sessions = {name: principal.client("ssm").start_session(Target=world["mine"])["SessionId"]
                for name, principal in who.items()}
    try:
        assert sessions["admin"].startswith(world["alice_name"] + "-")
        assert sessions["role"].startswith(world["alice_name"] + "-")  # a role session's id: its session name
        for name, principal in who.items():
            ssm = principal.client("ssm")
            for other, session_id in sessions.items():
                if other == name:
                    continue
                for action, call in (("ssm:ResumeSession", ssm.resume_session),
                                     ("ssm:TerminateSession", ssm.terminate_session)):
                    message = _denied(lambda call=call, session_id=session_id: call(SessionId=session_id))
                    assert message == _message(principal, action, _session(session_id)), (name, other)
        for name, principal in who.items():
            ssm = principal.client("ssm")
            assert ssm.resume_session(SessionId=sessions[name])["SessionId"] == sessions[name]
            assert ssm.terminate_session(SessionId=sessions[name])["SessionId"] == sessions[name]
    finally:
        for session_id in sessions.values():
            lab.ssm.terminate_session(SessionId=session_id)  # the lab's default credentials may end any


def _open_data_channel(response: dict):
    """The first message on a session's StreamUrl after its token: the agent's handshake request when the channel
    opened, channel_closed (with AWS's reason) when it was refused."""
    from ssm_lab.codec import dc  # pylint: disable=import-outside-toplevel
    from websockets.sync.client import connect  # pylint: disable=import-outside-toplevel

    with connect(response["StreamUrl"], open_timeout=10, max_size=None, compression=None) as ws:
        ws.send(dc.token_message(response["TokenValue"], "iam-test"))
        return dc.decode(ws.recv(10)), dc


@pytest.mark.parametrize("holder", ["admin", "role"])
def test_a_token_for_someone_elses_session_does_not_open_its_data_channel(world, holder):
    """A broader grant of ResumeSession (a helpdesk's, say) hands out the token of alice's session, but the operator
    policy's OpenOwnDataChannels lets nobody but alice open its data channel: for an IAM user and a role session."""
    lab, iam, name = world["lab"], world["lab"].client("iam"), world["alice_name"]
    principal = world[holder]
    grant = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ssm:ResumeSession", "Resource": "arn:aws:ssm:*:*:session/*"}]})
    role_name = f"oncall-{world['token']}"
    if holder == "admin":
        iam.put_user_policy(UserName=f"{name}-admin", PolicyName="resume-any", PolicyDocument=grant)
    else:
        iam.put_role_policy(RoleName=role_name, PolicyName="resume-any", PolicyDocument=grant)
    session_id = world["alice"].client("ssm").start_session(Target=world["mine"])["SessionId"]
    try:
        resumed = principal.client("ssm").resume_session(SessionId=session_id)
        first, dc = _open_data_channel(resumed)
        assert first.message_type == dc.CHANNEL_CLOSED, first
        assert first.json()["Output"] == "AccessDeniedException: " + _message(
            principal, "ssmmessages:OpenDataChannel", _session(session_id))
        own, dc = _open_data_channel(world["alice"].client("ssm").resume_session(SessionId=session_id))
        assert (own.message_type, own.payload_type) == (dc.OUTPUT, dc.HANDSHAKE_REQUEST), own
    finally:
        lab.ssm.terminate_session(SessionId=session_id)
        if holder == "admin":
            iam.delete_user_policy(UserName=f"{name}-admin", PolicyName="resume-any")
        else:
            iam.delete_role_policy(RoleName=role_name, PolicyName="resume-any")


def test_the_default_credentials_may_end_anyones_session(world):
    lab = world["lab"]
    session_id = world["alice"].client("ssm").start_session(Target=world["mine"])["SessionId"]
    assert lab.ssm.terminate_session(SessionId=session_id)["SessionId"] == session_id


def test_alice_may_not_read_the_transcripts(world):
    lab, alice, token = world["lab"], world["alice"], world["token"]
    bucket, key, group = f"transcripts-{token}", "sessions/someone-0123456789abcdef0.log", f"/transcripts/{token}"
    s3, logs = lab.client("s3"), lab.client("logs")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=b"secret transcript")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="someone-0123456789abcdef0")
    logs.put_log_events(logGroupName=group, logStreamName="someone-0123456789abcdef0",
                        logEvents=[{"timestamp": 1_700_000_000_000, "message": "secret transcript"}])
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"secret transcript"  # the lab's own keys

    theirs = alice.client("s3")
    message = _denied(lambda: theirs.get_object(Bucket=bucket, Key=key), "AccessDenied")
    assert message == _message(alice, "s3:GetObject", f'"arn:aws:s3:::{bucket}/{key}"')
    assert _denied(lambda: theirs.head_object(Bucket=bucket, Key=key), "403")
    url = theirs.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 - the lab's own endpoint
    assert caught.value.code == 403 and b"<Code>AccessDenied</Code>" in caught.value.read()

    stream_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:someone-0123456789abcdef0"
    message = _denied(lambda: alice.client("logs").get_log_events(logGroupName=group,
                                                                   logStreamName="someone-0123456789abcdef0"))
    assert message == _message(alice, "logs:GetLogEvents", stream_arn)
    message = _denied(lambda: alice.client("logs").filter_log_events(logGroupName=group))
    assert message == _message(alice, "logs:FilterLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:*")


def test_alice_may_not_use_run_command(world):
    lab, alice, mine = world["lab"], world["alice"], world["mine"]
    ssm = alice.client("ssm")
    message = _denied(lambda: ssm.send_command(InstanceIds=[mine], DocumentName="AWS-RunShellScript",
                                               Parameters={"commands": ["id"]}))
    assert message == _message(alice, "ssm:SendCommand", _instance(mine))
    command_id = lab.send([mine], ["true"])  # the lab's own keys may
    message = _denied(lambda: ssm.get_command_invocation(CommandId=command_id, InstanceId=mine))
    assert message == _message(alice, "ssm:GetCommandInvocation", "*")
    message = _denied(lambda: ssm.list_command_invocations(CommandId=command_id))
    assert message == _message(alice, "ssm:ListCommandInvocations", "*")


def test_policies_outside_the_operators_are_judged_too(world):
    """A Deny wins over the operator policy, and a grant of Run Command on the tagged node only is honoured."""
    lab, alice = world["lab"], world["alice"]
    iam, name = lab.client("iam"), world["alice_name"]
    extra = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": [
            f"arn:aws:ec2:*:*:instance/{world['mine']}", "arn:aws:ssm:*::document/AWS-RunShellScript"]},
        {"Effect": "Deny", "Action": "ssm:StartSession", "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="extra", PolicyDocument=json.dumps(extra))
    try:
        ssm = alice.client("ssm")
        assert ssm.send_command(InstanceIds=[world["mine"]], DocumentName="AWS-RunShellScript",
                                Parameters={"commands": ["true"]})["Command"]["CommandId"]
        message = _denied(lambda: ssm.send_command(InstanceIds=[world["untagged"]], DocumentName="AWS-RunShellScript",
                                                   Parameters={"commands": ["true"]}))
        assert message == _message(alice, "ssm:SendCommand", _instance(world["untagged"]))
        message = _denied(lambda: ssm.start_session(Target=world["mine"]))
        assert message == (f"User: {alice.arn} is not authorized to perform: ssm:StartSession on resource: "
                           f"{_instance(world['mine'])} with an explicit deny in an identity-based policy")
    finally:
        iam.delete_user_policy(UserName=name, PolicyName="extra")



UUID = "00000000-0000-4000-8000-000000000000"
SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"


def test_every_ssm_action_the_lab_serves_is_judged(world):
    """A principal with no policy is refused each SSM action the lab serves itself (authz.SERVED, all of them), on
    the resource AWS's service authorization reference names: the list actions on "*", the others on the node, the
    document, the session, the service setting or the association; and tag:GetResources."""
    from ssm_lab.aws import authz  # pylint: disable=import-outside-toplevel

    lab, nobody, mine = world["lab"], world["nobody"], world["mine"]
    hybrid = lab.hybrid_ids[0]
    ssm = nobody.client("ssm")
    managed = f"arn:aws:ssm:{REGION}:{ACCOUNT}:managed-instance/{hybrid}"
    setting = f"arn:aws:ssm:{REGION}:{ACCOUNT}:servicesetting{SETTING}"
    association = f"arn:aws:ssm:{REGION}:{ACCOUNT}:association/{UUID}"
    shell_script = f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"
    run = {"DocumentName": "AWS-RunShellScript", "Parameters": {"commands": ["true"]}}
    cases = {
        "StartSession": (lambda: ssm.start_session(Target=mine), _instance(mine)),
        "ResumeSession": (lambda: ssm.resume_session(SessionId=f"nobody-{UUID}"), _session(f"nobody-{UUID}")),
        "TerminateSession": (lambda: ssm.terminate_session(SessionId=f"nobody-{UUID}"), _session(f"nobody-{UUID}")),
        "SendCommand": (lambda: ssm.send_command(InstanceIds=[mine], **run), _instance(mine)),
        "GetConnectionStatus": (lambda: ssm.get_connection_status(Target=mine), _instance(mine)),
        "ListDocumentVersions": (lambda: ssm.list_document_versions(Name="AWS-RunShellScript"), shell_script),
        "CreateAssociation": (lambda: ssm.create_association(
            Name="AWS-RunShellScript", Targets=[{"Key": "InstanceIds", "Values": [mine]}]), shell_script),
        "DescribeSessions": (lambda: ssm.describe_sessions(State="Active"), "*"),
        "DescribeInstanceInformation": (ssm.describe_instance_information, "*"),
        "GetInventory": (ssm.get_inventory, "*"),
        "ListAssociations": (ssm.list_associations, "*"),
        "GetCommandInvocation": (lambda: ssm.get_command_invocation(CommandId=UUID, InstanceId=mine), "*"),
        "ListCommandInvocations": (ssm.list_command_invocations, "*"),
        "ListCommands": (ssm.list_commands, "*"),
        "CancelCommand": (lambda: ssm.cancel_command(CommandId=UUID), "*"),
        "GetServiceSetting": (lambda: ssm.get_service_setting(SettingId=SETTING), setting),
        "UpdateServiceSetting": (lambda: ssm.update_service_setting(SettingId=SETTING, SettingValue="x"), setting),
        "ResetServiceSetting": (lambda: ssm.reset_service_setting(SettingId=SETTING), setting),
        "DescribeAssociation": (lambda: ssm.describe_association(AssociationId=UUID), association),
        "UpdateAssociation": (lambda: ssm.update_association(AssociationId=UUID), association),
        "DeleteAssociation": (lambda: ssm.delete_association(AssociationId=UUID), association),
        "ListAssociationVersions": (lambda: ssm.list_association_versions(AssociationId=UUID), association),
        "DescribeAssociationExecutions": (lambda: ssm.describe_association_executions(AssociationId=UUID),
                                          association),
        "DescribeAssociationExecutionTargets": (lambda: ssm.describe_association_execution_targets(
            AssociationId=UUID, ExecutionId=UUID), association),
        "StartAssociationsOnce": (lambda: ssm.start_associations_once(AssociationIds=[UUID]), association),
        "AddTagsToResource": (lambda: ssm.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=hybrid,
                                                               Tags=[{"Key": "k", "Value": "v"}]), managed),
        "RemoveTagsFromResource": (lambda: ssm.remove_tags_from_resource(ResourceType="ManagedInstance",
                                                                         ResourceId=hybrid, TagKeys=["k"]), managed),
        "ListTagsForResource": (lambda: ssm.list_tags_for_resource(ResourceType="ManagedInstance",
                                                                   ResourceId=hybrid), managed),
    }
    assert set(cases) == set(authz.SERVED)
    refused = {action: _denied(call) for action, (call, _resource) in cases.items()}
    assert refused == {action: _message(nobody, f"ssm:{action}", resource)
                       for action, (_call, resource) in cases.items()}
    tagging = nobody.client("resourcegroupstaggingapi")
    message = _denied(lambda: tagging.get_resources(ResourceTypeFilters=["ssm:managed-instance"]))
    assert message == _message(nobody, "tag:GetResources", "*")
    instance_connect = nobody.client("ec2-instance-connect")
    message = _denied(lambda: instance_connect.send_ssh_public_key(
        InstanceId=mine, InstanceOSUser="ec2-user", SSHPublicKey="ssh-ed25519 " + "A" * 68 + " nobody"))
    assert message == _message(nobody, "ec2-instance-connect:SendSSHPublicKey", _instance(mine))
    assert lab.ssm.get_connection_status(Target=mine)["Status"] == "connected"  # the lab's own keys may


def test_an_operator_lists_nodes_and_sessions(world):
    """What ssm_session_info and the managed_nodes inventory read, as the operator policy allows it."""
    alice, mine = world["alice"], world["mine"]
    ssm = alice.client("ssm")
    assert mine in {n["InstanceId"] for n in ssm.describe_instance_information()["InstanceInformationList"]}
    assert isinstance(ssm.describe_sessions(State="History")["Sessions"], list)
    assert ssm.get_connection_status(Target=world["untagged"])["Status"] == "connected"
    tagged = alice.client("resourcegroupstaggingapi").get_resources(ResourceTypeFilters=["ssm:managed-instance"])
    assert {m["ResourceARN"].rsplit("/", 1)[-1] for m in tagged["ResourceTagMappingList"]} >= set(world["lab"].hybrid_ids)
    message = _denied(ssm.list_commands)
    assert message == _message(alice, "ssm:ListCommands", "*")


def _node_role(lab, node: str, name: str):
    """Give ``node`` an instance profile of its own whose role has only AmazonSSMManagedInstanceCore; returns a
    function that gives it the lab's profile back."""
    iam, ec2 = lab.client("iam"), lab.ec2
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

    def association() -> str:
        found = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [node]}])
        return found["IamInstanceProfileAssociations"][0]["AssociationId"]

    ec2.replace_iam_instance_profile_association(IamInstanceProfile={"Name": name}, AssociationId=association())
    return lambda: ec2.replace_iam_instance_profile_association(IamInstanceProfile={"Name": "ssm-lab-node"},
                                                                AssociationId=association())


def test_a_node_writes_output_and_transcripts_with_its_role(world, plugin):
    """A node whose role has AmazonSSMManagedInstanceCore only may not write its Run Command output (S3, CloudWatch
    Logs) nor its transcripts: the invocation succeeds and its standard error says why each upload failed, in AWS's
    words. With s3:PutObject and the log writes granted, the SSE-KMS bucket's key still refuses (its policy lets
    IAM decide, and the role has no kms:GenerateDataKey); once the key policy names the role, everything lands."""
    lab, token = world["lab"], world["token"]
    node = lab.ec2_ids[5]
    role, bucket, group = f"writer-{token}", f"output-{token}", f"/output/{token}"
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{node}"
    s3, logs, kms, iam, ssm = (lab.client(s) for s in ("s3", "logs", "kms", "iam", "ssm"))
    key = kms.create_key(Description="output")["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
         "BucketKeyEnabled": True}]})
    logs.create_log_group(logGroupName=group)
    document = f"Transcripts-{token}"
    ssm.create_document(Name=document, DocumentType="Session", DocumentFormat="JSON", Content=json.dumps({
        "schemaVersion": "1.0", "description": "transcripts", "sessionType": "Standard_Stream",
        "inputs": {"s3BucketName": bucket, "s3KeyPrefix": "t", "s3EncryptionEnabled": False}}))
    restore = _node_role(lab, node, role)

    def run() -> tuple[str, dict]:
        command = lab.send([node], ["echo out-$((6*7))"], OutputS3BucketName=bucket, OutputS3KeyPrefix="p",
                           CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": group})
        invocation = lab.wait_invocation(command, node)
        assert (invocation["Status"], invocation["StandardOutputContent"]) == ("Success", "out-42\n"), invocation
        return command, invocation

    def transcript(marker: str) -> str:
        response = ssm.start_session(Target=node, DocumentName=document)
        process = plugin(lab, response, {"Target": node, "DocumentName": document})
        process.write(f"echo {marker}\nexit\n")
        process.wait_for(rf"Exiting session with sessionId: {response['SessionId']}\.")
        assert process.wait_exit() == 0
        return f"t/{response['SessionId']}.log"

    try:
        lab.wait_online(node)
        command, invocation = run()
        stdout = f"p/{command}/{node}/awsrunShellScript/0.awsrunShellScript/stdout"
        stream = f"{command}/{node}/aws-runShellScript/stdout"
        assert invocation["StandardErrorContent"] == (
            f"\nFailed uploading stdout to s3://{bucket}/{stdout} err:AccessDenied: "
            + _message(session, "s3:PutObject", f'"arn:aws:s3:::{bucket}/{stdout}"')
            + f"\nFailed uploading stdout to CloudWatch log group {group} stream {stream} err:AccessDeniedException: "
            + _message(session, "logs:CreateLogStream",
                       f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:{stream}"))
        assert invocation["StandardOutputUrl"] == ""
        refused = transcript(f"refused-{token}")

        iam.put_role_policy(RoleName=role, PolicyName="output", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:PutObject", "Resource": [f"arn:aws:s3:::{bucket}/p/*",
                                                                          f"arn:aws:s3:::{bucket}/t/*"]},
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:*"}]}))
        command, invocation = run()
        stdout = f"p/{command}/{node}/awsrunShellScript/0.awsrunShellScript/stdout"
        assert invocation["StandardErrorContent"] == (
            f"\nFailed uploading stdout to s3://{bucket}/{stdout} err:AccessDenied: "
            + _message(session, "kms:GenerateDataKey", key))
        events = logs.get_log_events(logGroupName=group, logStreamName=f"{command}/{node}/aws-runShellScript/stdout")
        assert [e["message"] for e in events["events"]] == ["out-42\n"]

        policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
        policy["Statement"].append({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{role}"},
                                    "Action": "kms:GenerateDataKey", "Resource": "*", "Condition": {
                                        "StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com",
                                                         "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{bucket}"}}})
        kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(policy))
        command, invocation = run()
        assert invocation["StandardErrorContent"] == ""
        stdout = f"p/{command}/{node}/awsrunShellScript/0.awsrunShellScript/stdout"
        assert s3.get_object(Bucket=bucket, Key=stdout)["Body"].read() == b"out-42\n"
        landed = transcript(f"landed-{token}")
        body = wait_until(lambda: _object(s3, bucket, landed), what=f"s3://{bucket}/{landed}")
        assert f"landed-{token}" in body
        # The refused transcript was due seconds before this one landed: it never did.
        assert _object(s3, bucket, refused) is None
    finally:
        restore()
        lab.wait_online(node)


def test_a_node_downloads_a_pull_bundle_with_its_role(world):
    """AWS-ApplyAnsiblePlaybooks downloads its bundle with the node's instance profile: a role with
    AmazonSSMManagedInstanceCore only is refused (the node's run fails with AWS's error, the playbook never runs);
    with s3:GetObject on the bundle, as docs/state-manager.md says, it runs."""
    lab, token = world["lab"], world["token"]
    node = lab.ec2_ids[5]
    role, bucket, key = f"puller-{token}", f"bundles-{token}", "pull/hello.yml"
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{node}"
    s3, iam = lab.client("s3"), lab.client("iam")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=b"- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                                                 b"    - ansible.builtin.debug:\n        msg: pulled-" + token.encode() + b"\n")
    restore = _node_role(lab, node, role)

    def run() -> dict:
        command = lab.ssm.send_command(InstanceIds=[node], DocumentName="AWS-ApplyAnsiblePlaybooks", Parameters={
            "SourceType": ["S3"], "SourceInfo": [json.dumps({"path": f"https://s3.amazonaws.com/{bucket}/{key}"})],
            "InstallDependencies": ["False"], "PlaybookFile": ["hello.yml"]})["Command"]["CommandId"]
        return lab.wait_invocation(command, node, timeout=120)

    try:
        lab.wait_online(node)
        invocation = run()
        assert invocation["Status"] == "Failed", invocation
        assert invocation["StandardErrorContent"].strip() == (
            f"Failed downloading s3://{bucket}/{key} err:AccessDenied: "
            + _message(session, "s3:GetObject", f'"arn:aws:s3:::{bucket}/{key}"'))
        iam.put_role_policy(RoleName=role, PolicyName="bundle", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/pull/*"}]}))
        invocation = run()
        assert invocation["Status"] == "Success" and f"pulled-{token}" in invocation["StandardOutputContent"], invocation
    finally:
        restore()
        lab.wait_online(node)


def _object(s3, bucket: str, key: str) -> str | None:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() if listed else None


def test_ssm_lab_check_operator_passes_an_operator_and_names_what_a_wider_policy_allows(world):
    """``ssm-lab check-operator`` (the README's and make demo's check of alice after site.yml): the operator policy
    passes; a policy that also allows Run Command and ending anyone's session fails, naming those two calls. Both
    identities' keys for the check are deleted after it."""
    lab, name, mine = world["lab"], world["alice_name"], world["mine"]
    iam = lab.client("iam")
    passed = lab.cli("check-operator", name, "--node", mine, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"StartSession (SSM-SessionManagerRunShell): allowed, session {name}-" in passed.stdout
    assert "TerminateSession of that session, its own: allowed\n" in passed.stdout
    assert "SendCommand (AWS-RunShellScript): AccessDeniedException: User: " in passed.stdout
    assert len(iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 1  # the world's own key only

    wide = f"wide-{world['token']}"
    iam.create_user(UserName=wide)
    iam.put_user_policy(UserName=wide, PolicyName="all-of-ssm", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}]}))
    failed = lab.cli("check-operator", wide, "--node", mine, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "SendCommand (AWS-RunShellScript): allowed, command " in failed.stdout
    assert re.search(r": TerminateSession of another's session \(\S+\); SendCommand \(AWS-RunShellScript\) went "
                     r"otherwise$", failed.stderr.strip()), failed.stderr
    assert iam.list_access_keys(UserName=wide)["AccessKeyMetadata"] == []


# --- the calls moto serves (ssm_lab.aws.service_authz) ----------------------------------------------------------

_UNAUTHORIZED = "You are not authorized to perform this operation. "


def test_moto_served_calls_are_judged_with_each_services_error(world):
    """alice's operator policy allows ec2:DescribeInstances and nothing else moto serves: she may list instances
    and is refused, each in its service's words, RunInstances, CreateUser, writing to the transcripts bucket,
    decrypting with the session key, the other EC2 reads, CloudWatch Logs, SSM documents and parameters. A role
    session with the same policy is judged the same; GetCallerIdentity is never refused; the lab's default
    credentials may do each."""
    lab, alice, role, token = world["lab"], world["alice"], world["role"], world["token"]
    bucket, key_name = f"sessions-{token}", "sessions/alice-0123456789abcdef0.log"
    s3, kms = lab.client("s3"), lab.client("kms")
    s3.create_bucket(Bucket=bucket)
    session_key = kms.create_key(Description=f"session key {token}")["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=session_key, Plaintext=b"data key")["CiphertextBlob"]

    ec2 = alice.client("ec2")
    assert world["mine"] in {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    message = _denied(lambda: ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1),
                      "UnauthorizedOperation")
    prefix = _UNAUTHORIZED + _message(alice, "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*")
    assert message.startswith(prefix + ". Encoded authorization failure message: "), message
    assert _denied(ec2.describe_vpcs, "UnauthorizedOperation") == (
        f"{_UNAUTHORIZED}User: {alice.arn} is not authorized to perform: ec2:DescribeVpcs because no identity-based "
        "policy allows the ec2:DescribeVpcs action")
    iam = alice.client("iam")
    assert _denied(lambda: iam.create_user(UserName=f"mallory{token}"), "AccessDenied") == _message(
        alice, "iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/mallory{token}")
    assert _denied(lambda: alice.client("s3").put_object(Bucket=bucket, Key=key_name, Body=b"forged"),
                   "AccessDenied") == _message(alice, "s3:PutObject", f'"arn:aws:s3:::{bucket}/{key_name}"')
    assert _denied(lambda: alice.client("s3").put_bucket_encryption(
        Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {
            "SSEAlgorithm": "AES256"}}]}), "AccessDenied") == _message(
        alice, "s3:PutEncryptionConfiguration", f'"arn:aws:s3:::{bucket}"')
    assert _denied(lambda: alice.client("kms").decrypt(CiphertextBlob=blob)) == _message(
        alice, "kms:Decrypt", session_key)
    assert _denied(lambda: alice.client("logs").describe_log_groups()) == _message(
        alice, "logs:DescribeLogGroups", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:*")
    ssm = alice.client("ssm")
    assert _denied(lambda: ssm.get_document(Name="AWS-RunShellScript")) == _message(
        alice, "ssm:GetDocument", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript")
    assert _denied(lambda: ssm.get_parameter(Name="/lab/secret")) == _message(
        alice, "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/lab/secret")
    assert alice.client("sts").get_caller_identity()["Arn"] == alice.arn

    assert _denied(lambda: role.client("iam").get_role(RoleName=f"oncall-{token}"), "AccessDenied") == _message(
        role, "iam:GetRole", f"arn:aws:iam::{ACCOUNT}:role/oncall-{token}")
    assert _denied(lambda: role.client("kms").decrypt(CiphertextBlob=blob)) == _message(
        role, "kms:Decrypt", session_key)

    # The lab's own credentials: all of it.
    s3.put_object(Bucket=bucket, Key=key_name, Body=b"transcript")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"data key"
    assert lab.client("iam").get_role(RoleName=f"oncall-{token}")["Role"]["RoleName"] == f"oncall-{token}"


def test_a_deny_wins_and_a_resource_scoped_allow_covers_its_resource_only(world):
    lab, alice, name, token = world["lab"], world["alice"], world["alice_name"], world["token"]
    iam = lab.client("iam")
    oncall = f"arn:aws:iam::{ACCOUNT}:role/oncall-{token}"
    extra = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:GetRole", "Resource": oncall},
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:DescribeVpcs", "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="moto-served", PolicyDocument=json.dumps(extra))
    try:
        theirs = alice.client("iam")
        assert theirs.get_role(RoleName=f"oncall-{token}")["Role"]["Arn"] == oncall
        assert _denied(lambda: theirs.get_role(RoleName="ssm-lab-node"), "AccessDenied") == _message(
            alice, "iam:GetRole", f"arn:aws:iam::{ACCOUNT}:role/ssm-lab-node")
        ec2 = alice.client("ec2")
        assert isinstance(ec2.describe_subnets()["Subnets"], list)
        assert _denied(ec2.describe_vpcs, "UnauthorizedOperation") == (
            f"{_UNAUTHORIZED}User: {alice.arn} is not authorized to perform: ec2:DescribeVpcs with an explicit deny "
            "in an identity-based policy")
    finally:
        iam.delete_user_policy(UserName=name, PolicyName="moto-served")


def test_an_operator_with_the_ssh_document_pushes_a_key_as_her_run_as_user_only(world):
    """operator_access's SendSSHPublicKey grant, given with the ssh document: on the group's nodes, for the OS user
    of the caller's SSMSessionRunAs tag, and none other."""
    lab, token = world["lab"], world["token"]
    operator_access = world["operator_access"]
    tag_key = f"operator-{token}"
    plan = operator_access.plan([{"name": f"ssh-{token}", "documents": ["ssh"], "resource_tags": {tag_key: "alice"}}],
                                "aws", ACCOUNT, REGION)
    iam = lab.client("iam")
    user = f"sshop{token}"
    arn = iam.create_policy(PolicyName=plan["policies"][0]["name"],
                            PolicyDocument=json.dumps(plan["policies"][0]["document"]))["Policy"]["Arn"]
    iam.create_user(UserName=user, Tags=[{"Key": "SSMSessionRunAs", "Value": "alice"}])
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    operator = Principal(lab, f"arn:aws:iam::{ACCOUNT}:user/{user}", key["AccessKeyId"], key["SecretAccessKey"])
    connect = operator.client("ec2-instance-connect")
    public = "ssh-ed25519 " + "A" * 68 + " sshop"
    assert connect.send_ssh_public_key(InstanceId=world["mine"], InstanceOSUser="alice", SSHPublicKey=public)["Success"]
    resource = _instance(world["mine"])
    for node, os_user in ((world["mine"], "root"), (world["untagged"], "alice")):
        message = _denied(lambda node=node, os_user=os_user: connect.send_ssh_public_key(
            InstanceId=node, InstanceOSUser=os_user, SSHPublicKey=public))
        assert message == _message(operator, "ec2-instance-connect:SendSSHPublicKey", _instance(node)), resource
