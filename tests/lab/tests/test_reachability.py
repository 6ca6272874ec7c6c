"""ssm_lab.aws.reachability against state built through boto3 on an in-process moto."""

from __future__ import annotations

import functools
import json
import os

# Before moto builds an IAM backend: AmazonSSMManagedInstanceCore and friends must exist.
os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"

from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
import pytest  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.backends import get_backend  # noqa: E402

from labhelpers import collection_filter  # noqa: E402
from ssm_lab.aws import reachability  # noqa: E402
from ssm_lab.aws.reachability import Problem, node_problems, s3_path_problems  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
AZ_A, AZ_B = f"{REGION}a", f"{REGION}b"
CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
DHMC_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy"
DHMC_ROLE = "service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole"
SSM_SERVICES = ("ssm", "ssmmessages", "ec2messages")


def trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def codes(problems: list[Problem]) -> set[str]:
    return {p.code for p in problems}


@dataclass
class Lab:
    """The baseline: VPC 10.42.0.0/16 (DNS on), public subnet with IGW and NAT in AZ a, private subnets in
    AZ a and b each with a route table sending 0/0 to the NAT, an SSM role and profile, two instances."""

    ec2: Any
    iam: Any
    vpc: str
    public: str
    private_a: str
    private_b: str
    rt_public: str
    rt_a: str
    rt_b: str
    igw: str
    nat: str
    role: str
    profile: str
    ami: str
    node_a: str
    node_b: str

    @property
    def backend(self) -> Any:
        return get_backend("ec2")[ACCOUNT][REGION]

    def launch(self, subnet: str, profile: str | None = "", **kwargs: Any) -> str:
        """An instance in ``subnet``; profile "" means the baseline profile, None means none."""
        if profile is not None:
            kwargs["IamInstanceProfile"] = {"Name": profile or self.profile}
        reservation = self.ec2.run_instances(ImageId=self.ami, MinCount=1, MaxCount=1, SubnetId=subnet, **kwargs)
        return reservation["Instances"][0]["InstanceId"]

    def role_with_profile(self, name: str, trusted: str = "ec2.amazonaws.com") -> str:
        self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust(trusted))
        self.iam.create_instance_profile(InstanceProfileName=name)
        self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return name

    def isolate(self, route_table: str) -> None:
        """Take the 0.0.0.0/0 route out of a route table."""
        self.ec2.delete_route(RouteTableId=route_table, DestinationCidrBlock="0.0.0.0/0")

    def https_group(self, **source: Any) -> str:
        """A security group admitting TCP 443 from ``source`` (default: the VPC CIDR)."""
        group = self.ec2.create_security_group(
            GroupName=f"https-{len(self.backend.groups[self.vpc])}", Description="https", VpcId=self.vpc
        )["GroupId"]
        permission: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}
        permission.update(source or {"IpRanges": [{"CidrIp": "10.42.0.0/16"}]})
        self.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[permission])
        return group

    def interface_endpoints(self, services=SSM_SERVICES, subnets=None, groups=None) -> dict[str, str]:
        """Interface endpoints (private DNS on) for ``services``; returns service -> endpoint id."""
        subnets = subnets or [self.private_a]
        groups = groups or [self.https_group()]
        created = {}
        for service in services:
            endpoint = self.ec2.create_vpc_endpoint(
                VpcId=self.vpc,
                ServiceName=f"com.amazonaws.{REGION}.{service}",
                VpcEndpointType="Interface",
                SubnetIds=subnets,
                SecurityGroupIds=groups,
                PrivateDnsEnabled=True,
            )["VpcEndpoint"]
            created[service] = endpoint["VpcEndpointId"]
        return created


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    """Let unexpected moto shapes raise in these tests instead of becoming LAB_INTERNAL."""
    monkeypatch.setenv("SSM_LAB_STRICT", "1")


@functools.lru_cache(maxsize=1)
def ssm_managed_policies_data() -> str:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    every = json.loads(aws_managed_policies_data)
    names = ("AmazonSSMManagedInstanceCore", "AmazonSSMManagedEC2InstanceDefaultPolicy")
    return json.dumps({name: every[name] for name in names})


def only_ssm_managed_policies(monkeypatch) -> None:
    """moto re-parses ~1,500 AWS managed policies for every IAM backend of every partition on each reset
    (seconds per test); keep the real documents of just the ones these tests attach."""
    import moto.iam.models as iam_models

    monkeypatch.setattr(iam_models, "aws_managed_policies_data", ssm_managed_policies_data())


