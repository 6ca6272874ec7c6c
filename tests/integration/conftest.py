import pytest
from ssm_lab.testing import Lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("lab"), "--nodes", "3", "--provisioned").up()
    yield lab
    lab.down()
