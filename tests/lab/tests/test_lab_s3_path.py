"""A node's own downloads from S3 follow the network rules: a NAT route, an S3 gateway endpoint on its route
table, or an S3 interface endpoint. amazon.aws.aws_ssm's file transfer (curl of a presigned URL) depends on it, and
the policy of the S3 gateway endpoint that carries the node's requests judges them (downloads, uploads, transcripts)."""

import json
import re

import pytest

from labhelpers import wait_until

CURL = "curl -sS -o /dev/null -w 'HTTP %{http_code}' --max-time 10 '{url}'"


@pytest.fixture(scope="module")
def s3_lab(start_lab):
    with start_lab("s3-path", "--nodes", "1", "--provisioned") as lab:
        yield lab


def _fetch(lab, node, url):
    return lab.run(node, CURL.replace("{url}", url), timeout=40)


def test_downloads_need_an_s3_path(s3_lab):
    lab = s3_lab
    node = lab.ec2_ids[0]
    s3 = lab.client("s3")
    s3.create_bucket(Bucket="lab-s3-path")
    s3.put_object(Bucket="lab-s3-path", Key="module.py", Body=b"print('hello')\n")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "lab-s3-path", "Key": "module.py"})

    # Through the NAT gateway the node reaches S3.
    through_nat = _fetch(lab, node, url)
    assert through_nat["StandardOutputContent"] == "HTTP 200", through_nat

    # Move the node to an endpoints-only path (ssm, ssmmessages, ec2messages) with no NAT route: it stays
    # Online, but S3 is out of reach.
    _endpoints_only(lab)
    wait_until(lambda: not lab.node_status(node)["s3_path"], what="the S3 path to disappear")
    lab.wait_online(node)

    blocked = _fetch(lab, node, url)
    assert blocked["Status"] == "Failed" and blocked["ResponseCode"] != 0, blocked
    assert "HTTP 200" not in blocked["StandardOutputContent"]

    # An S3 gateway endpoint on the node's route table restores it.
    _s3_gateway(lab)
    wait_until(lambda: lab.node_status(node)["s3_path"], what="the S3 path to come back")
    restored = _fetch(lab, node, url)
    assert restored["StandardOutputContent"] == "HTTP 200", restored


def _endpoints_only(lab) -> None:
    """The ssm, ssmmessages and ec2messages interface endpoints, and no NAT route (once)."""
    ec2, network = lab.ec2, lab.network
    if ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-endpoint-type", "Values": ["Interface"]}])["VpcEndpoints"]:
        return
    group = ec2.create_security_group(GroupName="s3-path-vpce", Description="443 from the VPC",
                                      VpcId=network["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.42.0.0/16"}]}])
    subnets = [p["subnet"] for p in network["private"]]
    for service in ("ssm", "ssmmessages", "ec2messages"):
        ec2.create_vpc_endpoint(VpcId=network["vpc"], ServiceName=f"com.amazonaws.us-east-1.{service}",
                                VpcEndpointType="Interface", SubnetIds=subnets, SecurityGroupIds=[group],
                                PrivateDnsEnabled=True)
    for table in [p["route_table"] for p in network["private"]]:
        ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")


def _s3_gateway(lab) -> str:
    """The S3 gateway endpoint on the private route tables (created once)."""
    found = lab.ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-endpoint-type", "Values": ["Gateway"]}])
    if found["VpcEndpoints"]:
        return found["VpcEndpoints"][0]["VpcEndpointId"]
    return lab.ec2.create_vpc_endpoint(
        VpcId=lab.network["vpc"], ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
        RouteTableIds=[p["route_table"] for p in lab.network["private"]])["VpcEndpoint"]["VpcEndpointId"]


def test_the_gateway_endpoint_policy_guards_what_goes_through_it(s3_lab, shell):
    """A bucket the S3 gateway endpoint's policy leaves out: the node's presigned download gets S3's 403, Run
    Command's output upload and the session transcript's upload are refused with AWS's message."""
    lab, node, bucket = s3_lab, s3_lab.ec2_ids[0], "lab-s3-path-outside"
    s3, logs = lab.client("s3"), lab.client("logs")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="module.py", Body=b"print('hello')\n")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "module.py"})
    _endpoints_only(lab)
    gateway = _s3_gateway(lab)
    # The vpc_endpoints role's shape: the fleet's buckets, and AWS's agent buckets for reading.
    lab.ec2.modify_vpc_endpoint(VpcEndpointId=gateway, PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": ["arn:aws:s3:::lab-s3-path/*"]},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::amazon-ssm-us-east-1/*"}]}))
    wait_until(lambda: lab.node_status(node)["s3_path"], what="the S3 path")
    lab.wait_online(node)

    refused = _fetch(lab, node, url)
    assert refused["StandardOutputContent"] == "HTTP 403", refused

    command = lab.send([node], ["echo output"], OutputS3BucketName=bucket)
    invocation = lab.wait_invocation(command, node)
    assert invocation["Status"] == "Success", invocation
    refusal = re.search(r"Failed uploading stdout to s3://lab-s3-path-outside/\S+ err:AccessDenied: User: "
                        r"arn:aws:sts::123456789012:assumed-role/[^/]+/(i-\w+) is not authorized to perform: "
                        r's3:PutObject on resource: "arn:aws:s3:::lab-s3-path-outside/\S+/stdout" because no VPC '
                        r"endpoint policy allows the s3:PutObject action", invocation["StandardErrorContent"])
    assert refusal and refusal.group(1) == node, invocation["StandardErrorContent"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix=command).get("KeyCount") == 0

    # The transcript: refused in S3, while CloudWatch Logs (no endpoint) takes it, after the S3 attempt.
    group = "/lab/s3-path"
    logs.create_log_group(logGroupName=group)
    lab.ssm.create_document(Name="SSM-SessionManagerRunShell", DocumentType="Session", DocumentFormat="JSON",
                            Content=json.dumps({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {
                                "s3BucketName": bucket, "s3EncryptionEnabled": False,
                                "cloudWatchLogGroupName": group, "cloudWatchEncryptionEnabled": False}}))
    response, process = shell(lab, node)
    process.write("echo transcript-$((6*7))\nexit\n")
    process.wait_for(rf"Exiting session with sessionId: {response['SessionId']}\.")
    wait_until(lambda: logs.describe_log_streams(logGroupName=group)["logStreams"], what="the transcript's log stream")
    assert s3.list_objects_v2(Bucket=bucket, Prefix=response["SessionId"]).get("KeyCount") == 0
