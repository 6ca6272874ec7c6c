"""A node's own downloads from S3 follow the network rules: a NAT route, an S3 gateway endpoint on its route
table, or an S3 interface endpoint. amazon.aws.aws_ssm's file transfer (curl of a presigned URL) depends on it."""

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
    ec2, network = lab.ec2, lab.network
    group = ec2.create_security_group(GroupName="s3-path-vpce", Description="443 from the VPC",
                                      VpcId=network["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.42.0.0/16"}]}])
    subnets = [p["subnet"] for p in network["private"]]
    for service in ("ssm", "ssmmessages", "ec2messages"):
        ec2.create_vpc_endpoint(VpcId=network["vpc"], ServiceName=f"com.amazonaws.us-east-1.{service}",
                                VpcEndpointType="Interface", SubnetIds=subnets, SecurityGroupIds=[group],
                                PrivateDnsEnabled=True)
    tables = [p["route_table"] for p in network["private"]]
    for table in tables:
        ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")
    wait_until(lambda: not lab.node_status(node)["s3_path"], what="the S3 path to disappear")
    lab.wait_online(node)

    blocked = _fetch(lab, node, url)
    assert blocked["Status"] == "Failed" and blocked["ResponseCode"] != 0, blocked
    assert "HTTP 200" not in blocked["StandardOutputContent"]

    # An S3 gateway endpoint on the node's route table restores it.
    ec2.create_vpc_endpoint(VpcId=network["vpc"], ServiceName="com.amazonaws.us-east-1.s3",
                            VpcEndpointType="Gateway", RouteTableIds=tables)
    wait_until(lambda: lab.node_status(node)["s3_path"], what="the S3 path to come back")
    restored = _fetch(lab, node, url)
    assert restored["StandardOutputContent"] == "HTTP 200", restored
