"""The lab's pyproject lists its packages (so that an editable install is a plain path entry, with no warning):
every package directory under ssm_lab is listed, and nothing else. The IAM users ``ssm-lab up`` makes are those
inventories/lab maps."""

import pathlib
import subprocess
import tomllib

import yaml
from ssm_lab import common
from ssm_lab.harness import testing

LAB = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    listed = tomllib.loads((LAB / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = sorted(".".join(init.parent.relative_to(LAB).parts) for init in (LAB / "ssm_lab").rglob("__init__.py"))
    assert sorted(listed) == found


def test_ssm_lab_up_makes_the_iam_users_the_lab_inventory_maps_and_no_other():
    """operator_access (in site.yml) refuses to map or grant to an IAM user that does not exist: ssm-lab up makes
    exactly those inventories/lab names, the Run As map's and the operator groups' (the docs runner's README run
    checks that site.yml then passes and that up says so)."""
    settings = yaml.safe_load((LAB.parents[1] / "inventories" / "lab" / "group_vars" / "all.yml").read_text())
    named = set(settings["operator_access_run_as"])
    named |= {user for group in settings["operator_access_groups"] for user in group.get("iam_users", [])}
    assert sorted(common.LAB_IAM_USERS) == sorted(named)


def test_ssm_lab_up_refuses_a_name_iam_refuses_before_starting_anything(tmp_path):
    result = subprocess.run([testing.SSM_LAB, "--state-dir", str(tmp_path), "up", "--iam-users", "alice,Alice Smith"],
                            capture_output=True, text=True, env=testing.clean_environ(), timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "argument --iam-users: 'Alice Smith' is not an IAM user name (1 to 64 letters, digits and +=,.@_-); " \
           "give names separated by commas, e.g. alice,moto, or --no-iam-users for none" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_ssm_lab_up_without_the_tools_its_nodes_need_fails_the_eval_too(tmp_path):
    """Without /usr/sbin on PATH (chroot) ``up`` names what is missing and the fix, starts nothing, and prints
    ``false`` on stdout, so that ``eval "$(ssm-lab up)"`` fails rather than going on without the lab."""
    result = subprocess.run([testing.SSM_LAB, "--state-dir", str(tmp_path), "up", "--nodes", "1"],
                            capture_output=True, text=True, env={**testing.clean_environ(), "PATH": "/usr/bin:/bin"},
                            timeout=60, check=False)
    assert (result.returncode, result.stdout) == (2, "false\n"), result.stderr
    assert "chroot not found on PATH (/usr/bin:/bin)" in result.stderr and "add /usr/sbin to PATH" in result.stderr
    assert list(tmp_path.iterdir()) == []
    shell = subprocess.run(["bash", "-c", f'eval "$({testing.SSM_LAB} --state-dir {tmp_path} up --nodes 1)"'],
                           capture_output=True, text=True, env={**testing.clean_environ(), "PATH": "/usr/bin:/bin"},
                           timeout=60, check=False)
    assert shell.returncode == 1, shell.stderr
