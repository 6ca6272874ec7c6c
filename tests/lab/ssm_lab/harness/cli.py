"""ssm-lab: start, inspect, disturb and stop the offline SSM lab.

    eval "$(ssm-lab up --nodes 3)"     # prints only export lines on stdout; makes the IAM users inventories/lab maps
    ssm-lab status
    ssm-lab shell lab-node-1 --as alice   # an interactive shell as an IAM user of the lab (Run As applied)
    ssm-lab check-operator alice          # the lab enforces an operator's policy: shells yes, Run Command no
    ssm-lab summary                       # the nodes, the sessions, their transcripts, and no SSH
    ssm-lab down
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from .. import common
from . import provision

ENV_FILE = "env.json"


def _err(message: str) -> None:
    sys.stderr.write(f"ssm-lab: {message}\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def _read_pid(state: str, name: str) -> int | None:
    try:
        with open(os.path.join(state, f"{name}.pid"), encoding="utf-8") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _load_env(state: str) -> dict | None:
    try:
        with open(os.path.join(state, ENV_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _request(endpoint: str, path: str, method: str = "GET", body: dict | None = None, timeout: float = 10):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{endpoint}/_lab/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _plugin_path() -> str:
    found = shutil.which("ssm-lab-plugin", path=os.path.dirname(sys.executable)) or shutil.which("ssm-lab-plugin")
    return found or os.path.join(os.path.dirname(sys.executable), "ssm-lab-plugin")


def exports(env: dict) -> str:
    return "".join(f"export {k}={v}\n" for k, v in env.items())


def client(service: str, env: dict):
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=env.get("AWS_SESSION_TOKEN"), config=common.internal_config())


def _wait(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(interval)
    return False


def _platforms(value: str) -> str:
    unknown = [p for p in value.split(",") if p not in common.PLATFORMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown platform {', '.join(unknown)}; known: {', '.join(common.PLATFORMS)}")
    return value


IAM_USER_NAME = re.compile(r"[\w+=,.@-]{1,64}")


def _iam_users(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(","))
    bad = [n for n in names if not IAM_USER_NAME.fullmatch(n)]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(repr(n) for n in bad)} is not an IAM user name (1 to 64 letters, digits and +=,.@_-); give "
            f"names separated by commas, e.g. {','.join(common.LAB_IAM_USERS)}, or --no-iam-users for none")
    return tuple(dict.fromkeys(names))


def cmd_up(args) -> int:
    """Start the lab. When it cannot, it says why on stderr and prints ``false`` on stdout, so that
    ``eval "$(ssm-lab up)"`` fails too rather than going on without the lab's variables."""
    code = _up(args)
    if code:
        sys.stdout.write("false\n")
    return code