@functools.lru_cache(maxsize=1)
def boto3_session() -> boto3.session.Session:
    """One session for every test: mock_aws drops boto3's default session when it starts, and a new one loads the
    EC2 and IAM service models again (about 0.5 s a test). moto's stubber is among the handlers of any session made
    after moto is imported, so clients of this one reach the mock that is running."""
    return boto3.session.Session()


@pytest.fixture
def lab(monkeypatch):
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    only_ssm_managed_policies(monkeypatch)
    # moto makes every region's EC2 backend with its ~1,400 default AMIs (each with a volume and a snapshot): about
    # 0.5 s a backend, and no test here looks at an image. One image of the tests' own instead.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        ec2 = boto3_session().client("ec2", region_name=REGION)
        iam = boto3_session().client("iam", region_name=REGION)

        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})

        def subnet(cidr: str, az: str) -> str:
            return ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]

        def route_table(subnet_id: str) -> str:
            table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet_id)
            return table

        public, private_a, private_b = (
            subnet("10.42.0.0/24", AZ_A),
            subnet("10.42.1.0/24", AZ_A),
            subnet("10.42.2.0/24", AZ_B),
        )
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        rt_public = route_table(public)
        ec2.create_route(RouteTableId=rt_public, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
        nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
        rt_a, rt_b = route_table(private_a), route_table(private_b)
        for table in (rt_a, rt_b):
            ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)

        iam.create_role(RoleName="ssm-node", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))
        iam.attach_role_policy(RoleName="ssm-node", PolicyArn=CORE_POLICY)
        iam.create_instance_profile(InstanceProfileName="ssm-node")
        iam.add_role_to_instance_profile(InstanceProfileName="ssm-node", RoleName="ssm-node")

        ami = ec2.register_image(Name="reachability", RootDeviceName="/dev/xvda")["ImageId"]
        lab = Lab(
            ec2,
            iam,
            vpc,
            public,
            private_a,
            private_b,
            rt_public,
            rt_a,
            rt_b,
            igw,
            nat,
            "ssm-node",
            "ssm-node",
            ami,
            "",
            "",
        )
        lab.node_a = lab.launch(private_a)
        lab.node_b = lab.launch(private_b)
        yield lab


def problems_of(lab: Lab, instance_id: str, dhmc_role: str | None = None) -> set[str]:
    return codes(node_problems(ACCOUNT, REGION, instance_id, dhmc_role))


def s3_of(lab: Lab, instance_id: str) -> set[str]:
    return codes(s3_path_problems(ACCOUNT, REGION, instance_id))


# --- instance -------------------------------------------------------------------------------------------


def test_baseline_nat_path_is_ok(lab):
    assert node_problems(ACCOUNT, REGION, lab.node_a) == []
    assert node_problems(ACCOUNT, REGION, lab.node_b) == []
    assert s3_path_problems(ACCOUNT, REGION, lab.node_a) == []


def test_unknown_instance(lab):
    assert problems_of(lab, "i-0123456789abcdef0") == {"INSTANCE_NOT_FOUND"}
    assert s3_of(lab, "i-0123456789abcdef0") == {"INSTANCE_NOT_FOUND"}


@pytest.mark.parametrize("action", ["stop", "terminate"])
def test_instance_not_running(lab, action):
    getattr(lab.ec2, f"{action}_instances")(InstanceIds=[lab.node_a])
    assert problems_of(lab, lab.node_a) == {"INSTANCE_NOT_RUNNING"}


def test_stopped_instance_still_reports_other_prerequisites(lab):
    lab.ec2.stop_instances(InstanceIds=[lab.node_a])
    lab.isolate(lab.rt_a)
    assert problems_of(lab, lab.node_a) == {"INSTANCE_NOT_RUNNING", "NO_ROUTE_TO_INTERNET"}


# --- iam --------------------------------------------------------------------------------------------------


def test_no_instance_profile(lab):
    node = lab.launch(lab.private_a, profile=None)
    assert problems_of(lab, node) == {"NO_INSTANCE_PROFILE"}


def test_profile_associated_after_launch(lab):
    node = lab.launch(lab.private_a, profile=None)
    lab.ec2.associate_iam_instance_profile(IamInstanceProfile={"Name": lab.profile}, InstanceId=node)
    assert problems_of(lab, node) == set()


