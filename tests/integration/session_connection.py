"""Run a test module's node tasks over bastionless.ssm.session instead of amazon.aws.aws_ssm.

A module that imports ``session_connection`` (an autouse, module-scoped fixture) and another module's tests runs
those tests as they are, with ansible_cli.run adding the connection (see ansible_cli.CONNECTION_ENV)."""

import contextlib
import os

import pytest
from ansible_cli import CONNECTION_ENV

CONNECTION = "bastionless.ssm.session"


@contextlib.contextmanager
def connection_env(value: str):
    """CONNECTION_ENV set to ``value`` while open (``conn`` or ``conn=id,id``), then as it was."""
    before = os.environ.get(CONNECTION_ENV)
    os.environ[CONNECTION_ENV] = value
    try:
        yield value
    finally:
        if before is None:
            os.environ.pop(CONNECTION_ENV, None)
        else:
            os.environ[CONNECTION_ENV] = before


@pytest.fixture(scope="module", autouse=True)
def session_connection():
    with connection_env(CONNECTION):
        yield CONNECTION