def _up(args) -> int:
    state = common.state_dir(args.state_dir)
    if os.geteuid() != 0:
        _err("the lab isolates each node with a mount namespace, an overlay and a chroot: run it as root")
        return 2
    missing = [tool for tool in ("unshare", "mount", "chroot", "nsenter") if shutil.which(tool) is None]
    if missing:
        _err(f"{', '.join(missing)} not found on PATH ({os.environ.get('PATH', '')}): the lab's nodes need them "
             "(util-linux and coreutils, in /usr/bin and /usr/sbin); add /usr/sbin to PATH")
        return 2
    for name in ("controlplane", "agents"):
        pid = _read_pid(state, name)
        if pid and _alive(pid):
            _err(f"a lab is already running in {state} (pid {pid}); run 'ssm-lab down' first")
            return 2
    faults = {}
    if args.profile:
        faults["profile"] = args.profile
    if args.faults:
        faults.update(json.loads(args.faults))
    os.makedirs(state, exist_ok=True)
    shutil.rmtree(os.path.join(state, "nodes"), ignore_errors=True)
    port, message_port = common.free_port(), common.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    child_env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "PYTHONUNBUFFERED": "1"}
    with open(os.path.join(state, "controlplane.log"), "ab") as log:
        control = subprocess.Popen(
            [sys.executable, "-m", "ssm_lab.aws.controlplane", "--port", str(port), "--message-port", str(message_port),
             "--faults", json.dumps(faults)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=child_env,
        )
    with open(os.path.join(state, "controlplane.pid"), "w", encoding="utf-8") as handle:
        handle.write(str(control.pid))
    if not _wait(lambda: control.poll() is not None or _request(endpoint, "health", timeout=1)["ok"], 30) \
            or control.poll() is not None:
        _err(f"the control plane did not start; see {state}/controlplane.log")
        _stop(state)
        return 1
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": common.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": common.SECRET_KEY,
        "AWS_DEFAULT_REGION": common.REGION,
        "AWS_REGION": common.REGION,
        "AWS_SESSION_MANAGER_PLUGIN": _plugin_path(),
        "SSM_LAB_STATE_DIR": state,
    }
    try:
        nodes = _provision(env, args)
        iam = client("iam", env)
        for name in args.iam_users:
            iam.create_user(UserName=name)
    except Exception as error:  # noqa: BLE001 - report, clean up, fail
        _err(f"provisioning the lab failed: {error}")
        _stop(state)
        return 1
    _request(endpoint, "nodes", "POST", {"nodes": nodes})
    with open(os.path.join(state, "agents.log"), "ab") as log:
        agents = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "ssm_lab.nodes.agents",
             "--state-dir", state, "--endpoint", endpoint, "--message-port", str(message_port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=child_env,
        )
    with open(os.path.join(state, "agents.pid"), "w", encoding="utf-8") as handle:
        handle.write(str(agents.pid))
    with open(os.path.join(state, ENV_FILE), "w", encoding="utf-8") as handle:
        json.dump(env, handle, indent=2)
    real = [n for n in nodes if n["kind"] != "record"]

    def ready() -> bool:
        listed = _request(endpoint, "nodes", timeout=2)["nodes"]
        if args.provisioned:
            return sum(1 for n in listed if n["ping_status"] == "Online") >= len(real)
        return sum(1 for n in listed if n["agent_connected"]) >= len(real)

    if not _wait(ready, 60 + len(real) / 10, interval=0.2 if len(real) <= 100 else 1.0):
        _err(f"the nodes did not come up in time; see {state}/agents.log")
        _stop(state)
        return 1
    sys.stdout.write(exports(env))
    if args.iam_users:
        default = args.iam_users == common.LAB_IAM_USERS
        _err(f"IAM users made: {', '.join(args.iam_users)}"
             + (" (those inventories/lab maps for Run As; --iam-users NAMES for others, --no-iam-users for none)"
                if default else ""))
    _err(f"lab up: {len(real)} nodes ({'Online' if args.provisioned else 'offline until provisioned'}), "
         f"endpoint {endpoint}, state {state}")
    return 0


def _provision(env: dict, args) -> list[dict]:
    ec2 = client("ec2", env)
    network = provision.build_network(ec2, env["AWS_DEFAULT_REGION"])
    profile = None
    if args.provisioned or args.nat:
        network["nat_gateway"] = provision.provision_path(ec2, network)
    if args.provisioned:
        profile = provision.provision_role(client("iam", env))
    nodes = provision.launch_nodes(ec2, network, args.nodes, profile=profile)
    for node in nodes[: args.sshd]:
        node["sshd"] = True
    platforms = args.platform.split(",")
    for index, node in enumerate(nodes):
        node["platform"] = platforms[index % len(platforms)]
    nodes += provision.hybrid_nodes(args.hybrid)
    if args.light_nodes:
        nodes += provision.launch_records(ec2, network, args.light_nodes, profile=profile, light=True)
    if args.records:
        nodes += provision.launch_records(ec2, network, args.records, profile=profile)
    if args.hybrid_records:
        nodes += provision.hybrid_nodes(args.hybrid_records, first=args.hybrid + 1, kind="record")
    regions = {}
    for region, count in args.region_nodes or []:  # other regions: a network of their own and agent nodes
        regional = client("ec2", {**env, "AWS_DEFAULT_REGION": region})
        regions[region] = provision.build_network(regional, region)
        if args.provisioned or args.nat:
            regions[region]["nat_gateway"] = provision.provision_path(regional, regions[region])
        placed = provision.launch_nodes(regional, regions[region], count, profile=profile,
                                        name_prefix=f"lab-{region}-node")
        for node in placed:
            node["region"] = region
        regions[region]["nodes"] = [n["id"] for n in placed]
        nodes += placed
    with open(os.path.join(env["SSM_LAB_STATE_DIR"], "network.json"), "w", encoding="utf-8") as handle:
        json.dump({**network, "nodes": [n["id"] for n in nodes], "regions": regions}, handle, indent=2)
    return nodes


