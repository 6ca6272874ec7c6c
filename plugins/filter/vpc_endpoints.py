# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The vpc_endpoints role's computations: each subnet's path to a NAT gateway, and what each way to Session Manager
(a NAT gateway, interface endpoints, both) costs a month in a region, with the lines the role prints. Each filter's documentation is in the .yml file of
its name beside this one."""

from __future__ import annotations

HOURS_PER_MONTH = 730


def cost_estimate(price: dict, subnets: dict, nat_paths: dict, services: list, mode: str = "endpoints",
                  nat_gateway_count: int = 0, monthly_gb=0, s3_gateway: bool = True, region: str = "",
                  prices_taken: str = "", hours: int = HOURS_PER_MONTH) -> dict:
    """The monthly cost of each mode, and what the chosen one adds to the bill.

    ``price``: the region's nat_gateway_hour, nat_gateway_gb, interface_endpoint_hour and interface_endpoint_gb (USD).
    ``subnets``: subnet id to availability zone. ``nat_paths``: subnet id to {ok, nat_gateway_id} (the NAT path of
    each subnet). ``services``: the interface endpoints (repeats count once). NAT gateways: as many as
    ``nat_gateway_count``, else those the subnets already use when every subnet has a NAT path, else one per zone
    (the highly available layout). The role never creates a NAT gateway, so with one in place the nat mode adds
    nothing."""
    zones = len(set(subnets.values()))
    nat_ok = bool(nat_paths) and all(path.get("ok") for path in nat_paths.values())
    in_use = len({path.get("nat_gateway_id") for path in nat_paths.values() if path.get("ok")})
    nats = nat_gateway_count if nat_gateway_count > 0 else (in_use if nat_ok else zones)
    interfaces = len(set(services))
    hours = int(hours)
    nat_cost = round(nats * price["nat_gateway_hour"] * hours + monthly_gb * price["nat_gateway_gb"], 2)
    endpoint_cost = round(interfaces * zones * price["interface_endpoint_hour"] * hours
                          + monthly_gb * price["interface_endpoint_gb"], 2)
    return {
        "region": region,
        "currency": "USD",
        "prices_taken": prices_taken,
        "hours_per_month": hours,
        "monthly_gb": monthly_gb,
        "availability_zones": zones,
        "nat_gateway_present": nat_ok,
        "mode": mode,
        "modes": {
            "nat": {"monthly": float(nat_cost),
                    "detail": f"{nats} NAT gateway(s) x ${price['nat_gateway_hour']}/h x {hours} h + {monthly_gb} GB "
                              f"x ${price['nat_gateway_gb']}"},
            "endpoints": {"monthly": float(endpoint_cost),
                          "detail": f"{interfaces} interface endpoints x {zones} AZ(s) x "
                                    f"${price['interface_endpoint_hour']}/h x {hours} h + {monthly_gb} GB x "
                                    f"${price['interface_endpoint_gb']}"
                                    + ("; s3 gateway endpoint free" if s3_gateway else "")},
            "both": {"monthly": round(nat_cost + endpoint_cost, 2),
                     "detail": "NAT gateways and interface endpoints side by side; SSM traffic takes the endpoints"},
        },
        "added_monthly": 0.0 if mode == "nat" else float(endpoint_cost),
    }


def cost_lines(estimate: dict) -> list:
    """The estimate as the role prints it: a heading, one line per mode, and what the chosen mode adds."""
    modes = estimate["modes"]
    present = "  (present: SSM adds nothing)" if estimate["nat_gateway_present"] else ""
    return [
        f"Monthly cost estimate, {estimate['region']}, USD, prices of {estimate['prices_taken']}:",
        f"  nat       ${modes['nat']['monthly']:8.2f}  {modes['nat']['detail']}{present}",
        f"  endpoints ${modes['endpoints']['monthly']:8.2f}  {modes['endpoints']['detail']}",
        f"  both      ${modes['both']['monthly']:8.2f}  {modes['both']['detail']}",
        f"Chosen: {estimate['mode']}; it adds ${float(estimate['added_monthly']):.2f} a month to what exists.",
    ]


def _table_of(subnet: str, route_tables: list) -> dict:
    """The route table a subnet uses: the one associated with it, else the VPC's main table ({} when none)."""
    main = {}
    for table in route_tables:
        for association in table.get("associations") or ():
            if association.get("subnet_id") == subnet:
                return table
            if association.get("main"):
                main = table
    return main


def nat_paths(subnets: dict, route_tables: list, nat_gateways: list, order=None) -> dict:
    """Each subnet's path to a NAT gateway: subnet id to availability_zone, route_table_id, nat_gateway_id (of its
    0.0.0.0/0 route, "" when there is none), nat_gateway_state ("missing" for a gateway that does not exist, "" when
    there is no such route) and ok (a route to an available NAT gateway).

    ``subnets``: subnet id to availability zone. ``route_tables``: the VPC's route tables and ``nat_gateways`` its
    NAT gateways, as amazon.aws.ec2_vpc_route_table_info and ec2_vpc_nat_gateway_info return them. ``order``: the
    subnet ids in the order to list them (default: that of ``subnets``)."""
    states = {gateway.get("nat_gateway_id"): gateway.get("state") for gateway in nat_gateways or ()}
    paths = {}
    for subnet in order or subnets:
        zone = subnets[subnet]
        table = _table_of(subnet, route_tables or [])
        nat = next((route.get("nat_gateway_id") for route in table.get("routes") or ()
                    if route.get("destination_cidr_block") == "0.0.0.0/0" and route.get("nat_gateway_id")), "")
        paths[subnet] = {"availability_zone": zone, "route_table_id": table.get("id", ""), "nat_gateway_id": nat,
                         "nat_gateway_state": states.get(nat, "missing") if nat else "",
                         "ok": bool(nat) and states.get(nat) == "available"}
    return paths


class FilterModule:
    """The vpc_endpoints filters."""

    def filters(self):
        return {"vpc_endpoints_cost_estimate": cost_estimate, "vpc_endpoints_cost_lines": cost_lines,
                "vpc_endpoints_nat_paths": nat_paths}
