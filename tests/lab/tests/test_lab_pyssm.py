"""The lab's data channel driven by a client nobody here wrote: pyssm-client (PyPI, Apache-2.0), in its own Python
3.12 virtualenv (make pyssm-venv; make test exports PYSSM_PYTHON), runs a shell command and a multiplexed port
forward through tests/interop/pyssm_check.py. It covers the normal path only (pyssm-client never retransmits and
does not check digests): make interop, with AWS's own plugin, covers the rest."""

from __future__ import annotations

import os
import subprocess

import pytest

PYSSM_PYTHON = os.environ.get("PYSSM_PYTHON", "")
CHECK = os.path.join(os.path.dirname(__file__), "..", "..", "interop", "pyssm_check.py")


@pytest.fixture(scope="module")
def lab(start_lab):
    with start_lab("pyssm-lab", "--nodes", "1", "--provisioned") as lab:
        yield lab


def test_pyssm_client_runs_a_shell_command_and_a_multiplexed_port_forward(lab):
    if not PYSSM_PYTHON:
        pytest.skip("PYSSM_PYTHON is not set: run it with make test (or make pyssm-venv and export PYSSM_PYTHON)")
    assert os.access(PYSSM_PYTHON, os.X_OK), f"PYSSM_PYTHON={PYSSM_PYTHON} is not there: run make pyssm-venv"
    done = subprocess.run([PYSSM_PYTHON, CHECK, "--target", lab.ec2_ids[0]], env=lab.environ(), capture_output=True,
                          text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ok shell" in output and "ok port-forward" in output, output
