# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The vpc_endpoints cost filters: how many NAT gateways and endpoints are counted, the arithmetic, the lines."""

import pytest

from ansible_collections.bastionless.ssm.plugins.filter import vpc_endpoints as ve

PRICE = {"nat_gateway_hour": 0.045, "nat_gateway_gb": 0.045, "interface_endpoint_hour": 0.01,
         "interface_endpoint_gb": 0.01}
SUBNETS = {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b", "subnet-c": "us-east-1a"}
SERVICES = ["ssm", "ssmmessages", "ec2messages", "ssm"]


def paths(*nats):
    """NAT paths of the three subnets: a NAT gateway id each, or None for a subnet without a NAT path."""
    return {subnet: {"ok": nat is not None, "nat_gateway_id": nat or ""} for subnet, nat in zip(SUBNETS, nats)}


@pytest.mark.parametrize("nat_paths, count, nats", [
    (paths(None, None, None), 0, 2),  # no NAT path: one per zone (two zones among three subnets)
    (paths("nat-1", "nat-1", "nat-1"), 0, 1),  # every subnet through one NAT gateway: that one
    (paths("nat-1", "nat-2", "nat-1"), 0, 2),
    (paths("nat-1", None, "nat-1"), 0, 2),  # a subnet without: one per zone again
    (paths("nat-1", "nat-1", "nat-1"), 3, 3),  # as many as asked
])
def test_the_nat_gateways_counted(nat_paths, count, nats):
    estimate = ve.cost_estimate(PRICE, SUBNETS, nat_paths, SERVICES, nat_gateway_count=count)
    assert estimate["modes"]["nat"]["detail"].startswith(f"{nats} NAT gateway(s) x $0.045/h x 730 h")
    assert estimate["modes"]["nat"]["monthly"] == round(nats * 0.045 * 730, 2)


def test_endpoints_per_service_and_zone_and_the_data():
    estimate = ve.cost_estimate(PRICE, SUBNETS, paths(None, None, None), SERVICES, monthly_gb=100, mode="both",
                                region="us-east-1", prices_taken="2026-11")
    assert estimate["modes"]["endpoints"] == {
        "monthly": 44.8,  # 3 services x 2 zones x $0.01 x 730 h + 100 GB x $0.01
        "detail": "3 interface endpoints x 2 AZ(s) x $0.01/h x 730 h + 100 GB x $0.01; s3 gateway endpoint free"}
    assert estimate["modes"]["nat"]["monthly"] == 70.2 and estimate["modes"]["both"]["monthly"] == 115.0
    assert estimate["added_monthly"] == 44.8
    assert {k: estimate[k] for k in ("region", "currency", "prices_taken", "hours_per_month", "monthly_gb",
                                     "availability_zones", "nat_gateway_present", "mode")} == {
        "region": "us-east-1", "currency": "USD", "prices_taken": "2026-11", "hours_per_month": 730,
        "monthly_gb": 100, "availability_zones": 2, "nat_gateway_present": False, "mode": "both"}


def test_nat_mode_adds_nothing_and_no_s3_gateway_is_not_called_free():
    estimate = ve.cost_estimate(PRICE, SUBNETS, paths("nat-1", "nat-1", "nat-1"), SERVICES, mode="nat",
                                s3_gateway=False)
    assert estimate["added_monthly"] == 0.0 and estimate["nat_gateway_present"] is True
    assert not estimate["modes"]["endpoints"]["detail"].endswith("free")


def test_the_lines_as_printed():
    estimate = ve.cost_estimate(PRICE, {"subnet-a": "us-east-1a"}, {"subnet-a": {"ok": True, "nat_gateway_id": "n"}},
                                ["ssm", "ssmmessages", "ec2messages"], region="us-east-1", prices_taken="2026-11")
    assert ve.cost_lines(estimate) == [
        "Monthly cost estimate, us-east-1, USD, prices of 2026-11:",
        "  nat       $   32.85  1 NAT gateway(s) x $0.045/h x 730 h + 0 GB x $0.045  (present: SSM adds nothing)",
        "  endpoints $   21.90  3 interface endpoints x 1 AZ(s) x $0.01/h x 730 h + 0 GB x $0.01; s3 gateway endpoint "
        "free",
        "  both      $   54.75  NAT gateways and interface endpoints side by side; SSM traffic takes the endpoints",
        "Chosen: endpoints; it adds $21.90 a month to what exists.",
    ]


# --- NAT paths ----------------------------------------------------------------------------------------------------

TABLES = [
    {"id": "rtb-a", "associations": [{"subnet_id": "subnet-a", "main": False}],
     "routes": [{"destination_cidr_block": "10.0.0.0/16", "gateway_id": "local"},
                {"destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-1"}]},
    {"id": "rtb-b", "associations": [{"subnet_id": "subnet-b", "main": False}],
     "routes": [{"destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-2"}]},
    {"id": "rtb-gone", "associations": [{"subnet_id": "subnet-d", "main": False}],
     "routes": [{"destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-9"}]},
    {"id": "rtb-main", "associations": [{"main": True}],
     "routes": [{"destination_cidr_block": "0.0.0.0/0", "gateway_id": "igw-1"},
                {"destination_cidr_block": "10.0.0.0/16", "gateway_id": "local"}]},
]
NATS = [{"nat_gateway_id": "nat-1", "state": "available"}, {"nat_gateway_id": "nat-2", "state": "pending"}]


def test_each_subnet_by_its_own_table_else_the_main_one():
    found = ve.nat_paths({"subnet-c": "us-east-1c", "subnet-a": "us-east-1a", "subnet-b": "us-east-1b",
                          "subnet-d": "us-east-1d"}, TABLES, NATS, order=["subnet-a", "subnet-b", "subnet-c", "subnet-d"])
    assert list(found) == ["subnet-a", "subnet-b", "subnet-c", "subnet-d"]
    assert found["subnet-a"] == {"availability_zone": "us-east-1a", "route_table_id": "rtb-a",
                                 "nat_gateway_id": "nat-1", "nat_gateway_state": "available", "ok": True}
    assert (found["subnet-b"]["nat_gateway_state"], found["subnet-b"]["ok"]) == ("pending", False)
    assert found["subnet-c"] == {"availability_zone": "us-east-1c", "route_table_id": "rtb-main",
                                 "nat_gateway_id": "", "nat_gateway_state": "", "ok": False}  # an IGW is no NAT path
    assert (found["subnet-d"]["nat_gateway_state"], found["subnet-d"]["ok"]) == ("missing", False)


def test_no_table_at_all():
    assert ve.nat_paths({"subnet-x": "z"}, [], []) == {"subnet-x": {
        "availability_zone": "z", "route_table_id": "", "nat_gateway_id": "", "nat_gateway_state": "", "ok": False}}
