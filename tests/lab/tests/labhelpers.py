"""Helpers the lab tests share (a plain module, so that test files import it by a name no other suite uses)."""

from __future__ import annotations

import importlib
import json
import sys

from ssm_lab.collection import REPOSITORY
from ssm_lab.harness.testing import wait_until

__all__ = ["build_nat_path", "collection_filter", "trust_policy", "wait_until"]


def collection_filter(base, name: str):
    """``plugins/filter/<name>.py`` of this working tree, imported by its collection name
    (``ansible_collections.bastionless.ssm.plugins.filter.<name>``) through a link to the tree made under ``base``,
    a fresh directory."""
    link = base / "ansible_collections" / "bastionless" / "ssm"
    link.parent.mkdir(parents=True)
    link.symlink_to(REPOSITORY)
    sys.path.insert(0, str(base))
    try:
        return importlib.import_module(f"ansible_collections.bastionless.ssm.plugins.filter.{name}")
    finally:
        sys.path.remove(str(base))


def trust_policy(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def build_nat_path(lab) -> dict:
    """An internet gateway, a public route table for the public subnet, a NAT gateway there, and a 0.0.0.0/0
    route to it in the first private route table (the one of lab-node-1). Returns the ids."""
    ec2, vpc = lab.ec2, lab.network["vpc"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_table, SubnetId=lab.network["public_subnet"])
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=lab.network["public_subnet"], AllocationId=allocation)
    nat_id = nat["NatGateway"]["NatGatewayId"]
    private_table = lab.network["private"][0]["route_table"]
    ec2.create_route(RouteTableId=private_table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat_id)
    return {"igw": igw, "nat": nat_id, "public_table": public_table, "route_table": private_table}
