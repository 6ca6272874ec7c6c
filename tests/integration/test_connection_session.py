"""bastionless.ssm.session against the lab, through the real ansible-playbook: binary files and a file of several MiB
through the session with no bucket, output that is not UTF-8, become, a command that outlives the timeout, an agent
that drops mid-play, two plays at once on one node, and a no_log secret that appears nowhere (S3, CloudWatch, the
session transcripts, the controller's files).

Both transports: the default (native: the master holds the data channel) runs everything; where the master's code
differs by transport (the session's output and input, the end of a session, a deadline), the scenario runs again
with ``transport: plugin`` (the lab's session-manager-plugin on a pty), and -vvv shows which one served it."""

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest
from ansible_cli import RECAP
from ssm_lab.harness.testing import running_lab, wait_until

CONNECTION = "bastionless.ssm.session"
SESSIONS_BUCKET = "session-transcripts"
GROUP = "/session-connection/transcripts"
SSM_LAB = os.path.join(os.path.dirname(sys.executable), "ssm-lab")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--provisioned") as lab:
        # Session logging on (unencrypted destinations are enough here): every session leaves a transcript.
        lab.client("s3").create_bucket(Bucket=SESSIONS_BUCKET)
        lab.client("logs").create_log_group(logGroupName=GROUP)
        content = {"schemaVersion": "1.0", "description": "logged", "sessionType": "Standard_Stream",
                   "inputs": {"s3BucketName": SESSIONS_BUCKET, "s3KeyPrefix": "sessions", "s3EncryptionEnabled": False,
                              "cloudWatchLogGroupName": GROUP, "cloudWatchEncryptionEnabled": False}}
        lab.client("ssm").create_document(Name="SSM-SessionManagerRunShell", DocumentType="Session",
                                          DocumentFormat="JSON", Content=json.dumps(content))
        lab.nodes = sorted(n for n in lab.network["nodes"] if n.startswith("i-"))
        lab.work = tmp_path_factory.mktemp("work")
        lab.control = tmp_path_factory.mktemp("cp")
        lab.local_tmp = tmp_path_factory.mktemp("ltmp")
        yield lab


def play(lab, node, body: str, *extra: str, timeout: float = 300, background: bool = False):
    """ansible-playbook of one play (body: its tasks, YAML) on one node over the session connection."""
    path = lab.work / f"play-{hashlib.sha1((node + body + repr(extra)).encode()).hexdigest()[:10]}.yml"
    path.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n{textwrap.indent(textwrap.dedent(body), '    ')}")
    argv = ["ansible-playbook", "-i", f"{node},", "-c", CONNECTION, str(path),
            "-e", f"ansible_aws_ssm_plugin={lab.env['AWS_SESSION_MANAGER_PLUGIN']}",
            "-e", "ansible_python_interpreter=/usr/bin/python3",
            "-e", f"ansible_aws_ssm_control_path_dir={lab.control}", *extra]
    env = lab.environ(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(lab.local_tmp))
    if background:
        return subprocess.Popen(argv, cwd=str(lab.work), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    # The subprocess timeout is the bound: a run that hangs fails the test.
    result = subprocess.run(argv, cwd=str(lab.work), env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    return result.stdout + result.stderr, _recap(result.stdout)


def _recap(stdout: str) -> dict:
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                         "failed": int(m.group(5))} for m in RECAP.finditer(stdout)}


def _sessions(lab, node, state="Active"):
    return [s for s in lab.client("ssm").describe_sessions(State=state)["Sessions"] if s["Target"] == node]


