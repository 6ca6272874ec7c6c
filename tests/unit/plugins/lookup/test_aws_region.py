# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""bastionless.ssm.aws_region: the terms, then the environment, then the profile's configured region."""

import pytest

from ansible_collections.bastionless.ssm.plugins.lookup import aws_region


@pytest.fixture(autouse=True)
def config(tmp_path, monkeypatch):
    """A shared configuration file with a default region and an audit profile; no region in the environment."""
    path = tmp_path / "config"
    path.write_text("[default]\nregion = eu-central-1\n\n[profile audit]\nregion = ap-southeast-2\n\n"
                    "[profile bare]\noutput = json\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "EC2_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_the_first_term_that_is_not_empty_wins():
    assert aws_region.resolve(["", None, " ", "eu-west-1", "us-east-1"], environ={"AWS_REGION": "us-west-2"}) == \
        "eu-west-1"


@pytest.mark.parametrize("environ, expected", [
    ({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "us-east-1"}, "us-west-2"),
    ({"AWS_DEFAULT_REGION": "us-east-1", "EC2_REGION": "sa-east-1"}, "us-east-1"),
    ({"EC2_REGION": "sa-east-1"}, "sa-east-1"),
])
def test_then_the_environment_in_the_order_of_the_aws_modules(environ, expected):
    assert aws_region.resolve(["", None], environ=environ) == expected


def test_then_the_region_of_the_profile_in_use(monkeypatch):
    assert aws_region.resolve([]) == "eu-central-1"
    assert aws_region.resolve([], profile="audit") == "ap-southeast-2"
    monkeypatch.setenv("AWS_PROFILE", "audit")
    assert aws_region.resolve([]) == "ap-southeast-2"


@pytest.mark.parametrize("profile", ["bare", "no-such-profile"])
def test_nothing_configured_is_an_empty_string(profile):
    assert aws_region.resolve([], profile=profile) == ""