def test_disassociated_profile(lab):
    association = lab.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [lab.node_a]}]
    )["IamInstanceProfileAssociations"][0]["AssociationId"]
    lab.ec2.disassociate_iam_instance_profile(AssociationId=association)
    assert problems_of(lab, lab.node_a) == {"NO_INSTANCE_PROFILE"}


def test_profile_deleted_from_iam(lab):
    name = lab.role_with_profile("doomed")
    lab.iam.attach_role_policy(RoleName=name, PolicyArn=CORE_POLICY)
    node = lab.launch(lab.private_a, profile=name)
    lab.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
    lab.iam.delete_instance_profile(InstanceProfileName=name)
    assert problems_of(lab, node) == {"INSTANCE_PROFILE_NOT_FOUND"}


def test_profile_without_role(lab):
    lab.iam.create_instance_profile(InstanceProfileName="empty")
    node = lab.launch(lab.private_a, profile="empty")
    assert problems_of(lab, node) == {"INSTANCE_PROFILE_HAS_NO_ROLE"}


def test_role_lacking_permissions(lab):
    name = lab.role_with_profile("s3-only")
    lab.iam.put_role_policy(
        RoleName=name,
        PolicyName="s3",
        PolicyDocument=policy({"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*"}),
    )
    node = lab.launch(lab.private_a, profile=name)
    problems = node_problems(ACCOUNT, REGION, node)
    assert codes(problems) == {"ROLE_MISSING_PERMISSIONS"}
    assert "s3-only" in problems[0].message
    assert "ssmmessages:OpenDataChannel" in problems[0].message


@pytest.mark.parametrize(
    "principal, expected",
    [
        ({"Service": "lambda.amazonaws.com"}, {"ROLE_TRUST_POLICY"}),
        ({"Service": ["lambda.amazonaws.com", "ec2.amazonaws.com"]}, set()),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, {"ROLE_TRUST_POLICY"}),
    ],
)
def test_role_trust_policy(lab, principal, expected):
    lab.iam.update_assume_role_policy(
        RoleName=lab.role,
        PolicyDocument=policy({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}),
    )
    problems = node_problems(ACCOUNT, REGION, lab.node_a)
    assert codes(problems) == expected
    assert all(lab.role in p.message for p in problems)


def test_lambda_trusted_role(lab):
    name = lab.role_with_profile("lambda-role", trusted="lambda.amazonaws.com")
    lab.iam.attach_role_policy(RoleName=name, PolicyArn=CORE_POLICY)
    assert problems_of(lab, lab.launch(lab.private_a, profile=name)) == {"ROLE_TRUST_POLICY"}


