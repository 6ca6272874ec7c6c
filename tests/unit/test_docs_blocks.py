"""Every shell and YAML block of README.md and docs/ says whether the docs runner runs it, and a bad mark is named."""

import docs_blocks
import pytest


def test_every_shell_and_yaml_block_of_the_pages_is_marked():
    problems = [problem for block in docs_blocks.all_blocks() for problem in block.problems()]
    assert problems == [], "\n".join(problems)


def test_the_runner_has_blocks_to_run():
    kinds = [block.kind for block in docs_blocks.all_blocks()]
    assert kinds.count("run") >= 5 and "teardown" in kinds


def _block(tmp_path, monkeypatch, text):
    monkeypatch.setattr(docs_blocks, "ROOT", str(tmp_path))
    (tmp_path / "page.md").write_text(text, encoding="utf-8")
    return docs_blocks.blocks("page.md")


@pytest.mark.parametrize("page, found", [
    ("```bash\nls\n```\n", "a bash block without a lab mark"),
    ("<!-- lab: maybe -->\n```bash\nls\n```\n", "unknown lab mark 'maybe'"),
    ("<!-- lab: not -->\n```yaml\na: 1\n```\n", "lab: not needs its reason"),
    ("<!-- lab: run -->\n```yaml\na: 1\n```\n", "lab: run is for shell blocks"),
    ("<!-- lab: file /etc/x.yml -->\n```yaml\na: 1\n```\n", "lab: file takes a YAML block and a path relative"),
    ("<!-- lab: covered-by tests/none.py::test_x -->\n```bash\nls\n```\n", "needs FILE::TEST of an existing test file"),
    ("<!-- lab: covered-by page.md::test_x -->\n```bash\nls\n```\n", "names test_x, which page.md does not define"),
    ("<!-- lab: not: AWS, typing: ls -->\n```bash\nls\n```\n", "typing and expect go with lab: run only"),
    ("```\nsome output\n```\n", "a fence without an info string"),
])
def test_a_bad_or_missing_mark_is_named_with_its_place(tmp_path, monkeypatch, page, found):
    (block,) = _block(tmp_path, monkeypatch, "text\n" + page)
    (problem,) = block.problems()
    fence = 2 + page.split("\n").index(next(line for line in page.split("\n") if line.startswith("```")))
    assert problem.startswith(f"page.md:{fence}: ") and found in problem, problem


def test_marks_are_read_with_their_argument_and_options(tmp_path, monkeypatch):
    page = ("<!-- lab: run, typing: whoami, expect: alice -->\n```bash\nssm-lab shell n\n```\n"
            "<!-- lab: file play.yml -->\n```yaml\n- hosts: all\n```\n"
            "<!-- lab: not: real AWS only -->\n  ```bash\n  aws ssm describe-sessions\n  ```\n"
            "```text\noutput\n```\n")
    run, file, not_lab, text = _block(tmp_path, monkeypatch, page)
    assert (run.kind, run.argument, run.options, run.text) == ("run", "", {"typing": "whoami", "expect": "alice"},
                                                               "ssm-lab shell n\n")
    assert (file.kind, file.argument, file.text) == ("file", "play.yml", "- hosts: all\n")
    assert (not_lab.kind, not_lab.argument, not_lab.text) == ("not", "real AWS only", "aws ssm describe-sessions\n")
    assert (text.kind, text.problems()) == (None, [])
    assert [b.problems() for b in (run, file, not_lab)] == [[], [], []]


def test_make_demo_reads_the_readmes_blocks_as_the_commands_a_user_types(tmp_path, monkeypatch):
    """tests/lab/demo.sh runs each command of the README's run blocks, then of its teardown blocks, in its own shell."""
    page = ("<!-- lab: teardown -->\n```bash\nssm-lab down\n```\n"
            "<!-- lab: run, expect: up -->\n```bash\n# a comment\nmake venv \\\n  collection   # two lines\n\n"
            "eval \"$(ssm-lab up)\"\n```\n<!-- lab: not: real AWS -->\n```bash\naws s3 ls\n```\n")
    _block(tmp_path, monkeypatch, page)
    assert docs_blocks.demo_commands("page.md") == [
        ("run", "page.md:6", "make venv \\\n  collection   # two lines"), ("run", "page.md:6", 'eval "$(ssm-lab up)"'),
        ("teardown", "page.md:2", "ssm-lab down")]


@pytest.mark.parametrize("page, found", [
    ("<!-- lab: run -->\n```bash\ncat > x <<EOF\na\nEOF\n```\n", "page.md:2: not a command of its own: 'cat > x <<EOF'"),
    ("<!-- lab: run -->\n```bash\nfor n in 1 2; do\n  echo $n\ndone\n```\n", "not a command of its own: 'for n in"),
    ("<!-- lab: run -->\n```bash\nls \\\n```\n", "the last line ends in a backslash"),
    ("<!-- lab: run, typing: whoami -->\n```bash\nssm-lab shell n\n```\n", "page.md:2: make demo runs page.md's shell"),
    ("<!-- lab: file x.yml -->\n```yaml\na: 1\n```\n", "a lab: file block or one with typing belongs on a page"),
])
def test_make_demo_refuses_a_block_it_would_not_run_as_typed(tmp_path, monkeypatch, page, found):
    _block(tmp_path, monkeypatch, page)
    with pytest.raises(ValueError) as raised:
        docs_blocks.demo_commands("page.md")
    assert found in str(raised.value), raised.value


def test_the_readme_is_what_make_demo_runs():
    found = docs_blocks.demo_commands("README.md")
    commands = [command for _kind, _where, command in found]
    assert commands[0].startswith("make venv collection") and found[-1][:2] == ("teardown", found[-1][1])
    assert any(c.startswith("ansible-playbook -i inventories/lab playbooks/site.yml") for c in commands), commands