def _region_nodes(value: str) -> tuple[str, int]:
    region, _, count = value.partition("=")
    if not region or region == common.REGION or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected REGION=N with a region other than {common.REGION} and N ≥ 1, "
                                         f"e.g. us-west-2=2; got {value!r}")
    return region, int(count)


def _stop(state: str) -> list[int]:
    stopped = []
    for name in ("agents", "controlplane"):
        pid = _read_pid(state, name)
        if pid and _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
    _wait(lambda: not any(_alive(p) for p in stopped), 5, 0.1)
    for pid in stopped:
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    # Anything still running inside a node (its command line names the node's root): gone too.
    marker = os.path.join(state, "nodes").encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker in handle.read():
                        os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    for name in ("agents.pid", "controlplane.pid", ENV_FILE):
        try:
            os.unlink(os.path.join(state, name))
        except OSError:
            pass
    return stopped


def cmd_down(args) -> int:
    state = common.state_dir(args.state_dir)
    stopped = _stop(state)
    shutil.rmtree(os.path.join(state, "nodes"), ignore_errors=True)
    _err(f"lab down ({len(stopped)} processes stopped)" if stopped else "no lab was running")
    return 0


def _running(args) -> dict | None:
    state = common.state_dir(args.state_dir)
    env = _load_env(state)
    if env is None:
        _err(f"no lab is running in {state}; start one with 'ssm-lab up'")
    return env


def cmd_env(args) -> int:
    env = _running(args)
    if env is None:
        return 1
    sys.stdout.write(exports(env))
    return 0


def cmd_status(args) -> int:
    env = _running(args)
    if env is None:
        return 1
    try:
        listed = _request(env["AWS_ENDPOINT_URL"], "nodes")
    except (OSError, urllib.error.URLError) as error:
        _err(f"the lab's control plane does not answer ({error}); see {common.state_dir(args.state_dir)}/"
             "controlplane.log, or restart with 'ssm-lab down' and 'ssm-lab up'")
        return 1
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    print(f"{'NODE':<22} {'HOSTNAME':<30} {'PING STATUS':<15} {'AGENT':<6} PROBLEMS")
    for node in listed["nodes"]:
        codes = ",".join(dict.fromkeys(p["code"] for p in node["problems"])) or "-"
        print(f"{node['id']:<22} {node['hostname']:<30} {node['ping_status']:<15} "
              f"{'up' if node['agent_connected'] else 'down':<6} {codes}")
    if listed.get("records"):
        print(f"(+ {listed['records']} record-only nodes)")
    return 0


