"""The lab's pyproject lists its packages (so that an editable install is a plain path entry, with no warning):
every package directory under ssm_lab is listed, and nothing else."""

import pathlib
import tomllib

LAB = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    listed = tomllib.loads((LAB / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = sorted(".".join(init.parent.relative_to(LAB).parts) for init in (LAB / "ssm_lab").rglob("__init__.py"))
    assert sorted(listed) == found