def test_trust_policy_deny_wins(lab):
    lab.iam.update_assume_role_policy(
        RoleName=lab.role,
        PolicyDocument=policy(
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
            {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole"},
        ),
    )
    assert problems_of(lab, lab.node_a) == {"ROLE_TRUST_POLICY"}


@pytest.mark.parametrize(
    "statement, missing",
    [
        ({"Effect": "Deny", "Action": "ssmmessages:*", "Resource": "*"}, 4),
        ({"Effect": "Deny", "Action": "EC2Messages:GetMess?ges", "Resource": "*"}, 1),
        ({"Effect": "Deny", "NotAction": "ssm:*", "Resource": "*"}, 5),
        ({"Effect": "Deny", "Action": "ssm:UpdateInstanceInformation", "Resource": "arn:aws:ec2:*:*:instance/*"}, 1),
        ({"Effect": "Deny", "Action": "ssm:*", "Resource": "arn:aws:s3:::some-bucket"}, 0),
        (
            {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            6,
        ),
    ],
)
def test_explicit_deny(lab, statement, missing):
    lab.iam.put_role_policy(RoleName=lab.role, PolicyName="deny", PolicyDocument=policy(statement))
    problems = node_problems(ACCOUNT, REGION, lab.node_a)
    if missing:
        assert codes(problems) == {"ROLE_MISSING_PERMISSIONS"}
        assert problems[0].message.count(":") >= missing
    else:
        assert problems == []


@pytest.mark.parametrize(
    "statement, expected",
    [
        ({"Effect": "Allow", "Action": ["ssm:*", "ec2messages:*"], "Resource": "*"}, {"ROLE_MISSING_PERMISSIONS"}),
        ({"Effect": "Allow", "Action": "*", "Resource": "*"}, set()),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, set()),
    ],
)
def test_permissions_boundary(lab, statement, expected):
    boundary = lab.iam.create_policy(PolicyName="boundary", PolicyDocument=policy(statement))["Policy"]["Arn"]
    lab.iam.put_role_permissions_boundary(RoleName=lab.role, PermissionsBoundary=boundary)
    problems = node_problems(ACCOUNT, REGION, lab.node_a)
    assert codes(problems) == expected
    if expected:
        assert "ssmmessages:CreateControlChannel" in problems[0].message
        assert "ssm:UpdateInstanceInformation" not in problems[0].message


def test_customer_managed_policy_grants_core_actions(lab):
    name = lab.role_with_profile("custom")
    arn = lab.iam.create_policy(
        PolicyName="agent",
        PolicyDocument=policy(
            {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": "arn:aws:ec2:*:*:instance/*"},
            {"Effect": "Allow", "Action": ["ssmmessages:*", "ec2messages:Get*"], "Resource": "*"},
        ),
    )["Policy"]["Arn"]
    lab.iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    assert problems_of(lab, lab.launch(lab.private_a, profile=name)) == set()


def test_resource_level_permissions_do_not_cover_resourceless_actions(lab):
    name = lab.role_with_profile("scoped")
    lab.iam.put_role_policy(
        RoleName=name,
        PolicyName="scoped",
        PolicyDocument=policy({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ec2:*:*:instance/*"}),
    )
    problems = node_problems(ACCOUNT, REGION, lab.launch(lab.private_a, profile=name))
    assert codes(problems) == {"ROLE_MISSING_PERMISSIONS"}
    assert "ssm:UpdateInstanceInformation" not in problems[0].message


def test_imds_disabled(lab):
    node = lab.launch(lab.private_a, MetadataOptions={"HttpEndpoint": "disabled"})
    assert problems_of(lab, node) == {"IMDS_DISABLED"}


# --- Default Host Management Configuration --------------------------------------------------------------


@pytest.fixture
def dhmc(lab):
    lab.iam.create_role(
        RoleName="AWSSystemsManagerDefaultEC2InstanceManagementRole",
        Path="/service-role/",
        AssumeRolePolicyDocument=trust("ssm.amazonaws.com"),
    )
    lab.iam.attach_role_policy(RoleName="AWSSystemsManagerDefaultEC2InstanceManagementRole", PolicyArn=DHMC_POLICY)
    return lab


@pytest.mark.parametrize("tokens, expected", [("required", set()), ("optional", {"DHMC_IMDSV2_NOT_REQUIRED"})])
def test_dhmc_needs_imdsv2(dhmc, tokens, expected):
    node = dhmc.launch(dhmc.private_a, profile=None, MetadataOptions={"HttpTokens": tokens})
    assert problems_of(dhmc, node, DHMC_ROLE) == expected


@pytest.mark.parametrize(
    "role_ref, expected",
    [
        ("AWSSystemsManagerDefaultEC2InstanceManagementRole", set()),
        (f"arn:aws:iam::{ACCOUNT}:role/service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole", set()),
        ("other-path/AWSSystemsManagerDefaultEC2InstanceManagementRole", {"DHMC_ROLE_NOT_FOUND"}),
        ("no-such-role", {"DHMC_ROLE_NOT_FOUND"}),
    ],
)
def test_dhmc_role_reference(dhmc, role_ref, expected):
    node = dhmc.launch(dhmc.private_a, profile=None, MetadataOptions={"HttpTokens": "required"})
    assert problems_of(dhmc, node, role_ref) == expected


def test_dhmc_role_trust_and_permissions(dhmc):
    dhmc.iam.create_role(RoleName="wrong-dhmc", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))
    node = dhmc.launch(dhmc.private_a, profile=None, MetadataOptions={"HttpTokens": "required"})
    assert problems_of(dhmc, node, "wrong-dhmc") == {"DHMC_ROLE_TRUST_POLICY", "DHMC_ROLE_MISSING_PERMISSIONS"}


def test_profile_takes_precedence_over_dhmc(dhmc):
    name = dhmc.role_with_profile("bare")
    node = dhmc.launch(dhmc.private_a, profile=name, MetadataOptions={"HttpTokens": "required"})
    assert problems_of(dhmc, node, DHMC_ROLE) == {"ROLE_MISSING_PERMISSIONS"}


def test_no_profile_without_dhmc_is_reported_as_such(dhmc):
    node = dhmc.launch(dhmc.private_a, profile=None, MetadataOptions={"HttpTokens": "required"})
    assert problems_of(dhmc, node) == {"NO_INSTANCE_PROFILE"}


# --- network: NAT and internet gateway ------------------------------------------------------------------


def test_nat_route_removed(lab):
    lab.isolate(lab.rt_a)
    problems = node_problems(ACCOUNT, REGION, lab.node_a)
    assert codes(problems) == {"NO_ROUTE_TO_INTERNET"}
    assert lab.rt_a in problems[0].message
    assert problems_of(lab, lab.node_b) == set()


def test_nat_gateway_deleted(lab):
    lab.ec2.delete_nat_gateway(NatGatewayId=lab.nat)
    problems = node_problems(ACCOUNT, REGION, lab.node_a)
    assert codes(problems) == {"NAT_GATEWAY_NOT_AVAILABLE"}
    assert lab.nat in problems[0].message
    assert s3_of(lab, lab.node_a) == {"NO_S3_PATH"}


def test_nat_gateway_without_internet(lab):
    lab.isolate(lab.rt_public)
    assert problems_of(lab, lab.node_a) == {"NAT_GATEWAY_NO_INTERNET"}


def test_private_nat_gateway_has_no_internet(lab):
    private_nat = lab.ec2.create_nat_gateway(SubnetId=lab.public, ConnectivityType="private")["NatGateway"]
    lab.ec2.replace_route(
        RouteTableId=lab.rt_a, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=private_nat["NatGatewayId"]
    )
    assert problems_of(lab, lab.node_a) == {"NAT_GATEWAY_NO_INTERNET"}


@pytest.mark.parametrize("public_ip, expected", [(True, set()), (False, {"IGW_WITHOUT_PUBLIC_IP"})])
def test_igw_path(lab, public_ip, expected):
    node = _launch_public(lab, public_ip)
    assert problems_of(lab, node) == expected
    assert s3_of(lab, node) == ({"NO_S3_PATH"} if expected else set())


def _launch_public(lab: Lab, public_ip: bool) -> str:
    reservation = lab.ec2.run_instances(
        ImageId=lab.ami,
        MinCount=1,
        MaxCount=1,
        IamInstanceProfile={"Name": lab.profile},
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": lab.public, "AssociatePublicIpAddress": public_ip}],
    )
    return reservation["Instances"][0]["InstanceId"]


def test_igw_path_with_elastic_ip(lab):
    node = _launch_public(lab, public_ip=False)
    allocation = lab.ec2.allocate_address(Domain="vpc")["AllocationId"]
    lab.ec2.associate_address(AllocationId=allocation, InstanceId=node)
    assert problems_of(lab, node) == set()


def test_route_to_detached_igw(lab):
    lab.ec2.detach_internet_gateway(InternetGatewayId=lab.igw, VpcId=lab.vpc)
    node = _launch_public(lab, public_ip=True)
    assert problems_of(lab, node) == {"NO_ROUTE_TO_INTERNET"}
    assert problems_of(lab, lab.node_a) == {"NAT_GATEWAY_NO_INTERNET"}


def test_main_route_table_used_without_explicit_association(lab):
    subnet = lab.ec2.create_subnet(VpcId=lab.vpc, CidrBlock="10.42.3.0/24", AvailabilityZone=AZ_A)["Subnet"]
    node = lab.launch(subnet["SubnetId"])
    assert problems_of(lab, node) == {"NO_ROUTE_TO_INTERNET"}
    main = lab.ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [lab.vpc]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]["RouteTableId"]
    lab.ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=lab.nat)
    assert problems_of(lab, node) == set()


# --- network: interface endpoints -----------------------------------------------------------------------


@pytest.fixture
def isolated(lab):
    """The baseline with private subnet a cut off from the NAT: only endpoints can help node_a."""
    lab.isolate(lab.rt_a)
    return lab


def test_endpoints_path_ok(isolated):
    isolated.interface_endpoints()
    assert problems_of(isolated, isolated.node_a) == set()


@pytest.mark.parametrize("missing", SSM_SERVICES)
def test_endpoint_missing(isolated, missing):
    isolated.interface_endpoints(services=[s for s in SSM_SERVICES if s != missing])
    problems = node_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"ENDPOINT_MISSING"}
    assert [p.message for p in problems if f"com.amazonaws.{REGION}.{missing}" in p.message]


def test_deleted_endpoint_counts_as_missing(isolated):
    endpoints = isolated.interface_endpoints()
    isolated.ec2.delete_vpc_endpoints(VpcEndpointIds=[endpoints["ec2messages"]])
    assert problems_of(isolated, isolated.node_a) == {"ENDPOINT_MISSING"}


def test_endpoint_private_dns_off(isolated):
    endpoints = isolated.interface_endpoints()
    isolated.backend.vpc_end_points[endpoints["ssmmessages"]].private_dns_enabled = False
    problems = node_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"ENDPOINT_PRIVATE_DNS_OFF"}
    assert endpoints["ssmmessages"] in problems[0].message


@pytest.mark.parametrize(
    "permission",
    [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.42.0.0/16"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.42.2.0/24"}]},
        {"IpProtocol": "udp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ],
)
def test_endpoint_sg_without_443(isolated, permission):
    group = isolated.ec2.create_security_group(GroupName="closed", Description="closed", VpcId=isolated.vpc)
    isolated.ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[permission])
    isolated.interface_endpoints(groups=[group["GroupId"]])
    assert problems_of(isolated, isolated.node_a) == {"ENDPOINT_SG_NO_443"}


@pytest.mark.parametrize(
    "permission",
    [
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": "10.42.1.0/24"}]},
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ],
)
def test_endpoint_sg_with_443(isolated, permission):
    group = isolated.ec2.create_security_group(GroupName="open", Description="open", VpcId=isolated.vpc)
    isolated.ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[permission])
    isolated.interface_endpoints(groups=[group["GroupId"]])
    assert problems_of(isolated, isolated.node_a) == set()


@pytest.mark.parametrize("member, expected", [(True, set()), (False, {"ENDPOINT_SG_NO_443"})])
def test_endpoint_sg_admits_instance_group(isolated, member, expected):
    app = isolated.ec2.create_security_group(GroupName="app", Description="app", VpcId=isolated.vpc)["GroupId"]
    other = isolated.ec2.create_security_group(GroupName="other", Description="other", VpcId=isolated.vpc)["GroupId"]
    endpoint_group = isolated.https_group(UserIdGroupPairs=[{"GroupId": app}])
    isolated.interface_endpoints(groups=[endpoint_group])
    node = isolated.launch(isolated.private_a, SecurityGroupIds=[app if member else other])
    assert problems_of(isolated, node) == expected


def test_endpoint_without_groups_uses_vpc_default_group(isolated):
    """AWS puts such an endpoint in the VPC's default group. AWS's default group admits its own members;
    moto's is created without that rule, so the lab adds it the way AWS has it."""
    for service in SSM_SERVICES:
        isolated.ec2.create_vpc_endpoint(
            VpcId=isolated.vpc,
            ServiceName=f"com.amazonaws.{REGION}.{service}",
            VpcEndpointType="Interface",
            SubnetIds=[isolated.private_a],
        )
    assert problems_of(isolated, isolated.node_a) == {"ENDPOINT_SG_NO_443"}  # moto's bare default group
    default = isolated.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [isolated.vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    isolated.ec2.authorize_security_group_ingress(
        GroupId=default, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": default}]}]
    )
    assert problems_of(isolated, isolated.node_a) == set()  # node_a was launched into the default group
    outsider = isolated.ec2.create_security_group(GroupName="o", Description="o", VpcId=isolated.vpc)["GroupId"]
    assert problems_of(isolated, isolated.launch(isolated.private_a, SecurityGroupIds=[outsider])) == {
        "ENDPOINT_SG_NO_443"
    }


@pytest.mark.parametrize(
    "attribute, expected",
    [("EnableDnsHostnames", {"VPC_DNS_HOSTNAMES_OFF"}), ("EnableDnsSupport", {"VPC_DNS_SUPPORT_OFF"})],
)
def test_vpc_dns_attribute_off(isolated, attribute, expected):
    isolated.interface_endpoints()
    isolated.ec2.modify_vpc_attribute(VpcId=isolated.vpc, **{attribute: {"Value": False}})
    assert problems_of(isolated, isolated.node_a) == expected


def test_vpc_dns_attribute_stored_as_string(isolated):
    isolated.interface_endpoints()
    isolated.backend.vpcs[isolated.vpc].enable_dns_hostnames = "false"
    assert problems_of(isolated, isolated.node_a) == {"VPC_DNS_HOSTNAMES_OFF"}


def test_endpoint_only_in_other_az(isolated):
    isolated.interface_endpoints(subnets=[isolated.private_b])
    problems = node_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"ENDPOINT_NOT_IN_AZ"}
    assert AZ_A in problems[0].message


def test_endpoint_in_both_azs(isolated):
    isolated.interface_endpoints(subnets=[isolated.private_a, isolated.private_b])
    assert problems_of(isolated, isolated.node_a) == set()


def test_every_attempted_path_is_reported(lab):
    """A dead NAT and incomplete endpoints: both paths were attempted, so both are reported."""
    lab.ec2.delete_nat_gateway(NatGatewayId=lab.nat)
    lab.interface_endpoints(services=["ssm", "ssmmessages"])
    assert problems_of(lab, lab.node_a) == {"NAT_GATEWAY_NOT_AVAILABLE", "ENDPOINT_MISSING"}


def test_working_endpoints_make_a_broken_nat_irrelevant(lab):
    lab.ec2.delete_nat_gateway(NatGatewayId=lab.nat)
    lab.interface_endpoints()
    assert problems_of(lab, lab.node_a) == set()


# --- s3 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tables, expected", [("rt_a", set()), ("rt_b", {"NO_S3_PATH"})])
def test_s3_gateway_endpoint(isolated, tables, expected):
    isolated.ec2.create_vpc_endpoint(
        VpcId=isolated.vpc,
        ServiceName=f"com.amazonaws.{REGION}.s3",
        VpcEndpointType="Gateway",
        RouteTableIds=[getattr(isolated, tables)],
    )
    assert s3_of(isolated, isolated.node_a) == expected


def test_s3_interface_endpoint(isolated):
    isolated.interface_endpoints(services=["s3"])
    assert s3_of(isolated, isolated.node_a) == set()


def test_s3_interface_endpoint_without_443(isolated):
    group = isolated.ec2.create_security_group(GroupName="closed", Description="closed", VpcId=isolated.vpc)
    isolated.interface_endpoints(services=["s3"], groups=[group["GroupId"]])
    problems = s3_path_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"NO_S3_PATH"}
    assert "ENDPOINT_SG_NO_443" in problems[0].message


def test_no_s3_path(isolated):
    isolated.interface_endpoints()  # SSM reachable through endpoints, S3 not
    assert problems_of(isolated, isolated.node_a) == set()
    problems = s3_path_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"NO_S3_PATH"}
    assert problems[0].prerequisite == "s3"
    assert isolated.node_a in problems[0].message and isolated.rt_a in problems[0].message


# --- endpoint policies ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def role_policies(tmp_path_factory):
    """The vpc_endpoints role's policies (plugins/filter/vpc_endpoints.py of this tree, by its collection name)."""
    return collection_filter(tmp_path_factory.mktemp("collection"), "vpc_endpoints")


def with_policy(lab: Lab, endpoint_id: str, document: dict) -> None:
    lab.ec2.modify_vpc_endpoint(VpcEndpointId=endpoint_id, PolicyDocument=json.dumps(document))


def session_arn(lab: Lab, node: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{lab.role}/{node}"


def test_role_interface_policy_admits_the_node_and_another_account_refuses_it(isolated, role_policies):
    endpoints = isolated.interface_endpoints()
    for endpoint in endpoints.values():
        with_policy(isolated, endpoint, role_policies.interface_policy(ACCOUNT))
    assert problems_of(isolated, isolated.node_a) == set()

    with_policy(isolated, endpoints["ssmmessages"], role_policies.interface_policy("210987654321"))
    problems = node_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"ENDPOINT_POLICY_DENIES"}
    assert problems[0].prerequisite == "network"
    message = problems[0].message
    assert f"interface endpoint {endpoints['ssmmessages']} (ssmmessages) refuses ssmmessages:CreateControlChannel, " \
           "ssmmessages:CreateDataChannel, ssmmessages:OpenControlChannel, ssmmessages:OpenDataChannel" in message
    assert (f"User: {session_arn(isolated, isolated.node_a)} is not authorized to perform: "
            "ssmmessages:CreateControlChannel on resource: * because no VPC endpoint policy allows the "
            "ssmmessages:CreateControlChannel action") in message


def test_endpoint_policy_explicit_deny_names_the_instance(isolated):
    """A Deny on one instance's ARN refuses that instance only; the other (through the NAT, but private DNS sends
    the VPC's ssm traffic to the endpoint all the same) is judged by the same policy and let through."""
    endpoints = isolated.interface_endpoints(subnets=[isolated.private_a, isolated.private_b])
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{isolated.node_a}"
    with_policy(isolated, endpoints["ssm"], {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "ssm:Update*",
         "Resource": arn}]})
    problems = node_problems(ACCOUNT, REGION, isolated.node_a)
    assert codes(problems) == {"ENDPOINT_POLICY_DENIES"}
    assert (f"ssm:UpdateInstanceInformation on resource: {arn} with an explicit deny in a VPC endpoint "
            "policy") in problems[0].message
    assert problems_of(isolated, isolated.node_b) == set()


@pytest.mark.parametrize("principal, refused", [
    ({"AWS": ACCOUNT}, False),
    ({"AWS": "arn:aws:iam::123456789012:role/ssm-node"}, False),
    ({"AWS": "arn:aws:iam::123456789012:role/someone-else"}, True),
    ({"Service": "ssm.amazonaws.com"}, True),
])
def test_endpoint_policy_principals(lab, principal, refused):
    """The policy applies with a NAT route too (private DNS sends the traffic to the endpoint); its Principal
    names the role, the account, or someone else."""
    endpoints = lab.interface_endpoints()
    with_policy(lab, endpoints["ec2messages"], {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": principal, "Action": "ec2messages:*", "Resource": "*"}]})
    assert problems_of(lab, lab.node_a) == ({"ENDPOINT_POLICY_DENIES"} if refused else set())


def test_endpoint_without_private_dns_guards_nothing(lab):
    """Without private DNS the agent resolves the service's public name and leaves through the NAT."""
    endpoints = lab.interface_endpoints()
    for endpoint in endpoints.values():
        with_policy(lab, endpoint, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]})
        lab.backend.vpc_end_points[endpoint].private_dns_enabled = False
    assert problems_of(lab, lab.node_a) == set()


def test_role_gateway_policy_guards_the_nodes_s3_requests(isolated, role_policies):
    gateway = isolated.ec2.create_vpc_endpoint(
        VpcId=isolated.vpc, ServiceName=f"com.amazonaws.{REGION}.s3", VpcEndpointType="Gateway",
        RouteTableIds=[isolated.rt_a],
        PolicyDocument=json.dumps(role_policies.gateway_policy(REGION, ["fleet-transcripts"])))["VpcEndpoint"]

    def denial(node, action, resource, who=None):
        return reachability.endpoint_denial(ACCOUNT, REGION, node, "s3", action, resource, who=who)

    assert denial(isolated.node_a, "s3:PutObject", "arn:aws:s3:::fleet-transcripts/sessions/s-1.log") is None
    assert denial(isolated.node_a, "s3:GetObject", f"arn:aws:s3:::amazon-ssm-{REGION}/latest/VERSION") is None
    refused = denial(isolated.node_a, "s3:PutObject", "arn:aws:s3:::elsewhere/s-1.log")
    assert refused.endpoint_id == gateway["VpcEndpointId"]
    assert refused.message(quoted=True) == (
        f'User: {session_arn(isolated, isolated.node_a)} is not authorized to perform: s3:PutObject on resource: '
        '"arn:aws:s3:::elsewhere/s-1.log" because no VPC endpoint policy allows the s3:PutObject action')
    assert denial(isolated.node_a, "s3:PutObject", f"arn:aws:s3:::amazon-ssm-{REGION}/x") is not None
    # A presigned URL is judged with its signer's identity; node_b leaves through the NAT, past no endpoint.
    signer = reachability.endpoint_policy.from_caller(f"arn:aws:iam::{ACCOUNT}:user/alice", "AIDAALICE")
    assert denial(isolated.node_a, "s3:GetObject", "arn:aws:s3:::elsewhere/k", who=signer).principal is signer
    assert denial(isolated.node_b, "s3:PutObject", "arn:aws:s3:::elsewhere/s-1.log") is None


# --- robustness and the matcher ---------------------------------------------------------------------------


def test_unexpected_shape_becomes_lab_internal(lab, monkeypatch):
    monkeypatch.delenv("SSM_LAB_STRICT")

    def broken(*_args):
        raise AttributeError("'Route' object has no attribute 'nat_gateway'")

    monkeypatch.setattr(reachability, "_network_problems", broken)
    problems = node_problems(ACCOUNT, REGION, lab.node_a)
    assert [(p.prerequisite, p.code) for p in problems] == [("network", "LAB_INTERNAL")]
