"""What ``ssm-lab up`` builds in the lab's AWS, through the public API like any client.

A VPC over two AZs with a private subnet each (own route table), a public subnet, a node security group with
no ingress, and the nodes. With ``provisioned`` it also gives them what Session Manager needs: an instance
role and profile with AmazonSSMManagedInstanceCore, and a NAT gateway route. Without it they stay offline,
which is where the collection's provisioning roles start. The role may also write what its agent uploads
(``OUTPUT_POLICY``): the lab judges the nodes' own writes with their role's policies, as AWS does.
"""

from __future__ import annotations

import json

from .. import common

VPC_CIDR = "10.42.0.0/16"
PRIVATE_SUBNETS = (("a", "10.42.1.0/24"), ("b", "10.42.2.0/24"))
PUBLIC_SUBNET = ("a", "10.42.0.0/24")
ROLE_NAME = "ssm-lab-node"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


# What AWS's guide asks of an instance profile for Run Command output and session logging, on any bucket and log
# group (the lab's tests choose their own): S3 objects, with the bucket's KMS key when S3 asks for it, and CloudWatch
# Logs groups and streams. Roles made by bastionless.ssm.instance_role grant this for one bucket and group only.
OUTPUT_POLICY_NAME = "ssm-lab-output"
OUTPUT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetEncryptionConfiguration"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey"], "Resource": "*",
         "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}},
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                       "logs:DescribeLogGroups", "logs:DescribeLogStreams"], "Resource": "*"},
    ],
}


