import pytest
from ssm_lab.harness.testing import running_lab

# The longest test modules are collected first (in any run that collects this directory, its hook sorts the whole
# collection). ``make test`` spreads whole test modules over several processes (pytest-xdist, ``--dist loadfile``), handing out
# modules in the order they were collected. A long module handed out last keeps one process busy long after the
# others are done, so the modules below, the longest ones (about a minute or more of lab and playbook runs each),
# go first, longest first; every other module keeps its place after them. The order of tests within a module never
# changes: module-scoped labs and scenarios that build on earlier steps rely on it.
LONGEST_FIRST = (
    "test_site.py",
    "test_role_run_as_users.py",
    "test_role_vpc_endpoints.py",
    "test_role_transfer_bucket.py",
    "test_docs_pages.py",
    "test_role_operator_access.py",
    "test_role_agent.py",
    "test_ssh_over_ssm.py",
    "test_role_instance_role.py",
    "test_module_ssm_preflight.py",
    "test_connection_session.py",
    "test_module_instance_profile_association.py",
    "test_inventory_managed_nodes.py",
    "test_role_session_logging.py",
    "test_module_ssm_tunnel.py",
    "test_module_vpc_endpoint.py",
    "test_module_ssm_command.py",
    "test_module_ssm_session_preferences.py",
    "test_module_ssm_association.py",
    "test_module_ssm_session_info.py",
    "test_reachability.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's own order is kept


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "3", "--provisioned") as lab:
        yield lab
