"""The lab refuses what AWS refuses, with AWS's error codes (``ssm_lab.aws.refusals``), where moto would accept the
call or answer HTTP 500, which botocore reads as "invalid XML": a region that does not exist, a filter name a
Describe* call does not know, a VPC endpoint service that does not exist, a permissions boundary that does not
exist. And Run Command with an output bucket that does not exist completes, saying which upload failed.

boto3 against the shared lab; each name is this module's own."""

from __future__ import annotations

import json
import secrets

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"


def _refused(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


@pytest.mark.parametrize("service, call, code", [
    ("ec2", lambda c: c.describe_instances(), "SignatureDoesNotMatch"),
    ("ssm", lambda c: c.describe_instance_information(), "InvalidSignatureException"),
    ("sts", lambda c: c.get_caller_identity(), "SignatureDoesNotMatch"),
])
def test_a_region_that_does_not_exist_is_refused(main_lab, service, call, code):
    client = main_lab.client(service, region="us-esat-1")
    assert _refused(lambda: call(client)) == (
        403, code, "Credential should be scoped to a valid region, not 'us-esat-1'. ")
    assert call(main_lab.client(service, region="eu-south-2"))  # a real region the lab has nothing in: answered


@pytest.mark.parametrize("call, name", [
    (lambda ec2: ec2.describe_instances(Filters=[{"Name": "tag-ky", "Values": ["x"]}]), "tag-ky"),
    (lambda ec2: ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": ["x"]}, {"Name": "nme", "Values": ["x"]}]),
     "nme"),
    (lambda ec2: ec2.describe_vpc_endpoints(Filters=[{"Name": "service", "Values": ["x"]}]), "service"),
])
def test_an_unknown_filter_name_is_refused(main_lab, call, name):
    assert _refused(lambda: call(main_lab.ec2)) == (400, "InvalidParameterValue", f"The filter '{name}' is invalid")


def test_known_filter_names_still_filter(main_lab):
    found = main_lab.ec2.describe_instances(Filters=[{"Name": "tag:ssm-lab", "Values": ["node"]},
                                                     {"Name": "instance-state-name", "Values": ["running"]}])
    assert {i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]} >= set(main_lab.ec2_ids)
    assert main_lab.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["false"]}])["Vpcs"]


def test_an_unknown_instance_information_filter_key_is_refused_with_no_node_registered(main_lab):
    ssm = main_lab.client("ssm", region="eu-south-2")  # no node is registered there
    assert _refused(lambda: ssm.describe_instance_information(Filters=[{"Key": "tag-ky", "Values": ["x"]}])) == (
        400, "InvalidInstanceInformationFilterValue", "The filter key tag-ky is not valid.")


def test_a_vpc_endpoint_service_that_does_not_exist_is_refused(main_lab):
    ec2, vpc = main_lab.ec2, main_lab.network["vpc"]
    name = f"com.amazonaws.{main_lab.region}.ssm-messages"
    assert _refused(lambda: ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=name, VpcEndpointType="Interface")) == (
        400, "InvalidServiceName", f"The Vpc Endpoint Service '{name}' does not exist")
    assert not ec2.describe_vpc_endpoints(Filters=[{"Name": "service-name", "Values": [name]}])["VpcEndpoints"]


def test_a_permissions_boundary_that_does_not_exist_is_refused(main_lab):
    iam, token = main_lab.client("iam"), secrets.token_hex(3)
    boundary = f"arn:aws:iam::{ACCOUNT}:policy/no-such-boundary-{token}"
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    expected = (404, "NoSuchEntity", f"Scope ARN: {boundary} does not exist or is not attachable.")
    role = f"refused-{token}"
    assert _refused(lambda: iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust,
                                            PermissionsBoundary=boundary)) == expected
    assert _refused(lambda: iam.get_role(RoleName=role))[1] == "NoSuchEntity"  # nothing was created
    assert _refused(lambda: iam.create_user(UserName=role, PermissionsBoundary=boundary)) == expected
    real = iam.create_policy(PolicyName=f"boundary-{token}", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}]}))
    created = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust,
                              PermissionsBoundary=real["Policy"]["Arn"])["Role"]
    assert created["PermissionsBoundary"]["PermissionsBoundaryArn"] == real["Policy"]["Arn"]
    assert _refused(lambda: iam.put_role_permissions_boundary(RoleName=role, PermissionsBoundary=boundary)) == expected


def test_run_command_with_a_missing_output_bucket_completes_and_names_the_failed_upload(main_lab):
    node, bucket = main_lab.ec2_ids[0], f"no-such-output-{secrets.token_hex(4)}"
    command_id = main_lab.send([node], ["echo hello"], OutputS3BucketName=bucket, OutputS3KeyPrefix="out")
    invocation = main_lab.wait_invocation(command_id, node)
    assert invocation["Status"] == "Success", invocation
    assert invocation["StandardOutputContent"] == "hello\n"
    assert invocation["StandardOutputUrl"] == ""
    key = f"out/{command_id}/{node}/awsrunShellScript/0.awsrunShellScript/stdout"
    assert (f"Failed uploading stdout to s3://{bucket}/{key} err:NoSuchBucket: The specified bucket does not exist"
            in invocation["StandardErrorContent"])
    assert main_lab.wait_command(command_id)["Status"] == "Success"