def _tags(kind: str, **tags: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def build_network(ec2, region: str) -> dict:
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR, TagSpecifications=_tags("vpc", Name="ssm-lab"))["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    private = []
    for zone, cidr in PRIVATE_SUBNETS:
        subnet = ec2.create_subnet(
            VpcId=vpc, CidrBlock=cidr, AvailabilityZone=region + zone,
            TagSpecifications=_tags("subnet", Name=f"ssm-lab-private-{zone}", Tier="private"),
        )["Subnet"]["SubnetId"]
        table = ec2.create_route_table(
            VpcId=vpc, TagSpecifications=_tags("route-table", Name=f"ssm-lab-private-{zone}", Tier="private")
        )["RouteTable"]["RouteTableId"]
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
        private.append({"subnet": subnet, "route_table": table, "zone": region + zone})
    public = ec2.create_subnet(
        VpcId=vpc, CidrBlock=PUBLIC_SUBNET[1], AvailabilityZone=region + PUBLIC_SUBNET[0],
        TagSpecifications=_tags("subnet", Name="ssm-lab-public-a", Tier="public"),
    )["Subnet"]["SubnetId"]
    group = ec2.create_security_group(
        GroupName="ssm-lab-nodes", Description="lab nodes: no inbound rule at all", VpcId=vpc,
        TagSpecifications=_tags("security-group", Name="ssm-lab-nodes"),
    )["GroupId"]
    return {"vpc": vpc, "private": private, "public_subnet": public, "node_group": group}


def provision_path(ec2, network: dict) -> str:
    """Internet gateway, public route, NAT gateway, and the private routes to it."""
    igw = ec2.create_internet_gateway(TagSpecifications=_tags("internet-gateway", Name="ssm-lab"))
    igw_id = igw["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=network["vpc"])
    public_table = ec2.create_route_table(
        VpcId=network["vpc"], TagSpecifications=_tags("route-table", Name="ssm-lab-public")
    )["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id)
    ec2.associate_route_table(RouteTableId=public_table, SubnetId=network["public_subnet"])
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(
        SubnetId=network["public_subnet"], AllocationId=allocation,
        TagSpecifications=_tags("natgateway", Name="ssm-lab"),
    )["NatGateway"]["NatGatewayId"]
    for private in network["private"]:
        ec2.create_route(RouteTableId=private["route_table"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    return nat


def provision_role(iam) -> str:
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                    Description="ssm-lab: instance role for lab nodes")
    iam.attach_role_policy(RoleName=ROLE_NAME, PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName=OUTPUT_POLICY_NAME, PolicyDocument=json.dumps(OUTPUT_POLICY))
    iam.create_instance_profile(InstanceProfileName=ROLE_NAME)
    iam.add_role_to_instance_profile(InstanceProfileName=ROLE_NAME, RoleName=ROLE_NAME)
    return ROLE_NAME


def _image(ec2) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["al2023-ami-2023*x86_64"]}])
    found = sorted(images["Images"], key=lambda i: i.get("CreationDate", ""))
    return found[-1]["ImageId"] if found else "ami-12c6146b"


def private_dns_name(ip: str, region: str) -> str:
    """EC2's private host name: ip-10-42-1-5.ec2.internal in us-east-1, ip-….<region>.compute.internal elsewhere."""
    suffix = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return "ip-" + ip.replace(".", "-") + "." + suffix


def launch_nodes(ec2, network: dict, count: int, first: int = 1, profile: str | None = None,
                 tags: dict | None = None, name_prefix: str = "lab-node") -> list[dict]:
    image = _image(ec2)
    region = network["private"][0]["zone"][:-1]
    nodes = []
    for index in range(first, first + count):
        placement = network["private"][(index - 1) % len(network["private"])]
        extra = {"IamInstanceProfile": {"Name": profile}} if profile else {}
        instance = ec2.run_instances(
            ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=placement["subnet"],
            SecurityGroupIds=[network["node_group"]],
            TagSpecifications=_tags("instance", Name=f"{name_prefix}-{index}", **{"ssm-lab": "node"}, **(tags or {})),
            **extra,
        )["Instances"][0]
        ip = instance["PrivateIpAddress"]
        nodes.append({
            "id": instance["InstanceId"],
            "kind": "ec2",
            "hostname": private_dns_name(ip, region),
            "ip": ip,
        })
    return nodes


RECORD_BATCH = 500  # instances per RunInstances call (MinCount = MaxCount), so 10,000 records take 20 calls
RECORD_SUBNET_SIZE = 4000  # records per /20 subnet of their own (a /24 private subnet holds only 251)


def launch_records(ec2, network: dict, count: int, profile: str | None = None, batch: int = RECORD_BATCH,
                   light: bool = False) -> list[dict]:
    """EC2 instances that are registered in SSM but run no agent (kind ``record``), launched ``batch`` at a
    time with one RunInstances each, into /20 subnets of their own (10.42.16.0/20, 10.42.32.0/20, …, in the
    AZs in turn, on the private route tables). Like the instances of an Auto Scaling group they share their
    tags: ``Name=lab-record``, ``ssm-lab=node``, ``ssm-lab-kind=record``.

    With ``light``, the same launch makes light nodes: EC2 nodes (kind ``ec2``) with an agent each, all run in
    one sandbox (``ssm-lab up --light-nodes``), tagged ``Name=lab-light``, ``ssm-lab=node``, ``ssm-lab-kind=light``."""
    if count + len(network.get("record_subnets", [])) * RECORD_SUBNET_SIZE > 15 * RECORD_SUBNET_SIZE:
        raise ValueError(f"at most {15 * RECORD_SUBNET_SIZE} records and light nodes fit in the lab's VPC")
    kind, name = ("ec2", "lab-light") if light else ("record", "lab-record")
    image = _image(ec2)
    region = network["private"][0]["zone"][:-1]
    extra = {"IamInstanceProfile": {"Name": profile}} if profile else {}
    nodes = []
    subnets = network.setdefault("record_subnets", [])
    for index in range(0, count, RECORD_SUBNET_SIZE):
        private = network["private"][len(subnets) % len(network["private"])]
        subnet = ec2.create_subnet(
            VpcId=network["vpc"], CidrBlock=f"10.42.{16 * (len(subnets) + 1)}.0/20", AvailabilityZone=private["zone"],
            TagSpecifications=_tags("subnet", Name=f"ssm-lab-records-{len(subnets) + 1}", Tier="private"),
        )["Subnet"]["SubnetId"]
        ec2.associate_route_table(RouteTableId=private["route_table"], SubnetId=subnet)
        subnets.append(subnet)
        in_subnet = min(RECORD_SUBNET_SIZE, count - index)
        for start in range(0, in_subnet, batch):
            size = min(batch, in_subnet - start)
            instances = ec2.run_instances(
                ImageId=image, InstanceType="t3.micro", MinCount=size, MaxCount=size, SubnetId=subnet,
                SecurityGroupIds=[network["node_group"]],
                TagSpecifications=_tags("instance", Name=name, **{"ssm-lab": "node",
                                                                  "ssm-lab-kind": "light" if light else "record"}),
                **extra,
            )["Instances"]
            for instance in instances:
                ip = instance["PrivateIpAddress"]
                nodes.append({"id": instance["InstanceId"], "kind": kind,
                              "hostname": private_dns_name(ip, region), "ip": ip, **({"light": True} if light else {})})
    return nodes


def hybrid_nodes(count: int, first: int = 1, kind: str = "hybrid") -> list[dict]:
    """Hybrid (``mi-``) nodes: with an agent (``kind="hybrid"``), or registrations only (``kind="record"``)."""
    return [
        {
            "id": "mi-" + common.random_hex(17),
            "kind": kind,
            "hostname": f"onprem-{index}.corp.example",
            "ip": f"192.168.{50 + index // 200}.{10 + index % 200}",
            "name": f"lab-hybrid-{index}",
            "iam_role": "SSMServiceRole",
            "tags": {"Name": f"lab-hybrid-{index}", "Env": "onprem"},
        }
        for index in range(first, first + count)
    ]