def cmd_faults(args) -> int:
    env = _running(args)
    if env is None:
        return 1
    body = {}
    if args.profile:
        body["profile"] = args.profile
    for name in ("api_delay", "session_start_delay", "stream_rtt", "s3_delay", "throttle_rate", "ack_timeout",
                 "resume_window", "open_window", "drop_channel_every", "stall_channel_after", "half_close_channel_after",
                 "expired_session_tokens", "handshake_agent_version", "seed"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    try:
        print(json.dumps(_request(env["AWS_ENDPOINT_URL"], "faults", "POST" if body else "GET", body or None)))
    except urllib.error.HTTPError as error:
        _err(json.load(error).get("error", str(error)))
        return 2
    return 0


def cmd_agent(args) -> int:
    env = _running(args)
    if env is None:
        return 1
    try:
        result = _request(env["AWS_ENDPOINT_URL"], f"nodes/{args.node}/agent-{args.action}", "POST",
                          {"seconds": args.seconds})
    except urllib.error.HTTPError:
        _err(f"no such node: {args.node}")
        return 2
    print(json.dumps(result))
    return 0


def _node_id(env: dict, node: str) -> str | None:
    """An instance id (i-, mi-) as given, or the instance whose Name tag is ``node`` (lab-node-1)."""
    if node.startswith(("i-", "mi-")):
        return node
    found = client("ec2", env).describe_instances(Filters=[{"Name": "tag:Name", "Values": [node]}])
    ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    return ids[0] if len(ids) == 1 else None


def _identity(env: dict, who: str) -> tuple[dict, object]:
    """The credentials of ``who`` (an IAM user name, or role/NAME) as environment variables, and how to undo them.
    Raises LookupError with the fix when the identity does not exist."""
    iam = client("iam", env)
    if who.startswith("role/"):
        role = who.split("/", 1)[1]
        try:
            arn = iam.get_role(RoleName=role)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            raise LookupError(f"--as {who}: the lab has no IAM role {role}; create it first, or name an IAM user")
        credentials = client("sts", env).assume_role(RoleArn=arn, RoleSessionName="ssm-lab-shell")["Credentials"]
        return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                "AWS_SESSION_TOKEN": credentials["SessionToken"]}, lambda: None
    try:
        key = iam.create_access_key(UserName=who)["AccessKey"]
    except iam.exceptions.NoSuchEntityException:
        raise LookupError(
            f"--as {who}: the lab has no IAM user {who}; create it with .venv/bin/python -c 'import boto3; "
            f"boto3.client(\"iam\").create_user(UserName=\"{who}\")', or start the lab with it (ssm-lab up "
            f"--iam-users {','.join(dict.fromkeys((*common.LAB_IAM_USERS, who)))}). ssm-lab up creates alice, whom "
            "inventories/lab maps for Run As, unless --no-iam-users; playbooks/site.yml gives her the operators' "
            "policy and her account on the nodes")

    def forget() -> None:
        iam.delete_access_key(UserName=who, AccessKeyId=key["AccessKeyId"])

    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}, forget


def cmd_shell(args) -> int:
    """StartSession as the chosen identity, then the session-manager-plugin on this terminal, as ``aws ssm
    start-session`` runs it. The lab applies that identity's IAM policies and Run As (its SSMSessionRunAs tag)."""
    env = _running(args)
    if env is None:
        return 1
    from botocore.exceptions import ClientError

    node = _node_id(env, args.node)
    if node is None:
        _err(f"no instance is named {args.node}; give an instance id (i-..., mi-...) or a Name tag: see 'ssm-lab status'")
        return 2
    credentials, forget = {}, lambda: None
    if args.as_identity:
        try:
            credentials, forget = _identity(env, args.as_identity)
        except LookupError as error:
            _err(str(error))
            return 2
    try:
        own = {**env, **credentials}
        session = client("ssm", own)
        request = {"Target": node, **({"DocumentName": args.document} if args.document else {})}
        try:
            response = session.start_session(**request)
        except ClientError as error:
            who = args.as_identity or "the lab's own credentials"
            _err(f"StartSession on {node} as {who}: {error.response['Error']['Code']}: "
                 f"{error.response['Error']['Message']}")
            return 1
        plugin = args.plugin or env.get("AWS_SESSION_MANAGER_PLUGIN") or _plugin_path()
        answer = {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}
        argv = [plugin, json.dumps(answer), env["AWS_DEFAULT_REGION"], "StartSession", "", json.dumps(request),
                env["AWS_ENDPOINT_URL"]]
        child = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"}
        # Ctrl-C, Ctrl-\ and Ctrl-Z are for the node's shell: the plugin sends them there; this process lets them
        # pass (a handler, not SIG_IGN, so that the plugin starts with the default and installs its own).
        keys = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)
        saved = {signum: signal.signal(signum, lambda *_: None) for signum in keys}
        try:
            return subprocess.call(argv, env={**child, **own})
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
    finally:
        forget()


def _online_node(env: dict, node: str | None) -> str | None:
    """``node`` as an instance id (see _node_id), or without it the first Online node by id."""
    if node:
        return _node_id(env, node)
    listed = client("ssm", env).describe_instance_information()["InstanceInformationList"]
    online = sorted(n["InstanceId"] for n in listed if n["PingStatus"] == "Online")
    return online[0] if online else None


