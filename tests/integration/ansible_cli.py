"""Run ansible commands from the repository root against a lab and read their play recap; run tasks or one module in
a play on the controller and read the module's result."""

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import NamedTuple

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# BASTIONLESS_TEST_CONNECTION=bastionless.ssm.session runs every node task of these tests over that connection;
# BASTIONLESS_TEST_CONNECTION=bastionless.ssm.session=i-1,i-2 only those nodes' tasks (the others keep the inventory's
# connection, so one run drives both connections). The lab inventory gives each node its ansible_connection as a host
# variable, so one more inventory source (constructed, after the others) sets it for the hosts that have an instance
# id; localhost, even delegated to, keeps its own.
CONNECTION_ENV = "BASTIONLESS_TEST_CONNECTION"
CONSTRUCTED = """plugin: ansible.builtin.constructed
strict: false
compose:
  ansible_connection: "ansible_aws_ssm_instance_id | ternary('{connection}', '{connection}')"
"""
CONSTRUCTED_SOME = """plugin: ansible.builtin.constructed
strict: false
compose:
  ansible_connection: "(ansible_aws_ssm_instance_id in {nodes}) | ternary('{connection}', ansible_connection)"
"""
SAVE_CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")
FAILURES_ENV = "BASTIONLESS_TEST_FAILURES"  # where the save_results callback writes the failed tasks, by host
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# A traceback on stderr (a plugin's __del__, a worker) counts as a warning too.
WARNING_MARKS = ("[WARNING]", "[DEPRECATION WARNING]", "Warning:", "Traceback (most recent call last)", "Exception ignored in")


def warnings_in(output: str) -> list:
    """The lines of an ansible run that warn or show a traceback."""
    return [line for line in output.splitlines() if any(mark in line for mark in WARNING_MARKS)]


def run(lab, *argv, check=True, unset=(), env=None):
    """Run an ansible command from the repository root against the lab; return (output, recap by host).

    ``unset``: names of the lab's environment variables to leave out (``AWS_REGION``, to take it from inventory);
    ``env``: more environment variables."""
    argv, extra_env = with_test_connection(argv)
    env = lab.environ(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **saving_environ(), **extra_env, **(env or {}))
    for name in unset:
        env.pop(name, None)
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if extra_env:
        shutil.rmtree(os.path.dirname(argv[-1]), ignore_errors=True)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        # What failed may be far above the tail: the task line before each failure, and the failure itself.
        task, failed = "", []
        for line in output.splitlines():
            if line.startswith("TASK ["):
                task = line
            elif "UNREACHABLE!" in line or line.startswith("fatal:"):
                failed.append(f"{task}\n{line[:2000]}")
        failures = "\n".join(failed)
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{failures}\n...\n{output[-6000:]}")
    recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                          "failed": int(m.group(5))} for m in RECAP.finditer(result.stdout)}
    return output, recap


def with_test_connection(argv) -> tuple:
    """(argv, extra environment) choosing the node connection of BASTIONLESS_TEST_CONNECTION, when it is set."""
    argv, connection = list(argv), os.environ.get(CONNECTION_ENV, "")
    if not connection or os.path.basename(argv[0]) not in ("ansible", "ansible-playbook") or "-i" not in argv:
        return argv, {}
    connection, _sep, nodes = connection.partition("=")
    directory = tempfile.mkdtemp(prefix="test-connection-")
    path = os.path.join(directory, "connection.yml")
    with open(path, "w", encoding="utf-8") as handle:
        if nodes:
            handle.write(CONSTRUCTED_SOME.format(connection=connection, nodes=[str(n) for n in nodes.split(",")]))
        else:
            handle.write(CONSTRUCTED.format(connection=connection))
    return argv + ["-i", path], {"ANSIBLE_INVENTORY_ENABLED": "host_list,script,auto,yaml,ini,toml,constructed"}


def write_controller_playbook(tmp_path, tasks: list, filename: str = "playbook.yml") -> str:
    """A playbook of one play that runs ``tasks`` on localhost (the controller, where the provisioning modules run);
    returns its path."""
    path = tmp_path / filename
    path.write_text(json.dumps([{
        "name": "On the controller", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}, "tasks": tasks,
    }]))
    return str(path)


def module_examples(module: str) -> list:
    """The tasks of a module's EXAMPLES, read from its source."""
    with open(os.path.join(ROOT, "plugins", "modules", f"{module}.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    text = next(node.value.value for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXAMPLES")
    return yaml.safe_load(text)


def controller_play(lab, tmp_path, tasks: list, *flags: str, inventory: str = "localhost,", check: bool = True,
                    env=None, unset=()):
    """Run ``tasks`` on localhost against the lab (``flags``: more ansible-playbook options; ``env``, ``unset``: as
    for ``run``); return (output, recap)."""
    return run(lab, "ansible-playbook", "-i", inventory, write_controller_playbook(tmp_path, tasks), *flags,
               check=check, env=env, unset=unset)


def save_task(var: str, path, at_once: bool = False) -> dict:
    """A task that has the variable ``var`` written to ``path`` as JSON when the run ends, also in check mode,
    reporting no change: a custom stat that the save_results callback of every ``run`` writes out (no module run).

    ``at_once``: written by the task itself (a copy task: two module runs), for a test that reads it mid-play."""
    if at_once:
        copy = {"content": "{{ " + var + " | to_json }}", "dest": str(path)}
        return {"name": f"Save {var}", "ansible.builtin.copy": copy, "check_mode": False, "changed_when": False}
    key = "bastionless_test_save_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return {"name": f"Save {var}", "ansible.builtin.set_stats": {
        "data": {key: {"path": str(path), "value": "{{ " + var + " }}"}}, "per_host": False, "aggregate": False},
        "check_mode": False, "changed_when": False}


