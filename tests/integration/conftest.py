import pytest
from ssm_lab.testing import running_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "3", "--provisioned") as lab:
        yield lab
