"""bastionless.ssm.agent's tests (test_role_agent.py) as they are, with bastionless.ssm.session as the nodes'
connection: apt over a persistent session, the agent restarted under it, and a reboot that ends it."""

from session_connection import session_connection  # noqa: F401 pylint: disable=unused-import
from test_role_agent import *  # noqa: F401,F403 pylint: disable=wildcard-import,unused-wildcard-import