def _outcome(call) -> tuple[str, str]:
    """("allowed", what the call said), ("refused", AWS's error) when it was refused for want of permission, or
    ("failed", AWS's error) when it failed for another reason."""
    from botocore.exceptions import ClientError

    try:
        said = call()
    except ClientError as error:
        code = error.response["Error"]["Code"]
        refused = code in ("AccessDeniedException", "AccessDenied")
        return "refused" if refused else "failed", f"{code}: {error.response['Error']['Message']}"
    return "allowed", "allowed" + (f", {said}" if said else "")


def cmd_check_operator(args) -> int:
    """What bastionless.ssm.operator_access grants an operator, tried with the identity's own credentials against
    the lab's IAM: a shell session on a node, started and ended by its owner; no ending another's session; no Run
    Command. Exits 1 naming each call that went otherwise."""
    env = _running(args)
    if env is None:
        return 1
    node = _online_node(env, args.node)
    if node is None:
        _err(f"no Online node {'is named ' + args.node if args.node else 'in the lab'}; see 'ssm-lab status' "
             "(playbooks/site.yml brings the lab's nodes Online)")
        return 2
    try:
        credentials, forget = _identity(env, args.identity)
    except LookupError as error:
        _err(str(error).replace("--as ", "", 1))
        return 2
    admin, operator, wrong = client("ssm", env), client("ssm", {**env, **credentials}), []
    others = admin.start_session(Target=node)["SessionId"]  # a session of the lab's own credentials
    own = {}

    def start_own() -> str:
        own.update(operator.start_session(Target=node, DocumentName="SSM-SessionManagerRunShell"))
        return f"session {own['SessionId']}"

    def end_own() -> str:
        if not own:
            raise LookupError("not tried: there is no session of its own to end")
        operator.terminate_session(SessionId=own["SessionId"])
        return ""

    def send_command() -> str:
        return "command " + operator.send_command(InstanceIds=[node], DocumentName="AWS-RunShellScript",
                                                  Parameters={"commands": ["id"]})["Command"]["CommandId"]

    # (what, the call, what an operator must get)
    checks = (("StartSession (SSM-SessionManagerRunShell)", start_own, "allowed"),
              ("TerminateSession of that session, its own", end_own, "allowed"),
              (f"TerminateSession of another's session ({others})",
               lambda: operator.terminate_session(SessionId=others) and "", "refused"),
              ("SendCommand (AWS-RunShellScript)", send_command, "refused"))
    print(f"{args.identity} on {node}, with its own credentials:")
    try:
        for what, call, expected in checks:
            try:
                outcome, said = _outcome(call)
            except LookupError as error:
                outcome, said = "not tried", str(error)
            print(f"  {what}: {said}")
            if outcome != expected:
                wrong.append(what)
    finally:
        forget()
        _outcome(lambda: admin.terminate_session(SessionId=others))  # already ended when the operator could
    if wrong:
        _err(f"{args.identity} may not do what operator_access grants an operator, or may do more (shell sessions on "
             f"the fleet's nodes, its own sessions only, no Run Command): {'; '.join(wrong)} went otherwise")
        return 1
    print(f"{args.identity}'s access is as operator_access grants an operator: a shell session on the node, its own "
          "sessions only, no Run Command.")
    return 0


RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def recap_line(text: str) -> str:
    """What the play recap of an ansible-playbook run's output says, as one line: the changes by host, and the hosts
    that failed or were unreachable."""
    found = RECAP.findall(text)
    if not found:
        return "no play recap in it"
    changed = ", ".join(f"{host} {changed}" for host, changed, _u, _f in found)
    failed = [host for host, _c, unreachable, failed in found if int(unreachable) or int(failed)]
    return f"changed: {changed}" + (f"; failed or unreachable: {', '.join(failed)}" if failed else "")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def cmd_summary(args) -> int:
    """The lab as the demo leaves it: the nodes, the playbook's recap, the sessions and their transcripts, and what
    there is of SSH (AWS-StartSSHSession sessions, nodes that run sshd, port 22 on this machine)."""
    env = _running(args)
    if env is None:
        return 1
    from botocore.exceptions import ClientError

    ssm, s3, logs = client("ssm", env), client("s3", env), client("logs", env)
    nodes = [n for page in ssm.get_paginator("describe_instance_information").paginate()
             for n in page["InstanceInformationList"]]
    print(f"nodes Online in SSM: {sum(n['PingStatus'] == 'Online' for n in nodes)} of {len(nodes)}")
    for n in sorted(nodes, key=lambda n: n["InstanceId"]):
        print(f"  {n['InstanceId']}  {n.get('ComputerName', ''):<28} {n.get('PlatformName', '')} "
              f"{n.get('PlatformVersion', '')}  agent {n.get('AgentVersion', '?')}  {n['PingStatus']}")
    if args.playbook_log:
        try:
            with open(args.playbook_log, encoding="utf-8", errors="replace") as handle:
                print(f"{os.path.basename(args.playbook_log)}: {recap_line(handle.read())}")
        except OSError as error:
            _err(f"--playbook-log: cannot read {args.playbook_log} ({error.strerror})")
            return 2
    pages = ssm.get_paginator("describe_sessions")
    sessions = {state: [s for page in pages.paginate(State=state) for s in page["Sessions"]]
                for state in ("Active", "History")}
    every = sessions["Active"] + sessions["History"]
    owners = ", ".join(sorted({s["Owner"] for s in every})) or "none"
    print(f"Session Manager sessions: {len(sessions['History'])} ended, {len(sessions['Active'])} active; "
          f"owners: {owners}")
    try:
        prefs = json.loads(ssm.get_document(Name="SSM-SessionManagerRunShell")["Content"])["inputs"]
    except ClientError:
        prefs = {}
    where = []
    if prefs.get("s3BucketName"):
        bucket, prefix = prefs["s3BucketName"], prefs.get("s3KeyPrefix", "")
        keys = sum(page.get("KeyCount", 0) for page in
                   s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
        where.append(f"s3://{bucket}/{prefix} ({keys} objects)")
    if prefs.get("cloudWatchLogGroupName"):
        group = prefs["cloudWatchLogGroupName"]
        streams = sum(len(page["logStreams"]) for page in
                      logs.get_paginator("describe_log_streams").paginate(logGroupName=group))
        where.append(f"CloudWatch Logs {group} ({streams} streams)")
    print("transcripts: " + (", ".join(where) or "not kept (the session preferences name no bucket or log group)"))
    ssh_sessions = sum(s.get("DocumentName") == "AWS-StartSSHSession" for s in every)
    sshd = sum(bool(a.get("sshd")) for a in _request(env["AWS_ENDPOINT_URL"], "agents")["agents"])
    print(f"SSH: {ssh_sessions} AWS-StartSSHSession sessions, {sshd} nodes with sshd, port 22 on this machine "
          f"{'open' if _port_open(22) else 'closed'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssm-lab", description="An offline AWS Session Manager lab on moto.")
    parser.add_argument("--state-dir", help="where the lab keeps its state (default: $SSM_LAB_STATE_DIR or .lab)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the lab; prints export lines for eval")
    up.add_argument("--nodes", type=int, default=3, help="EC2 nodes with an agent (default 3)")
    up.add_argument("--hybrid", type=int, default=0, help="hybrid mi- nodes with an agent")
    up.add_argument("--light-nodes", type=int, default=0,
                    help="EC2 nodes with an agent each that all share one sandbox (launched 500 per RunInstances; "
                         "docs/lab.md, 'Light nodes')")
    up.add_argument("--records", type=int, default=0,
                    help="EC2 instances registered in SSM with no agent process (launched 500 per RunInstances)")
    up.add_argument("--hybrid-records", type=int, default=0,
                    help="hybrid mi- nodes registered in SSM with no agent process")
    up.add_argument("--region-nodes", type=_region_nodes, action="append", metavar="REGION=N",
                    help="N more EC2 nodes with an agent in another region, e.g. us-west-2=2 (repeatable)")
    up.add_argument("--sshd", type=int, default=0, help="how many EC2 nodes answer AWS-StartSSHSession with sshd")
    up.add_argument("--platform", default="al2023", type=_platforms,
                    help="the EC2 nodes' platform, or a comma-separated list used in turn: "
                         + ", ".join(common.PLATFORMS) + " (default al2023)")
    up.add_argument("--provisioned", action="store_true", help="give the nodes a role, a profile and a NAT route")
    up.add_argument("--nat", action="store_true",
                    help="give the private subnets a NAT gateway route but the nodes no role (still offline)")
    up.add_argument("--profile", choices=sorted(("off", "aws", "flaky")), help="a latency and fault profile")
    up.add_argument("--faults", help='fault settings as JSON, e.g. {"api_delay": 0.1}')
    users = up.add_mutually_exclusive_group()
    users.add_argument("--iam-users", type=_iam_users, default=common.LAB_IAM_USERS, metavar="NAMES",
                       help="the IAM users to create, separated by commas (default: "
                            f"{','.join(common.LAB_IAM_USERS)}, the users inventories/lab maps for Run As: alice, "
                            "an operator, and moto, the identity of the lab's default credentials, which runs "
                            "site.yml; operator_access fails on a user IAM does not have)")
    users.add_argument("--no-iam-users", dest="iam_users", action="store_const", const=(),
                       help="create no IAM user (inventories/lab's site.yml then stops until alice and moto exist)")
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop everything").set_defaults(func=cmd_down)
    sub.add_parser("env", help="print the export lines of the running lab").set_defaults(func=cmd_env)
    status = sub.add_parser("status", help="nodes and their ping status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    faults = sub.add_parser("faults", help="show or set the latency and fault model")
    faults.add_argument("--profile", choices=sorted(("off", "aws", "flaky")))
    for name in ("api_delay", "session_start_delay", "stream_rtt", "s3_delay", "throttle_rate", "ack_timeout",
                 "resume_window", "open_window", "drop_channel_every", "stall_channel_after", "half_close_channel_after",
                 "expired_session_tokens"):
        faults.add_argument("--" + name.replace("_", "-"), dest=name, type=float)
    faults.add_argument("--handshake-agent-version", dest="handshake_agent_version", metavar="VERSION",
                        help='the agent version data channel handshakes announce ("" for each node\'s own)')
    faults.add_argument("--seed", type=int)
    faults.set_defaults(func=cmd_faults)

    agent = sub.add_parser("agent", help="stop, start or drop a node's agent")
    agent.add_argument("action", choices=("stop", "start", "drop"))
    agent.add_argument("node")
    agent.add_argument("--seconds", type=float, default=10.0, help="with drop: how long the agent stays away")
    agent.set_defaults(func=cmd_agent)

    shell = sub.add_parser("shell", help="an interactive shell on a node, as an IAM identity of the lab")
    shell.add_argument("node", help="an instance id (i-..., mi-...) or a Name tag (lab-node-1)")
    shell.add_argument("--as", dest="as_identity", metavar="IDENTITY",
                       help="an IAM user name (alice) or role/NAME; its policies and its Run As tag apply "
                            "(default: the lab's own credentials)")
    shell.add_argument("--document", help="a Session document other than the default shell")
    shell.add_argument("--plugin", help="the session-manager-plugin to run (default: the lab's, or "
                                        "$AWS_SESSION_MANAGER_PLUGIN as ssm-lab up exported it)")
    shell.set_defaults(func=cmd_shell)

    check = sub.add_parser("check-operator", help="try, as an IAM identity of the lab, what an operator may and may "
                                                  "not do: exit 1 when the lab allows otherwise")
    check.add_argument("identity", help="an IAM user name (alice) or role/NAME")
    check.add_argument("--node", help="an instance id or a Name tag (default: the first Online node)")
    check.set_defaults(func=cmd_check_operator)

    summary = sub.add_parser("summary", help="the nodes, the sessions and their transcripts, and what there is of SSH")
    summary.add_argument("--playbook-log", metavar="FILE", help="the output of an ansible-playbook run: its recap too")
    summary.set_defaults(func=cmd_summary)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
