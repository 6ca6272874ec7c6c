# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The bounds on the modules' AWS calls (ssm_tunnel, ssm_command): the botocore settings that end one call, its
attempts and botocore's backoff within a number of seconds, and a real botocore client held to them by an endpoint
that takes requests and never answers."""

import socket
import threading
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.bastionless.ssm.plugins.module_utils import _aws_bounds as bounds


def worst_case(settings: dict) -> float:
    """The longest one call may take under the settings: every attempt connects and reads to its timeout."""
    attempts = settings["attempts"]
    return attempts * (settings["connect_timeout"] + settings["read_timeout"]) + bounds.most_backoff(attempts)


@pytest.mark.parametrize("seconds", [1, 3, 10, 11, 30, 60, 600])
@pytest.mark.parametrize("attempts", [1, 3, 10])
def test_a_call_ends_within_its_seconds_whatever_the_attempts_asked(seconds, attempts):
    settings = bounds.call_settings(seconds, attempts)
    assert 1 <= settings["attempts"] <= attempts
    assert worst_case(settings) <= seconds + 0.01, settings
    assert settings["connect_timeout"] <= bounds.MAX_CONNECT_SECONDS
    if settings["attempts"] > 1:  # every attempt keeps a useful share of the time
        assert settings["connect_timeout"] + settings["read_timeout"] >= bounds.MIN_ATTEMPT_SECONDS - 0.01


def test_attempts_are_dropped_only_when_the_time_does_not_allow_them():
    assert bounds.call_settings(3, 3)["attempts"] == 1
    assert bounds.call_settings(30, 3) == {"attempts": 3, "connect_timeout": 3.0, "read_timeout": 6.0}
    assert bounds.call_settings(30, 10)["attempts"] == 4  # 1 + 2 + 4 s of backoff, 5.75 s an attempt
    assert bounds.call_settings(600, 10)["attempts"] == 10
    assert bounds.most_backoff(1) == 0 and bounds.most_backoff(3) == 3 and bounds.most_backoff(8) == 1 + 2 + 4 + 8 + 16 + 20 + 20


def test_the_users_aws_config_is_kept_within_the_bound():
    user = {"retries": {"mode": "adaptive", "total_max_attempts": 10}, "proxies": {"https": "http://proxy:3128"},
            "read_timeout": 2}
    config = bounds.bounded_aws_config(user, 30)
    assert config["retries"] == {"mode": "adaptive", "total_max_attempts": 4}
    assert config["proxies"] == user["proxies"] and config["read_timeout"] == 2  # shorter than ours: kept
    assert config["connect_timeout"] == bounds.call_settings(30, 10)["connect_timeout"]
    assert user["retries"]["total_max_attempts"] == 10  # the module's parameter is not changed
    # botocore's max_attempts does not count the first attempt; total_max_attempts does
    assert bounds.bounded_aws_config({"retries": {"max_attempts": 2}}, 600)["retries"] == {
        "mode": "standard", "total_max_attempts": 3}
    assert bounds.bounded_aws_config(None, 3) == {"connect_timeout": 1.0, "read_timeout": 2.0,
                                                  "retries": {"mode": "standard", "total_max_attempts": 1}}


def test_a_deadline_counts_down_and_passes():
    now = [100.0]
    deadline = bounds.Deadline(5, clock=lambda: now[0])
    assert deadline.left() == 5 and not deadline.passed()
    now[0] = 104.5
    assert deadline.left() == 0.5
    now[0] = 106
    assert deadline.left() == 0 and deadline.passed()


def test_the_message_names_the_call_the_option_and_the_fix():
    assert bounds.slow_endpoint("StartSession to i-0123456789abcdef0 in us-east-1", 3, "wait_timeout",
                                "https://ssm.us-east-1.amazonaws.com") == (
        "StartSession to i-0123456789abcdef0 in us-east-1 did not answer within 3 s (wait_timeout): the Systems "
        "Manager endpoint https://ssm.us-east-1.amazonaws.com is slow or unreachable. Check the network path to it "
        "(proxy, VPC endpoint) or raise wait_timeout.")


class SilentEndpoint:
    """A TCP server that reads requests and never answers, as an endpoint that stops answering does."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests = 0
        self.connections = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _peer = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection):
        try:
            while True:
                data = connection.recv(65536)
                if not data:
                    return
                if b"HTTP/1.1" in data:
                    self.requests += 1
        except OSError:
            return

    def close(self):
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent():
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


def test_a_real_client_gives_up_on_an_endpoint_that_does_not_answer(silent):
    config = bounds.bounded_aws_config({"retries": {"mode": "standard", "total_max_attempts": 10}}, 3)
    client = boto3.session.Session().client(
        "ssm", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{silent.port}", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret", config=botocore.config.Config(**config))
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError) as raised:
        client.start_session(Target="i-0123456789abcdef0")
    elapsed = time.monotonic() - started
    assert silent.requests == 1  # one attempt: the 3 s do not allow a second
    # unbounded, botocore would wait 60 s an attempt, 10 times
    assert elapsed < 3 + 10, elapsed
    assert bounds.is_timeout(raised.value)
    wrapped = AnsibleAWSError(message="Failed to start session", exception=raised.value)
    assert bounds.is_timeout(wrapped)
    try:
        raise RuntimeError("the caller's error") from wrapped
    except RuntimeError as error:
        assert bounds.is_timeout(error)
    assert not bounds.is_timeout(AnsibleAWSError(message="Failed", exception=ValueError("no")))
    assert not bounds.is_timeout(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))


def test_a_detached_call_answers_in_time_or_raises_its_error():
    assert bounds.call_detached(lambda: {"SessionId": "s-1"}, 10, lambda late: None) == {"SessionId": "s-1"}

    def refused():
        raise botocore.exceptions.ClientError({"Error": {"Code": "TargetNotConnected", "Message": "i-0 is not connected"}},
                                              "StartSession")

    with pytest.raises(botocore.exceptions.ClientError, match="TargetNotConnected"):
        bounds.call_detached(refused, 10, lambda late: None)


def test_a_late_result_is_undone_when_it_arrives_after_the_caller_gave_up(tmp_path):
    undone = tmp_path / "undone"

    def slow():
        time.sleep(1.0)
        return {"SessionId": "s-late"}

    def undo(late):
        undone.write_text(late["SessionId"])

    with pytest.raises(bounds.Late):
        bounds.call_detached(slow, 0.2, undo)
    assert not undone.exists()  # the caller did not wait for the call
    deadline = time.monotonic() + 20
    while not undone.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert undone.read_text() == "s-late"


def test_a_detached_call_reads_long_enough_to_receive_a_late_answer():
    retries = {"mode": "standard", "total_max_attempts": 10}
    assert bounds.detached_aws_config({"retries": retries}, 64) == {"retries": retries, "read_timeout": 64,
                                                                    "connect_timeout": bounds.MAX_CONNECT_SECONDS}
    assert bounds.detached_aws_config({"read_timeout": 300, "connect_timeout": 2}, 64) == {"read_timeout": 300,
                                                                                           "connect_timeout": 2}
