"""Benchmark: ``ansible-inventory --list`` with bastionless.ssm.managed_nodes and with amazon.aws.aws_ec2
(``use_ssm_inventory: true``, the way to get SSM facts without this collection), in the same run, against a
lab with its API latency model on.

    python tests/benchmarks/inventory.py                     # fleets of 1,000 and 10,000 (+ 500 hybrid nodes)
    python tests/benchmarks/inventory.py --sizes 100         # a quick run
    make bench-inventory BENCH_ARGS="--sizes 1000 --repeat 2"

For every fleet size it starts a lab of its own (``ssm-lab up --records N --hybrid-records H``: EC2 instances
registered in SSM and hybrid nodes, with no agent process), turns the latency model on (``api_delay``, 0.1 s per
AWS call by default) and runs each inventory; then prints, per plugin, the wall time, the AWS API calls the lab
counted (by action), the peak memory (maximum resident set) of the ansible-inventory process, its CPU time (user +
system: on a busy machine it varies less than the wall time) and the hosts it listed, and the ratios
aws_ec2 / managed_nodes. It asserts nothing: the figures are for people to read.

aws_ec2's configuration is the lab's (docs/examples/lab.aws_ec2.yml: instances tagged ``ssm-lab=node``, running,
named by instance id, the SSM connection wired with ``compose``) plus ``use_ssm_inventory: true``; ours is the
two lines a user writes (plugin, region). Both list every EC2 instance of the fleet; managed_nodes also lists the
hybrid nodes, which aws_ec2 cannot see. Before the
measured runs the lab renders every instance once (moto renders an instance in milliseconds, and the lab keeps
the XML until EC2 changes; AWS has no such warm-up), so neither plugin pays for the lab's first render.

Needs root (the lab), ansible with amazon.aws on PATH, and bastionless.ssm on ANSIBLE_COLLECTIONS_PATH
(``make bench-inventory`` does both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

from ssm_lab.harness.testing import running_lab  # noqa: E402

LAB_AWS_EC2 = os.path.join(ROOT, "docs", "examples", "lab.aws_ec2.yml")
UP_TIMEOUT = 1800  # registering 10,000 records takes about a minute on a laptop


def _calls(lab, reset: bool = False) -> dict:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/calls", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _configs(directory: str) -> dict:
    """The two inventory configurations: ours as a user would write it, aws_ec2 as docs/examples/lab.aws_ec2.yml has it."""
    ours = os.path.join(directory, "bench.managed_nodes.yml")
    with open(ours, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"plugin": "bastionless.ssm.managed_nodes", "regions": ["us-east-1"]}, handle)
    with open(LAB_AWS_EC2, encoding="utf-8") as handle:
        baseline_config = yaml.safe_load(handle)
    baseline_config["use_ssm_inventory"] = True
    baseline = os.path.join(directory, "bench.aws_ec2.yml")
    with open(baseline, "w", encoding="utf-8") as handle:
        yaml.safe_dump(baseline_config, handle)
    return {"managed_nodes": ours, "aws_ec2": baseline}


def _warm(lab) -> None:
    ec2 = lab.client("ec2")
    for _page in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 1000}):
        pass


def measure(lab, source: str, directory: str) -> dict:
    """One ``ansible-inventory --list``: wall time, API calls, peak RSS of that process, hosts listed."""
    output = os.path.join(directory, "out.json")
    errors = os.path.join(directory, "stderr.txt")
    _calls(lab, reset=True)
    with open(errors, "w", encoding="utf-8") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(["ansible-inventory", "-i", source, "--list", "--output", output],
                                   stdout=subprocess.DEVNULL, stderr=stderr, cwd=directory,
                                   env=lab.environ(ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true"))
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    counted = _calls(lab)
    if process.returncode != 0:
        with open(errors, encoding="utf-8") as handle:
            raise RuntimeError(f"ansible-inventory -i {source} failed:\n{handle.read()[-3000:]}")
    with open(output, encoding="utf-8") as handle:
        hosts = len(json.load(handle)["_meta"]["hostvars"])
    os.unlink(output)
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "calls": counted["total"],
            "by_action": counted["calls"], "peak_mib": round(usage.ru_maxrss / 1024, 1), "hosts": hosts}


def bench_size(size: int, hybrids: int, api_delay: float, repeat: int, work: str) -> dict:
    state = tempfile.mkdtemp(prefix=f"lab-{size}-", dir=work)
    print(f"\n== {size} EC2 instances registered in SSM + {hybrids} hybrid nodes ==", flush=True)
    started = time.monotonic()
    with running_lab(state, "--nodes", "0", "--records", str(size), "--hybrid-records", str(hybrids),
                     up_timeout=UP_TIMEOUT) as lab:
        print(f"lab up in {time.monotonic() - started:.0f} s (records registered)", flush=True)
        _warm(lab)
        lab.cli("faults", "--api-delay", str(api_delay))
        configs = _configs(state)
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        for attempt in range(repeat):
            for name, source in configs.items():
                result = measure(lab, source, state)
                runs[name].append(result)
                print(f"  run {attempt + 1}: {name:<14} {result['wall_s']:>8.2f} s  (cpu {result['cpu_s']:>7.2f} s)  "
                      f"{result['calls']:>5} calls  {result['peak_mib']:>8.1f} MiB  {result['hosts']:>6} hosts",
                      flush=True)
    best = {name: min(results, key=lambda r: r["wall_s"]) for name, results in runs.items()}
    return {"size": size, "hybrids": hybrids, "api_delay": api_delay, "best": best, "runs": runs}


def report(results: list[dict]) -> str:
    lines = ["", "ansible-inventory --list, best of the runs, latency model api_delay "
             f"{results[0]['api_delay']} s per call:", ""]
    header = (f"{'fleet':>13}  {'plugin':<14} {'wall s':>8} {'cpu s':>8} {'API calls':>10} {'peak MiB':>9} "
              f"{'hosts':>7}   calls by action")
    lines += [header, "-" * len(header)]
    for result in results:
        fleet = f"{result['size']}+{result['hybrids']}"
        for name, best in result["best"].items():
            actions = ", ".join(f"{k} {v}" for k, v in sorted(best["by_action"].items()))
            lines.append(f"{fleet:>13}  {name:<14} {best['wall_s']:>8.2f} {best['cpu_s']:>8.2f} {best['calls']:>10} "
                         f"{best['peak_mib']:>9.1f} {best['hosts']:>7}   {actions}")
        ours, base = result["best"]["managed_nodes"], result["best"]["aws_ec2"]
        lines.append(f"{'':>13}  {'ratio':<14} {base['wall_s'] / ours['wall_s']:>7.1f}x "
                     f"{base['cpu_s'] / ours['cpu_s']:>7.1f}x {base['calls'] / max(ours['calls'], 1):>9.2f}x "
                     f"{base['peak_mib'] / ours['peak_mib']:>8.2f}x{'':>8}   (aws_ec2 / managed_nodes: above 1 means "
                     "managed_nodes is faster, makes fewer calls, uses less memory)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="1000,10000",
                        help="comma-separated numbers of EC2 instances registered in SSM (default 1000,10000)")
    parser.add_argument("--hybrid", type=int, default=500, help="hybrid (mi-) nodes in every fleet (default 500)")
    parser.add_argument("--api-delay", type=float, default=0.1, help="seconds the lab adds to every API call")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each plugin per size; the best is reported")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--work-dir", help="where the labs keep their state (default: a new temporary directory)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-inventory-")
    results = [bench_size(size, args.hybrid, args.api_delay, max(args.repeat, 1), work) for size in sizes]
    print(report(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
