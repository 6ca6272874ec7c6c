"""Run ansible commands from the repository root against a lab and read their play recap."""

import os
import re
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run(lab, *argv, check=True):
    """Run an ansible command from the repository root against the lab; return (output, recap by host)."""
    result = subprocess.run(list(argv), cwd=ROOT, env=lab.environ(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"),
                            capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{output[-6000:]}")
    recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                          "failed": int(m.group(5))} for m in RECAP.finditer(result.stdout)}
    return output, recap