def _plugins_of(session_ids) -> list:
    """The session-manager-plugin processes still running for any of ``session_ids`` (their argv holds the
    StartSession response)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and b"plugin" in os.path.basename(argv[0]) and any(i.encode() in b" ".join(argv) for i in session_ids):
            found.append(int(pid))
    return found


def _decoded(transcript: str) -> str:
    """Every run of base64 lines in a transcript, decoded (how an auditor reads this connection's output)."""
    runs, current = [], []
    for line in transcript.replace("\r", "").split("\n") + [""]:
        if line and re.fullmatch(r"[A-Za-z0-9+/=]+", line):
            current.append(line)
        elif current:
            runs.append("".join(current))
            current = []
    decoded = []
    for run in runs:
        try:
            decoded.append(base64.b64decode(run + "=" * (-len(run) % 4)).decode("utf-8", "replace"))
        except ValueError:  # a word of the plugin's own messages, not base64
            continue
    return "\n".join(decoded)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _end_every_session(lab) -> None:
    """End every session of the lab and wait for the masters of lab.control to exit. The lab's channel faults act on
    every session, the idle masters other tests left too: without this, the next test would find a master whose
    session the faults had stalled or whose resume had been refused."""
    ssm = lab.client("ssm")
    for session in ssm.describe_sessions(State="Active")["Sessions"]:
        ssm.terminate_session(SessionId=session["SessionId"])
    wait_until(lambda: not any(stat.S_ISSOCK(entry.stat().st_mode) for entry in os.scandir(lab.control)),
               timeout=60, what="the masters of ended sessions gone")


def _unlogged_document(lab) -> str:
    """A Session document that logs nothing, for the tests that flood a session with output: that output's transcript
    would otherwise be uploaded when the session ends (tens of MB, to S3 and CloudWatch Logs), and keep the lab busy
    through the next test's sessions (the transcript the no_log test waits for came 27 s late)."""
    name = "unlogged-shell"
    ssm = lab.client("ssm")
    content = {"schemaVersion": "1.0", "description": "not logged", "sessionType": "Standard_Stream", "inputs": {}}
    try:
        ssm.create_document(Name=name, DocumentType="Session", DocumentFormat="JSON", Content=json.dumps(content))
    except ssm.exceptions.DocumentAlreadyExists:
        pass
    return name


def _ids(lab, node, state="Active") -> set:
    return {s["SessionId"] for s in _sessions(lab, node, state)}


@pytest.mark.parametrize("transport", ["native", "plugin"])
def test_binary_and_large_files_and_raw_output_travel_through_the_session_without_a_bucket(lab, transport):
    node = lab.nodes[0]
    active, ended = _ids(lab, node), _ids(lab, node, "History")
    (lab.work / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    (lab.work / "bytes.bin").write_bytes(bytes(range(256)) * 4 + b"\r\n\x04\x03\x1a\x00")
    choice = ["-e", f"ansible_aws_ssm_transport={transport}"] if transport == "plugin" else ["-e", '{"large_fetch": true}']
    output, recap = play(lab, node, """
        - name: A file of several MiB
          ansible.builtin.copy: {src: big.bin, dest: /tmp/big.bin, mode: "0600"}
        - name: Every byte value, terminal control characters included
          ansible.builtin.copy: {src: bytes.bin, dest: /tmp/bytes.bin, mode: "0600"}
        - name: Checksums on the node
          ansible.builtin.command: sha256sum /tmp/big.bin /tmp/bytes.bin
          register: sums
        - name: Back again
          ansible.builtin.fetch: {src: "/tmp/{{ item }}", dest: "fetched/{{ item }}", flat: true}
          loop: [big.bin, bytes.bin]
        - name: A file of tens of MiB made on the node
          ansible.builtin.shell: head -c 25165824 /dev/urandom > /tmp/large.bin && sha256sum /tmp/large.bin
          register: large
          when: large_fetch | default(false)
        - name: Fetched in chunks of 512 KiB, each within 3 s, far less than the whole file takes
          ansible.builtin.fetch: {src: /tmp/large.bin, dest: fetched/large.bin, flat: true}
          vars:
            ansible_aws_ssm_command_timeout: 3
            ansible_aws_ssm_transfer_chunk_size: 524288
            ansible_aws_ssm_transfer_threshold: 268435456  # through the session, not the (missing) bucket
          when: large_fetch | default(false)
        - name: Show the large file's checksum
          ansible.builtin.debug: {msg: "LARGE {{ large.stdout.split() | first }}"}
          when: large_fetch | default(false)
        - name: Output that is not UTF-8
          ansible.builtin.raw: printf 'caf\\351 \\377\\376 end\\n'; printf 'next line\\n'
          register: latin
        - name: Show
          ansible.builtin.debug:
            msg: "SUMS {{ sums.stdout_lines | map('split') | map('first') | join(' ') }} RAW {{ latin.stdout_lines | length }}
              {{ latin.stdout_lines[0] | length }} {{ latin.stdout_lines[0][-4:] }} {{ latin.stdout_lines[1] }}"
        """, "-e", "ansible_aws_ssm_bucket_name=no-such-bucket", "-vvv", *choice)
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
    assert f"ESTABLISH SSM SESSION TO: {node} (persistent, {transport}, " in output  # native: the default
    assert f"SUMS {_sha(lab.work / 'big.bin')} {_sha(lab.work / 'bytes.bin')}" in output
    # big.bin is more than one chunk (4 MiB) both ways, on both transports.
    assert _sha(lab.work / "fetched" / "big.bin") == _sha(lab.work / "big.bin")
    if transport == "native":
        # 24 MiB with a command_timeout of 3 s: one command for the whole file, as fetches were, cannot carry it
        # through the lab (about 32 MiB of base64 in 3 s); 48 commands of 512 KiB can.
        assert f"LARGE {_sha(lab.work / 'fetched' / 'large.bin')}" in output
        assert not [p for p in (lab.work / "fetched").iterdir() if p.name.endswith(".part")]
    assert (lab.work / "fetched" / "bytes.bin").read_bytes() == (lab.work / "bytes.bin").read_bytes()
    # Each invalid byte arrives as one (Ansible decodes it to one replacement character), the framing holds after
    # them, and no carriage return is added (stdout is not read from a terminal).
    assert "RAW 2 11  end next line" in output, output
    # No bucket was touched (the configured one does not even exist), and one session served every task.
    assert SESSIONS_BUCKET in [b["Name"] for b in lab.client("s3").list_buckets()["Buckets"]]
    assert "no-such-bucket" not in [b["Name"] for b in lab.client("s3").list_buckets()["Buckets"]]
    # One new session served every task: none was started and ended during the run (only sessions that were there
    # before may have ended meanwhile, idle).
    assert len(_ids(lab, node) - active) == 1
    assert _ids(lab, node, "History") - ended <= active


def test_a_file_above_the_threshold_goes_through_the_bucket_both_ways_and_leaves_nothing_there(lab):
    """The connection's own S3 client (the bucket's region from HeadBucket, a presigned GET for the node's curl,
    the bucket's default encryption on the upload) carries a file larger than transfer_threshold to the node, a byte
    range per command, and back: a multipart upload whose parts (8 MiB) the node's curl sends a command each."""
    node, bucket = lab.nodes[1], "session-large-files"
    s3 = lab.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    (lab.work / "over.bin").write_bytes(os.urandom(8 * 1024 * 1024 + 3))
    output, recap = play(lab, node, """
        - name: A file over the threshold
          ansible.builtin.copy: {src: over.bin, dest: /tmp/over.bin, mode: "0600"}
        - name: Its checksum on the node
          ansible.builtin.command: sha256sum /tmp/over.bin
          register: sums
        - name: Show
          ansible.builtin.debug: {msg: "SUM {{ sums.stdout.split() | first }}"}
        - name: Back through the bucket
          ansible.builtin.fetch: {src: /tmp/over.bin, dest: fetched-over.bin, flat: true}
        """, "-e", f"ansible_aws_ssm_bucket_name={bucket}", "-e", "ansible_aws_ssm_transfer_threshold=65536", "-vvv")
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
    assert f"SUM {_sha(lab.work / 'over.bin')}" in output
    assert re.search(rf"PUT \S+over\.bin THROUGH s3://{bucket}/{node}/[0-9a-f]{{32}}", output), output
    checksum_and_fetch = output.split("Its checksum on the node")[1]
    assert "bin THROUGH s3://" not in checksum_and_fetch.split("Back through the bucket")[0], "only the large file"
    assert re.search(rf"FETCH /tmp/over\.bin THROUGH s3://{bucket}/{node}/[0-9a-f]{{32}}", output), output
    assert _sha(lab.work / "fetched-over.bin") == _sha(lab.work / "over.bin")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "the objects are deleted after the transfers"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "no upload is left unfinished"


def test_become_runs_as_root_with_and_without_pipelining(lab):
    node = lab.nodes[0]
    output, recap = play(lab, node, """
        - name: Who
          ansible.builtin.command: id -un
          become: true
          register: who
          changed_when: false
        - name: A root-only file through a temporary file and become (copy does not pipeline)
          ansible.builtin.copy: {content: "root only\\n", dest: /root/bastionless-become.txt, mode: "0600"}
          become: true
        - name: Read it back as root, pipelining off
          ansible.builtin.slurp: {src: /root/bastionless-become.txt}
          become: true
          register: slurped
          vars:
            ansible_pipelining: false
        - name: Show
          ansible.builtin.debug:
            msg: "WHO {{ who.stdout }} FILE {{ slurped.content | b64decode | trim }}"
        """)
    assert recap[node]["failed"] == 0, output
    assert "WHO root FILE root only" in output
    output, recap = play(lab, node, """
        - name: Not root without become
          ansible.builtin.command: cat /root/bastionless-become.txt
        """)
    assert recap[node]["failed"] == 1 and "Permission denied" in output


@pytest.mark.parametrize("transport", ["native", "plugin"])
def test_a_command_that_outlives_the_timeout_fails_unreachable_and_the_next_task_reconnects(lab, transport):
    node = lab.nodes[0]
    choice = ["-e", f"ansible_aws_ssm_transport={transport}"]
    output, recap = play(lab, node, """
        - name: A new session (-vvvv names it)
          ansible.builtin.meta: reset_connection
        - name: Longer than the timeout
          ansible.builtin.command: sleep 600
        """, "-e", "ansible_aws_ssm_command_timeout=3", "-vvvv", *choice, timeout=90)
    assert recap[node]["unreachable"] == 1, output
    assert "did not answer within 3 s" in output
    timed_out = set(re.findall(r"SSM SESSION (\S+) served by pid", output))
    assert len(timed_out) == 1 and f"(persistent, {transport}, " in output, output
    # The session that ran it was ended (its shell state is unknown), not left running the sleep.
    wait_until(lambda: timed_out <= _ids(lab, node, "History"), what="the timed-out session in the history")
    wait_until(lambda: not _plugins_of(timed_out), timeout=15, what="no plugin left for that session")
    output, recap = play(lab, node, """
        - name: The next task opens a new session
          ansible.builtin.command: pgrep -c sleep
          register: sleeps
          failed_when: false
        - name: Show
          ansible.builtin.debug: {msg: "SLEEPS {{ sleeps.stdout | default('') }}"}
        """, *choice)
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
    assert "SLEEPS 0" in output or "SLEEPS \"\"" in output or "SLEEPS " in output
    assert not timed_out & _ids(lab, node)


# Bounded waits (docs/reliability.md, "Bounded waits"): each case is a task between two stamps taken on the
# controller, and the stamp before it also sets the lab's fault (its admin API, through curl: no process of
# ssm-lab's own in the play; then 1.5 s, as a session looks at the faults once a second while none is on), the stamp
# after clears it. The bound checked is the task's timeout plus MARGIN: the
# task's own overhead and the TerminateSession of a timed-out session (at most TERMINATE_WITHIN, 10 s) on a
# loaded machine. A wait that is not bounded shows as 60 s or more (botocore's read timeout, the lab's ack_timeout).
MARGIN = 15
# The play's variables: the faults through the lab's admin API, and the stamps.
BOUNDED_VARS = """- hosts: all
  gather_facts: false
  vars:
    fault: >-
      curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' {endpoint}/_lab/faults -d
    stamp: date +%s.%N
    stall_on: >-
      {{ fault }} '{"stall_channel_after": 0.1}'; sleep 1.5; {{ stamp }}
    stall_off: >-
      {{ fault }} '{"stall_channel_after": 0}'; {{ stamp }}
    half_on: >-
      {{ fault }} '{"half_close_channel_after": 0.1}'; sleep 1.5; {{ stamp }}
    half_off: >-
      {{ fault }} '{"half_close_channel_after": 0}'; {{ stamp }}
    api_slow: >-
      {{ fault }} '{"api_delay": 30}'; {{ stamp }}
    api_fast: >-
      {{ fault }} '{"api_delay": 0}'; {{ stamp }}
"""
# The cases on a session's data channel: a flood of output, a stalled channel, a half-closed one.
CHANNEL_CASES = """  tasks:
    - {name: A session, ansible.builtin.raw: "true"}
    - {name: Stamp, ansible.builtin.set_fact: {s0: "{{ lookup('pipe', stamp) }}"}}
    - {name: A command that floods its output, ansible.builtin.raw: "yes", ignore_unreachable: true}
    - {name: Stamp, ansible.builtin.set_fact: {s1: "{{ lookup('pipe', stamp) }}"}}
    - {name: No session, ansible.builtin.meta: reset_connection}
    - {name: A new session, ansible.builtin.raw: "true"}
    - {name: The service stops answering on it, ansible.builtin.set_fact: {s2: "{{ lookup('pipe', stall_on) }}"}}
    - {name: A command on the stalled channel, ansible.builtin.raw: "echo hi", ignore_unreachable: true}
    - {name: Stamp and the stall off, ansible.builtin.set_fact: {s3: "{{ lookup('pipe', stall_off) }}"}}
    - {name: No session, ansible.builtin.meta: reset_connection}
    - {name: A new session, ansible.builtin.raw: "true"}
    - name: The service half-closes its WebSocket, and each new one
      ansible.builtin.set_fact: {s4: "{{ lookup('pipe', half_on) }}"}
    - name: A command on the half-closed channel
      ansible.builtin.raw: "sleep 1; echo half"
      ignore_unreachable: true
      register: half
    - {name: Stamp and the half-close off, ansible.builtin.set_fact: {s5: "{{ lookup('pipe', half_off) }}"}}
"""
BOUNDED = (BOUNDED_VARS.replace("  vars:\n", "  vars:\n    ansible_aws_ssm_command_timeout: 3\n") + CHANNEL_CASES + """\
    - {name: No session, ansible.builtin.meta: reset_connection}
    - {name: The AWS API stops answering (each call takes 30 s), ansible.builtin.set_fact: {s6: "{{ lookup('pipe', api_slow) }}"}}
    - name: A StartSession that does not answer
      ansible.builtin.raw: "true"
      ignore_unreachable: true
      vars: {ansible_aws_ssm_timeout: 4}
    - {name: Stamp and the API answers again, ansible.builtin.set_fact: {s7: "{{ lookup('pipe', api_fast) }}"}}
    - name: Durations
      ansible.builtin.debug:
        msg: "BOUNDED {{ [s1|float - s0|float, s3|float - s2|float, s5|float - s4|float, s7|float - s6|float] | to_json }}
          HALF {{ half.stdout | default('') | trim }}"
""")


def test_no_task_waits_past_its_timeout_whatever_the_node_or_the_service_does(lab):
    """A flood of output, a data channel on which the service stops answering, one it half-closes (again on each new
    WebSocket), a StartSession that does not answer: each task ends within its timeout plus MARGIN; the ones that
    cannot finish are unreachable with the timeout named. Both transports in one run: one host for each, the same
    node (the linear strategy keeps them in step, so each fault is on while both run the task it is for)."""
    node = lab.nodes[0]
    control = lab.work / "control-bounded"
    control.mkdir(mode=0o700, exist_ok=True)
    inventory = lab.work / "bounded.ini"
    inventory.write_text("".join(f"{transport} ansible_aws_ssm_instance_id={node} ansible_aws_ssm_transport={transport} "
                                 f"ansible_aws_ssm_document={_unlogged_document(lab)}\n"
                                 for transport in ("native", "plugin")))
    path = lab.work / "bounded.yml"
    path.write_text(BOUNDED.replace("{endpoint}", lab.env["AWS_ENDPOINT_URL"]))
    argv = ["ansible-playbook", "-i", str(inventory), "-c", CONNECTION, str(path),
            "-e", f"ansible_aws_ssm_plugin={lab.env['AWS_SESSION_MANAGER_PLUGIN']}",
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "ansible_aws_ssm_region=us-east-1",
            "-e", f"ansible_aws_ssm_control_path_dir={control}"]
    env = lab.environ(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(lab.local_tmp))
    try:
        result = subprocess.run(argv, cwd=str(lab.work), env=env, capture_output=True, text=True, timeout=240,
                                check=False)
    finally:
        lab.cli("faults", "--stall-channel-after", "0", "--half-close-channel-after", "0", "--api-delay", "0")
        _end_every_session(lab)
    output = result.stdout + result.stderr
    flat = " ".join(output.split())
    for transport in ("native", "plugin"):
        durations = re.search(rf"ok: \[{transport}\] => {{ \"msg\": \"BOUNDED (\[[^\]]*\]) HALF (\w*)", flat)
        assert durations, output
        flood, stall, half, start = json.loads(durations.group(1))
        assert flood < 3 + MARGIN and stall < 3 + MARGIN and half < 3 + MARGIN and start < 4 + MARGIN, (
            transport, flood, stall, half, start, output)
        timed_out = flat.count(f"fatal: [{transport}]: UNREACHABLE! => {{\"changed\": false, \"msg\": \"Task failed: "
                               f"{node} did not answer within 3 s (command_timeout); the session was ended\"")
        # The flood and the stalled channel time out; the half-closed one is resumed (native) or carried on by
        # the plugin, or times out too.
        assert timed_out == 2 + (durations.group(2) != "half"), (transport, output)
        assert (f"fatal: [{transport}]: UNREACHABLE! => {{\"changed\": false, \"msg\": \"Task failed: StartSession to "
                f"{node} in us-east-1 did not answer within 4 s (ssm_timeout): the Systems Manager endpoint "
                f"{lab.env['AWS_ENDPOINT_URL']} is slow or unreachable. Check the network path to it (proxy, VPC "
                "endpoint) or raise ansible_aws_ssm_timeout\"") in flat, output
        assert _recap(result.stdout)[transport]["failed"] == 0, output


# The same faults against amazon.aws.aws_ssm, which the collection does not own (docs/reliability.md, "Bounded
# waits"). Each of its tasks opens a session of its own, so the faults act on that session (after 0.5 s): a stalled
# channel ends in amazon.aws's own timeout (ansible_aws_ssm_timeout an attempt, times ansible_aws_ssm_retries). A
# flood of output ends in that timeout too, but late (amazon.aws checks its clock between the reads of its output:
# 28 s for a timeout of 5 s, measured); and the task's timeout keyword does not end it at all (amazon.aws's close
# then types exit into a shell still flooding and waits for its end). Its StartSession is bounded by nothing of its
# own: test_module_ssm_command.py.
FLOOD_WITHIN = 120
AWS_SSM_BOUNDED = BOUNDED_VARS + """  tasks:
    - {name: A session, ansible.builtin.raw: "true"}
    - {name: Stamp, ansible.builtin.set_fact: {s0: "{{ lookup('pipe', stamp) }}"}}
    - {name: A command that floods its output, ansible.builtin.raw: "yes", ignore_unreachable: true}
    - {name: Stamp, ansible.builtin.set_fact: {s1: "{{ lookup('pipe', stamp) }}"}}
    - name: The service stops answering on each new channel after 0.5 s
      ansible.builtin.set_fact: {s2: "{{ lookup('pipe', stall_on | replace('0.1', '0.5')) }}"}
    - name: A command on a stalled channel
      ansible.builtin.raw: "sleep 2; echo stall"
      ignore_unreachable: true
      register: stall
    - {name: Stamp and the stall off, ansible.builtin.set_fact: {s3: "{{ lookup('pipe', stall_off) }}"}}
    - name: The service half-closes each new WebSocket after 0.5 s
      ansible.builtin.set_fact: {s4: "{{ lookup('pipe', half_on | replace('0.1', '0.5')) }}"}
    - name: A command on a half-closed channel
      ansible.builtin.raw: "sleep 2; echo half"
      ignore_unreachable: true
      register: half
    - {name: Stamp and the half-close off, ansible.builtin.set_fact: {s5: "{{ lookup('pipe', half_off) }}"}}
    - name: Durations
      ansible.builtin.debug:
        msg: "BOUNDED {{ [s1|float - s0|float, s3|float - s2|float, s5|float - s4|float] | to_json }}
          HALF {{ half.stdout | default('') | trim }} STALL {{ stall.stdout | default('') | trim }}"
"""


def test_amazon_aws_ssm_ends_a_stalled_or_half_closed_command_within_its_timeout(lab):
    """amazon.aws.aws_ssm (its timeout 5 s, no retry) on the channel faults above, in a run of its own: the stalled
    channel ends in amazon.aws's timeout within 5 s plus MARGIN, the half-closed one too or it is carried on by the
    plugin; the flood ends in that timeout as well, later (FLOOD_WITHIN: not a bound of ours, a hang detector). The
    lab's session-manager-plugin may carry a stalled channel on as it does a half-closed one (it opens another
    WebSocket); how AWS's own plugin fares on these faults under aws_ssm is not run here (make interop does not)."""
    node = lab.nodes[0]
    bucket = "bounded-aws-ssm"
    lab.client("s3").create_bucket(Bucket=bucket)
    inventory = lab.work / "bounded-aws-ssm.ini"
    inventory.write_text(f"aws_ssm ansible_aws_ssm_instance_id={node} ansible_connection=amazon.aws.aws_ssm "
                         f"ansible_aws_ssm_bucket_name={bucket} ansible_aws_ssm_timeout=5 ansible_aws_ssm_retries=0 "
                         f"ansible_aws_ssm_document={_unlogged_document(lab)}\n")
    path = lab.work / "bounded-aws-ssm.yml"
    path.write_text(AWS_SSM_BOUNDED.replace("{endpoint}", lab.env["AWS_ENDPOINT_URL"]))
    argv = ["ansible-playbook", "-i", str(inventory), str(path),
            "-e", f"ansible_aws_ssm_plugin={lab.env['AWS_SESSION_MANAGER_PLUGIN']}",
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "ansible_aws_ssm_region=us-east-1"]
    env = lab.environ(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(lab.local_tmp))
    try:
        result = subprocess.run(argv, cwd=str(lab.work), env=env, capture_output=True, text=True, timeout=240,
                                check=False)
    finally:
        lab.cli("faults", "--stall-channel-after", "0", "--half-close-channel-after", "0")
        _end_every_session(lab)
    output = result.stdout + result.stderr
    flat = " ".join(output.split())
    durations = re.search(r"ok: \[aws_ssm\] => { \"msg\": \"BOUNDED (\[[^\]]*\]) HALF (\w*) STALL (\w*)", flat)
    assert durations, output
    flood, stall, half = json.loads(durations.group(1))
    assert stall < 5 + MARGIN and half < 5 + MARGIN and flood < FLOOD_WITHIN, (flood, stall, half, output)
    timed_out = len(re.findall(r"fatal: \[aws_ssm\]: UNREACHABLE! => .{0,300}?timeout on host: " + re.escape(node), flat))
    carried = [durations.group(2) == "half", durations.group(3) == "stall"]
    assert timed_out == 1 + carried.count(False), (carried, output)
    assert _recap(result.stdout)["aws_ssm"]["failed"] == 0, output


def test_an_agent_that_drops_mid_play_makes_the_node_unreachable_and_the_next_play_reconnects(lab):
    node = lab.nodes[1]
    output, recap = play(lab, node, f"""
        - name: Reachable
          ansible.builtin.command: hostname
        - name: The agent goes away for a while
          ansible.builtin.command: {SSM_LAB} agent drop {node} --seconds 12
          delegate_to: localhost
          connection: local
          vars:
            ansible_python_interpreter: "{sys.executable}"
        - name: Now the node does not answer
          ansible.builtin.command: hostname
          vars:
            ansible_aws_ssm_command_timeout: 5
        - name: Never reached
          ansible.builtin.command: hostname
        """, timeout=120)
    assert recap[node]["unreachable"] == 1 and recap[node]["ok"] == 2, output
    assert "did not answer within 5 s" in output
    wait_until(lambda: next(line for line in lab.cli("status").stdout.splitlines() if line.startswith(node)).split()[3] == "up",
               timeout=60, what="the agent back")
    output, recap = play(lab, node, """
        - name: Reachable again
          ansible.builtin.command: hostname
        """)
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output


def test_a_session_that_cannot_start_names_the_region_the_instance_and_its_agent(lab):
    """One run, one host per mistake: a region that does not exist, the right node in the wrong region, an instance
    id that does not exist, a node whose agent is stopped. Each is unreachable with StartSession's error, then what
    the region and the instance say (plugins/plugin_utils/_target_diagnosis.py, whose wording its unit test covers)."""
    node, offline = lab.nodes[0], lab.nodes[1]
    inventory = lab.work / "mistakes.ini"
    # An operator whose policy allows the default shell document only (the lab judges IAM for her key).
    iam = lab.client("iam")
    iam.create_user(UserName="dora")
    iam.put_user_policy(UserName="dora", PolicyName="shell-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:StartSession", "Resource": [
            "arn:aws:ec2:*:*:instance/*", "arn:aws:ssm:*:*:document/SSM-SessionManagerRunShell"]}]}))
    key = iam.create_access_key(UserName="dora")["AccessKey"]
    dora = f"ansible_aws_ssm_access_key_id={key['AccessKeyId']} ansible_aws_ssm_secret_access_key={key['SecretAccessKey']}"
    east = f"ansible_aws_ssm_instance_id={node} ansible_aws_ssm_region=us-east-1"
    inventory.write_text(
        f"bad-region ansible_aws_ssm_instance_id={node} ansible_aws_ssm_region=us-esat-1\n"
        f"wrong-region ansible_aws_ssm_instance_id={node} ansible_aws_ssm_region=us-west-2\n"
        f"missing ansible_aws_ssm_instance_id=i-0aaaaaaaaaaaaaaaa ansible_aws_ssm_region=us-east-1\n"
        f"offline ansible_aws_ssm_instance_id={offline} ansible_aws_ssm_region=us-east-1\n"
        f"malformed ansible_aws_ssm_instance_id=i-0abc123 ansible_aws_ssm_region=us-east-1\n"
        f"bad-transport {east} ansible_aws_ssm_transport=nativ\n"
        f"zero-timeout {east} ansible_aws_ssm_command_timeout=0\n"
        f"zero-idle {east} ansible_aws_ssm_persist_idle_timeout=0\n"
        f"bad-profile {east} ansible_aws_ssm_profile=no-such-profile\n"
        f"bad-document {east} ansible_aws_ssm_document=No-Such-Document\n"
        f"denied-document {east} ansible_aws_ssm_document=AWS-StartInteractiveCommand {dora}\n"
        f"expired-token {east} ansible_aws_ssm_access_key_id=ASIAEXPIRED ansible_aws_ssm_secret_access_key=x "
        "ansible_aws_ssm_session_token=expired\n")
    lab.cli("agent", "stop", offline)
    lab.cli("faults", "--expired-session-tokens", "1")  # temporary credentials (a session token) have expired
    try:
        wait_until(lambda: lab.client("ssm").describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [offline]}])["InstanceInformationList"][0]["PingStatus"]
            != "Online", timeout=30, what=f"{offline} to go offline")
        # A control directory of its own: a session master an earlier test left for the offline node would
        # otherwise serve this run, and no StartSession would be made.
        control = lab.work / "control-mistakes"
        control.mkdir(mode=0o700, exist_ok=True)
        options = ("-i", str(inventory), "--limit", "all:!unused",
                   "-e", f"ansible_aws_ssm_control_path_dir={control}")
        output, recap = play(lab, "unused", """
            - name: Reach each host
              ansible.builtin.ping:
            """, *options, timeout=180)
    finally:
        lab.cli("faults", "--expired-session-tokens", "0")
        lab.cli("agent", "start", offline)
    assert {host: counts["unreachable"] for host, counts in recap.items()} == {
        "bad-region": 1, "wrong-region": 1, "missing": 1, "offline": 1, "malformed": 1, "bad-document": 1,
        "denied-document": 1, "expired-token": 1, "bad-transport": 0, "zero-timeout": 0, "zero-idle": 0, "bad-profile": 0}, output
    assert {host for host, counts in recap.items() if counts["failed"]} == {
        "bad-transport", "zero-timeout", "zero-idle", "bad-profile"}, output
    flat = " ".join(output.split())
    preflight = "Run playbooks/preflight.yml (bastionless.ssm.ssm_preflight) on the node for the cause and the fix."
    assert (f"StartSession to {node} in us-esat-1 failed: An error occurred (InvalidSignatureException) when calling "
            "the StartSession operation: Credential should be scoped to a valid region, not 'us-esat-1'. "
            "'us-esat-1' is not an AWS region (did you mean us-east-1?): fix ansible_aws_ssm_region or AWS_REGION."
            ) in flat, output
    assert (f"StartSession to {node} in us-west-2 failed: An error occurred (TargetNotConnected) when calling the "
            f"StartSession operation: {node} is not connected. There is no EC2 instance {node} in us-west-2: check "
            "ansible_aws_ssm_instance_id and ansible_aws_ssm_region") in flat, output
    assert "There is no EC2 instance i-0aaaaaaaaaaaaaaaa in us-east-1" in flat, output
    assert (f"{offline} is registered in us-east-1 but its agent is offline: PingStatus ConnectionLost (last ping "
            in flat), output
    assert preflight in flat, output
    assert ("StartSession to i-0abc123 in us-east-1 failed: An error occurred (TargetNotConnected) when calling the "
            "StartSession operation: i-0abc123 is not connected. 'i-0abc123' is not the id of a managed node (i- and 8 "
            "or 17 hexadecimal digits for an EC2 instance, mi- and 17 for a hybrid node): check "
            "ansible_aws_ssm_instance_id") in flat, output
    assert ("bastionless.ssm.session: transport (ansible_aws_ssm_transport) must be one of native, plugin, not 'nativ'"
            in flat), output
    assert ("command_timeout (ansible_aws_ssm_command_timeout) must be a whole number of seconds of 1 or more, not 0"
            in flat), output
    assert ("persist_idle_timeout (ansible_aws_ssm_persist_idle_timeout) must be a whole number of seconds of 1 or "
            "more, not 0") in flat, output
    assert ("bastionless.ssm.session: the AWS profile 'no-such-profile' (profile: ansible_aws_ssm_profile or "
            "AWS_PROFILE) is in neither ~/.aws/config nor ~/.aws/credentials") in flat, output
    assert ("(InvalidDocument) when calling the StartSession operation: Document with name No-Such-Document does not "
            "exist. Check ansible_aws_ssm_document: it must name a Session document") in flat, output
    assert ("(AccessDeniedException) when calling the StartSession operation: User: "
            "arn:aws:iam::123456789012:user/dora is not authorized to perform: ssm:StartSession on resource: "
            "arn:aws:ssm:us-east-1::document/AWS-StartInteractiveCommand because no identity-based policy allows "
            "the ssm:StartSession action. The caller may not start this session: grant it ssm:StartSession") in flat, output
    assert not [s for s in _sessions(lab, node) if s.get("Owner", "").endswith("user/dora")]
    assert (f"StartSession to {node} in us-east-1 failed: An error occurred (ExpiredTokenException) when calling the "
            "StartSession operation: The security token included in the request is expired. The session token of "
            "these credentials has expired: get new temporary credentials (aws sso login, assume the role again, or a "
            "new AWS_SESSION_TOKEN) and run again.") in flat, output
    wait_until(lambda: lab.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [offline]}])["InstanceInformationList"][0]["PingStatus"] == "Online",
        timeout=60, what=f"{offline} Online again")