def saving_environ() -> dict:
    """The environment that enables the save_results callback (what save_task sets aside, written at the end)."""
    return {"ANSIBLE_CALLBACK_PLUGINS": SAVE_CALLBACKS, "ANSIBLE_CALLBACKS_ENABLED": "save_results"}


def call_module(lab, tmp_path, module: str, args: dict, *flags: str, fails: bool | None = False, env=None,
                unset=()):
    """Run ``module`` once with ``args`` in a play on the controller; return (result, output, recap).

    ``fails``: whether the call must fail (the run goes on either way, and the result says why); None: either way.
    ``env``, ``unset``: as for ``run``."""
    result_file = tmp_path / "result.json"
    result_file.unlink(missing_ok=True)
    output, recap = controller_play(lab, tmp_path, [
        {"name": "Call the module", module: args, "register": "__result", "ignore_errors": fails is not False},
        save_task("__result", result_file),
    ], *flags, env=env, unset=unset)
    result = json.loads(result_file.read_text())
    if fails is not None:
        assert result.get("failed", False) is fails, output
    return result, output, recap


class Cases(NamedTuple):
    """What call_module_cases ran: each case's result, the run's output, and what ``observe`` saw before and after."""

    results: list
    output: str
    before: object = None
    after: object = None


def call_module_cases(lab, tmp_path, module, cases: list, *flags: str, observe=None) -> Cases:
    """Run ``module`` once per args dict of ``cases``, all in one play on the controller (one ansible-playbook run
    for many bad inputs). No case stops the others.

    ``module``: the module's name, or a list of names, one for each case. ``observe``: a function called before and
    after the run (what the cases must leave unchanged)."""
    modules = [module] * len(cases) if isinstance(module, str) else list(module)
    before = observe() if observe else None
    result_file = tmp_path / "results.json"
    result_file.unlink(missing_ok=True)
    tasks = [{"name": f"Case {index}", name: args, "register": f"__case_{index}", "ignore_errors": True}
             for index, (name, args) in enumerate(zip(modules, cases))]
    names = ", ".join(f"__case_{index}" for index in range(len(cases)))
    output, _recap = controller_play(lab, tmp_path, [*tasks, save_task(f"[{names}]", result_file)], *flags)
    return Cases(json.loads(result_file.read_text()), output, before, observe() if observe else None)


class CaseRun(NamedTuple):
    """What run_cases ran: the run's output, and by case its recap and its failures (each failed or unreachable task:
    ``task``, ``outcome``, ``msg``, ``stderr``)."""

    output: str
    recap: dict
    failures: dict

    def only_failure(self, case: str) -> str:
        """The message of the one task that failed for ``case`` (fails the test unless exactly one did)."""
        failed = self.failures.get(case, [])
        assert len(failed) == 1 and self.recap[case]["failed"] == 1, f"{case}: {failed}\n{self.output[-6000:]}"
        return " ".join(f"{failed[0]['msg']} {failed[0]['stderr']}".split())


def node_variables(lab, node: str, inventory: str = "inventories/lab") -> dict:
    """The host variables ``inventory`` gives ``node`` (its connection settings among them)."""
    output, _recap = run(lab, "ansible-inventory", "-i", inventory, "--host", node)
    return json.loads(output[output.index("{"):output.rindex("}") + 1])


def run_cases(lab, tmp_path, role: str, cases: dict, *flags: str, role_vars: dict | None = None,
              node_vars: dict | None = None) -> CaseRun:
    """One ansible-playbook run of ``role`` for many cases: each case is a host of its own, named by its key, with
    the case's variables as host variables (``role_vars``, for every case, below them). The hosts are the controller
    (connection local) or, with ``node_vars`` (node_variables of a lab node), that node under as many names.

    For bad input: each case fails on its own host while the others go on, in one run instead of one each."""
    base = node_vars if node_vars is not None else {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inventory = tmp_path / "cases.json"
    inventory.write_text(json.dumps({"all": {"vars": role_vars or {},
                                             "hosts": {name: {**base, **case} for name, case in cases.items()}}}))
    playbook = tmp_path / "cases.yml"
    playbook.write_text(json.dumps([{"name": f"The cases of {role}", "hosts": "all", "gather_facts": False,
                                     "roles": [{"role": role}]}]))
    failures = tmp_path / "failures.json"
    failures.unlink(missing_ok=True)
    output, recap = run(lab, "ansible-playbook", "-i", str(inventory), str(playbook), *flags, check=False,
                        env={FAILURES_ENV: str(failures)})
    return CaseRun(output, recap, json.loads(failures.read_text()) if failures.exists() else {})
