"""bastionless.ssm.run_as_users's tests (test_role_run_as_users.py) as they are, with bastionless.ssm.session as the
nodes' connection."""

from session_connection import session_connection  # noqa: F401 pylint: disable=unused-import
from test_role_run_as_users import *  # noqa: F401,F403 pylint: disable=wildcard-import,unused-wildcard-import