def test_two_plays_at_once_against_one_node_both_succeed(lab):
    node = lab.nodes[1]
    body = """
        - name: Write, read back
          ansible.builtin.shell: "echo {name}-{{{{ item }}}} > /tmp/{name}-{{{{ item }}}} && cat /tmp/{name}-{{{{ item }}}}"
          loop: [1, 2, 3, 4, 5, 6]
          register: wrote
        - name: Show
          ansible.builtin.debug: {{msg: "{name} {{{{ wrote.results | map(attribute='stdout') | join(',') }}}}"}}
        """
    first = play(lab, node, body.format(name="alpha"), background=True)
    second = play(lab, node, body.format(name="beta"), background=True)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    for name, output in zip(("alpha", "beta"), outputs):
        recap = _recap(output)
        assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
        assert f"{name} " + ",".join(f"{name}-{i}" for i in range(1, 7)) in output
    assert len(_sessions(lab, node)) == 1  # both plays were served by the one persistent session


DROP_TASKS = 40  # the issue's full size, 200 tasks with drops every 20 s: tests/benchmarks/drops.py
DROP_EVERY = 3


def _resumes(lab) -> int:
    return sum(count for name, count in lab.api_calls()["calls"].items() if name.endswith("ResumeSession"))


def test_a_play_of_many_tasks_finishes_while_the_data_channel_drops_every_few_seconds(lab):
    """The native transport resumes the session (ResumeSession, the sequence numbers kept) each time the lab breaks
    its WebSocket: every task is ok and each sees its own output exactly once."""
    node = lab.nodes[0]
    tasks = "".join(f"""
        - name: Step {n}
          ansible.builtin.command: echo step-{n}
          register: step
          changed_when: false
          failed_when: step.stdout != "step-{n}"
        """ if n % 2 else f"""
        - name: Step {n}
          ansible.builtin.stat: {{path: /etc/hostname}}
          register: step
          failed_when: not step.stat.exists
        """ for n in range(1, DROP_TASKS + 1))
    # A drop every few seconds, and a session kept longer than the lab's usual 10 s for its resume (AWS keeps a
    # dropped session for minutes): on a busy machine a resume can take longer than that, and the test is about the
    # client resuming at all, each task's output once, not about how fast.
    lab.cli("faults", "--drop-channel-every", str(DROP_EVERY), "--resume-window", "60")
    try:
        before = _resumes(lab)
        output, recap = play(lab, node, tasks, "-e", "ansible_aws_ssm_transport=native",
                             "-e", "ansible_aws_ssm_command_timeout=30", timeout=240)
        resumed = _resumes(lab) - before
    finally:
        lab.cli("faults", "--drop-channel-every", "0", "--resume-window", "10")
    assert recap[node] == {"ok": DROP_TASKS, "changed": 0, "unreachable": 0, "failed": 0}, output
    assert resumed >= 2, f"the channel dropped and resumed during the play ({resumed} ResumeSession calls)"


def test_a_no_log_secret_appears_in_no_transcript_bucket_log_or_controller_file(lab):
    node = lab.nodes[1]
    secret = "s3cr3t-" + os.urandom(8).hex()
    visible = "visible-" + os.urandom(4).hex()
    output, recap = play(lab, node, f"""
        - name: Start from a new session (logged from its first byte)
          ansible.builtin.meta: reset_connection
        - name: Output is recorded in the transcript, as with any session
          ansible.builtin.command: echo {visible}
        - name: A secret file content (a no_log argument of copy, sent through the session)
          ansible.builtin.copy: {{content: "{secret}\\n", dest: /tmp/secret.txt, mode: "0600"}}
          no_log: true
        - name: A secret module argument (no_log in the module's argument spec; pipelined on stdin)
          ansible.builtin.user: {{name: bltest, password: "{secret}", create_home: false}}
          become: true
          no_log: true
        - name: End the session, so that its transcript is uploaded
          ansible.builtin.meta: reset_connection
        """)
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
    s3, logs = lab.client("s3"), lab.client("logs")

    def transcripts():
        found = {}
        for obj in s3.list_objects_v2(Bucket=SESSIONS_BUCKET).get("Contents", []):
            text = s3.get_object(Bucket=SESSIONS_BUCKET, Key=obj["Key"])["Body"].read().decode()
            found[obj["Key"]] = text + "\n" + _decoded(text)
        return found if any(visible in text for text in found.values()) else None

    # The transcript holds the commands' output (base64 in the connection's framing), so what a task prints is
    # audited; the secret is in it neither in clear nor decoded.
    # The transcript is written when the session ends: at once when the shell's exit reaches the service, or once the
    # lab's resume window (10 s) has passed when the master closed the channel first; a loaded machine adds to both.
    recorded = wait_until(transcripts, timeout=60, what="the transcript with the visible output")
    assert not any(secret in text for text in recorded.values())
    events = [e["message"] for s in logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
              for e in logs.get_log_events(logGroupName=GROUP, logStreamName=s["logStreamName"])["events"]]
    assert any(visible in _decoded(e) for e in events)
    assert not any(secret in e or secret in _decoded(e) for e in events)
    for bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            assert secret.encode() not in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read(), obj["Key"]
    assert secret not in output
    for directory in (lab.control, lab.local_tmp, lab.work):
        for parent, _dirs, files in os.walk(directory):
            for name in files:
                if name.startswith("play-"):
                    continue  # the test's own playbooks hold the secret: they are its input
                path = os.path.join(parent, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        assert secret.encode() not in handle.read(), path
    # It did reach the node.
    output, recap = play(lab, node, """
        - name: Compare
          ansible.builtin.shell: grep -c '^bltest:{secret}:' /etc/shadow; cat /tmp/secret.txt | sha256sum
          become: true
          register: check
          no_log: true
        - name: Show
          ansible.builtin.debug: {{msg: "CHECK {{{{ check.stdout_lines }}}}"}}
        """.format(secret=secret))
    assert f"'1', '{hashlib.sha256((secret + chr(10)).encode()).hexdigest()}  -'" in output, output
    assert os.listdir(lab.control) and all(
        (os.stat(os.path.join(lab.control, n)).st_mode & 0o077) == 0 for n in os.listdir(lab.control))


def test_the_documented_examples_run_in_the_lab(lab):
    import ast  # pylint: disable=import-outside-toplevel

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "connection", "session.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    [examples] = [n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "EXAMPLES"]
    (lab.work / "examples.yml").write_text(examples)
    (lab.work / "inventory.yml").write_text(f"ssm_nodes:\n  hosts:\n    {lab.nodes[0]}:\n")
    result = subprocess.run(
        ["ansible-playbook", "-i", "inventory.yml", "examples.yml",
         "-e", f"ansible_aws_ssm_plugin={lab.env['AWS_SESSION_MANAGER_PLUGIN']}",
         "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", f"ansible_aws_ssm_control_path_dir={lab.control}"],
        cwd=str(lab.work), env=lab.environ(ANSIBLE_NOCOLOR="1"), capture_output=True, text=True, timeout=300, check=False)
    recap = _recap(result.stdout)
    assert result.returncode == 0 and recap[lab.nodes[0]]["failed"] == 0, result.stdout + result.stderr
    assert (lab.work / "fetched" / lab.nodes[0] / "etc" / "os-release").exists()


def test_the_managed_nodes_inventory_selects_it(lab, tmp_path):
    """connection: bastionless.ssm.session in a managed_nodes configuration is all it takes: every node answers over a
    persistent session, with no bucket anywhere."""
    source = tmp_path / "session.managed_nodes.yml"
    source.write_text("plugin: bastionless.ssm.managed_nodes\nregions: [us-east-1]\n"
                      f"connection: {CONNECTION}\ncompose:\n  ansible_python_interpreter: \"'/usr/bin/python3'\"\n"
                      f"  ansible_aws_ssm_plugin: \"'{lab.env['AWS_SESSION_MANAGER_PLUGIN']}'\"\n"
                      f"  ansible_aws_ssm_control_path_dir: \"'{lab.control}'\"\n")
    listed = subprocess.run(["ansible-inventory", "-i", str(source), "--list"], cwd=str(lab.work), env=lab.environ(),
                            capture_output=True, text=True, timeout=120, check=True)
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert set(lab.nodes) <= set(hostvars)
    assert all(hostvars[n]["ansible_connection"] == CONNECTION and "ansible_aws_ssm_bucket_name" not in hostvars[n]
               for n in lab.nodes)
    result = subprocess.run(["ansible", "-i", str(source), "all", "-m", "ansible.builtin.ping"], cwd=str(lab.work),
                            env=lab.environ(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                                            ANSIBLE_LOCAL_TEMP=str(lab.local_tmp)),
                            capture_output=True, text=True, timeout=300, check=False)
    for node in lab.nodes:
        assert re.search(rf"^{node} \| SUCCESS", result.stdout, re.M), result.stdout + result.stderr
        assert _sessions(lab, node), f"no persistent session to {node}"


_PROBE = '''#!/usr/bin/python3
import os
import sys

from ansible.module_utils.basic import AnsibleModule
import ansible.module_utils.basic as basic


def main():
    module = AnsibleModule(argument_spec={"fail": {"type": "bool", "default": False}}, supports_check_mode=True)
    if module.params["fail"]:
        raise RuntimeError("boom from the module")
    archive = basic.__file__.split("/ansible/module_utils/")[0]
    module.exit_json(changed=False, ppid=os.getppid(), argv=sys.argv, basic=basic.__file__,
                     payload=os.path.exists(archive), main=sys.modules["__main__"].__name__)


if __name__ == "__main__":
    main()
'''


def test_modules_run_in_the_resident_python_or_its_fork_with_the_results_of_a_new_interpreter(lab):
    """resident_python (the default): the node's resident Python runs pipelined modules with module_utils preloaded,
    everyday modules in itself, others (the probe) in a fork. Modules that import more module_utils (copy, lineinfile, template), a module that fails,
    one that raises, check mode and a custom module see what a new interpreter gives them: the same results, their
    own payload as basic's __file__. become and environment run as plain commands. With resident_python off, the
    same play gives the same results and no fork; that run goes over the plugin transport (the reader and the transport
    are independent), so the sh reader and pipelined modules are covered on both transports."""
    node = lab.nodes[1]
    (lab.work / "library").mkdir(exist_ok=True)
    (lab.work / "library" / "fork_probe.py").write_text(_PROBE)
    (lab.work / "motd.j2").write_text("node {{ inventory_hostname }}\n")
    body = """
        - ansible.builtin.shell: ls -A ~/.ansible/tmp 2>/dev/null || true
          register: before
        - ansible.builtin.copy: {content: "one\\n", dest: /tmp/fork-copy.txt, mode: "0644"}
        - ansible.builtin.lineinfile: {path: /tmp/fork-copy.txt, line: two}
        - ansible.builtin.template: {src: motd.j2, dest: /tmp/fork-motd.txt, mode: "0644"}
        - ansible.builtin.stat: {path: /tmp/fork-motd.txt, get_checksum: true}
          register: motd
        - ansible.builtin.copy: {content: "changed\\n", dest: /tmp/fork-motd.txt, mode: "0644"}
          check_mode: true
          register: predicted
        - ansible.builtin.file: {path: /nonexistent/dir/file, state: file}
          register: missing
          ignore_errors: true
        - fork_probe: {}
          register: first
        - fork_probe: {}
          register: second
        - fork_probe: {fail: true}
          register: boom
          ignore_errors: true
        - ansible.builtin.command: printenv BL_FORK
          environment: {BL_FORK: from-environment}
          register: env
        - ansible.builtin.command: id -un
          become: true
          register: who
        - ansible.builtin.slurp: {src: /tmp/fork-copy.txt}
          register: copied
        - ansible.builtin.shell: ls -A ~/.ansible/tmp 2>/dev/null || true
          register: left
        - ansible.builtin.debug:
            msg: >-
              RESULT {{ copied.content | b64decode | split | join(',') }} {{ motd.stat.checksum }}
              {{ predicted.changed }} {{ missing.failed }} {{ first.ppid == second.ppid }} {{ first.argv | length }}
              {{ first.argv[0] is search('_payload.zip/ansible/legacy/fork_probe.py$') }}
              {{ first.payload }} {{ first.basic is search('_payload.zip/ansible/module_utils/basic.py$') }}
              {{ first.main }} {{ boom.failed }} {{ boom.msg is search('boom from the module') }}
              {{ env.stdout }} {{ who.stdout }} LEFT[{{ left.stdout == before.stdout }}]
        """
    forked, recap = play(lab, node, body, "-vvv")
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, forked
    checksum = hashlib.sha1(f"node {node}\n".encode()).hexdigest()
    # LEFT[True]: no task of the play left its temporary directory (with the resident Python, the removal goes before
    # the next command)
    expected = (f"RESULT one,two {checksum} True True True 1 True True True __main__ True True from-environment root "
                "LEFT[True]")
    assert expected in " ".join(forked.split()), forked
    # copy (stat and copy), lineinfile, template (stat and copy), stat, check-mode copy (stat), file, slurp, two
    # shells: 11 runs of everyday modules in the resident Python itself (module_isolation auto); three probes, in a
    # fork. The command with environment and the one with become are plain commands.
    assert forked.count("module run in the node's resident Python itself") == 11, forked
    assert forked.count("module run in a fork of the node's resident Python") == 3, forked
    plain, recap = play(lab, node, body, "-vvv", "-e", "ansible_aws_ssm_resident_python=false",
                        "-e", "ansible_aws_ssm_transport=plugin")
    assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, plain
    assert f"ESTABLISH SSM SESSION TO: {node} (persistent, plugin, " in plain
    assert expected.replace(" True True True 1 ", " True True False 1 ") in " ".join(plain.split()), plain
    assert "module run in a fork" not in plain and "resident Python itself" not in plain


def test_everyday_raw_commands_the_shell_executable_background_children_and_terminal_writes(lab):
    """One run, the node under two names: its resident Python reads the commands of one, a plain sh the other's.
    raw's executable and ansible_shell_executable are honoured (the node's /bin/sh is dash, not bash); a command that
    leaves a child in the background answers at once, though the child outlives command_timeout; what a command
    writes to /dev/tty reaches the terminal and breaks nothing."""
    node = lab.nodes[1]
    inventory = lab.work / "readers.ini"
    inventory.write_text(f"readers_py ansible_aws_ssm_instance_id={node} ansible_aws_ssm_resident_python=true\n"
                         f"readers_sh ansible_aws_ssm_instance_id={node} ansible_aws_ssm_resident_python=false\n")
    (lab.work / "no_shebang.sh").write_text('echo "script shell: ${BASH_VERSION:+bash}"\n')
    body = """
        - name: A bash test under raw's executable
          ansible.builtin.raw: '[[ -n "$BASH_VERSION" ]] && echo "raw shell: bash"'
          args:
            executable: /bin/bash
          register: raw_bash
        - name: A script without a shebang runs in ansible_shell_executable
          ansible.builtin.script: no_shebang.sh
          vars:
            ansible_shell_executable: /bin/bash
          register: script_bash
        - name: A child left in the background
          ansible.builtin.raw: sleep 40 & echo started
          register: background
        - name: Writes to the terminal
          ansible.builtin.raw: printf 'to the terminal' > /dev/tty; echo x > /dev/tty; echo after
          register: tty
        - name: Modules still run, with the default executable
          ansible.builtin.command: echo module
          register: module
        - name: Report
          ansible.builtin.debug:
            msg: >-
              RESULT {{ raw_bash.stdout | trim }}; {{ script_bash.stdout | trim }};
              {{ background.stdout | trim }}; {{ tty.stdout | trim }}; {{ module.stdout }}
        """
    # command_timeout 20, the child sleeps 40: before the fix, the child held the reply past the timeout and the
    # host ended UNREACHABLE, which the recap below rules out (no timed assertion needed).
    output, recap = play(lab, node, body, "-i", str(inventory), "--limit", "readers_py,readers_sh",
                         "-e", "ansible_aws_ssm_command_timeout=20")
    for host in ("readers_py", "readers_sh"):
        assert recap[host] == {"ok": 6, "changed": 5, "unreachable": 0, "failed": 0}, output
    flat = " ".join(output.split())
    assert flat.count("RESULT raw shell: bash; script shell: bash; started; after; module") == 2, output
