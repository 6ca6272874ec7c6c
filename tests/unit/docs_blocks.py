"""The fenced blocks of README.md and docs/*.md, and the lab mark each shell or YAML block carries.

A mark is an HTML comment on the line right above the block's opening fence (GitHub and Galaxy render neither):

  <!-- lab: run -->                     a shell block the docs runner (tests/integration/test_docs_pages.py) runs
                                        against its lab, after the blocks above it (README.md first, then docs/*.md
                                        in name order); ``<!-- lab: run, typing: whoami, expect: alice -->`` types
                                        the line (then ``exit``) into it and expects the text in what it prints
  <!-- lab: file PATH -->               a YAML block the runner writes to PATH (in the checkout) for the blocks below
  <!-- lab: teardown -->                a shell block the runner runs after every page's blocks (ssm-lab down)
  <!-- lab: covered-by FILE::TEST -->   a block an existing test runs: the test named exists in FILE
  <!-- lab: same-as PAGE -->            a copy of a run or teardown block of PAGE (the runner runs it there, once)
  <!-- lab: not: REASON -->             a block that cannot run in the lab (real AWS only, destructive, interactive,
                                        a fragment of a file of yours), and why

make demo runs the README's run and teardown blocks command by command (tests/lab/demo.sh, which reads them with
``python3 tests/unit/docs_blocks.py demo README.md``), and the docs runner runs the README through make demo: one
source. Both head each block's output with ``BEGIN`` and its place (README.md:46).
"""

import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHELL = frozenset({"bash", "sh", "shell", "console"})
YAML = frozenset({"yaml", "yml"})
KINDS = ("run", "file", "teardown", "covered-by", "same-as", "not")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARK = re.compile(r"^\s*<!-- lab: (?P<kind>[a-z-]+)(?P<rest>.*?) -->\s*$")
OPTION = re.compile(r",\s*(typing|expect):\s*([^,]+?)\s*(?=,|$)")
BEGIN = "### lab block:"  # the line before each block's output (tests/lab/demo.sh prints it too)


class Block:
    """One fenced block: where it is, its info string, its text and its mark (kind and argument), if any."""

    def __init__(self, page: str, line: int, info: str, text: str, mark: str | None) -> None:
        self.page, self.line, self.info, self.text = page, line, info, text
        self.kind, self.argument, self.options = None, "", {}
        self.mark = mark
        match = MARK.match(mark or "")
        if match:
            self.kind = match.group("kind")
            rest = match.group("rest")
            self.options = dict(OPTION.findall(rest))
            self.argument = OPTION.sub("", rest).lstrip(":").strip()

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def problems(self) -> list:
        """What is wrong with this block's mark, as sentences naming the block and the fix."""
        if not self.info:
            return [f"{self.where}: a fence without an info string; name the language (bash, yaml, text, ...)"]
        marked = self.mark is not None and MARK.match(self.mark) is not None
        if self.info not in SHELL | YAML:
            return []
        if not marked:
            return [f"{self.where}: a {self.info} block without a lab mark; put <!-- lab: run -->, <!-- lab: not: "
                    "REASON -->, ... on the line above it (tests/unit/docs_blocks.py lists the marks)"]
        if self.kind not in KINDS:
            return [f"{self.where}: unknown lab mark {self.kind!r}; one of {', '.join(KINDS)}"]
        if self.kind in ("run", "teardown") and self.info not in SHELL:
            return [f"{self.where}: lab: {self.kind} is for shell blocks; a YAML block the runner uses is lab: file PATH"]
        if self.kind == "file" and (self.info not in YAML or not self.argument or os.path.isabs(self.argument)):
            return [f"{self.where}: lab: file takes a YAML block and a path relative to the repository"]
        if self.kind == "not" and not self.argument:
            return [f"{self.where}: lab: not needs its reason (<!-- lab: not: real AWS only -->)"]
        if self.kind == "covered-by":
            path, _sep, test = self.argument.partition("::")
            source = os.path.join(ROOT, path)
            if not test or not os.path.isfile(source):
                return [f"{self.where}: lab: covered-by needs FILE::TEST of an existing test file, not {self.argument!r}"]
            with open(source, encoding="utf-8") as handle:
                if not re.search(rf"^\s*def {re.escape(test)}\(", handle.read(), re.M):
                    return [f"{self.where}: lab: covered-by names {test}, which {path} does not define"]
        if self.kind == "same-as":
            there = blocks(self.argument) if os.path.isfile(os.path.join(ROOT, self.argument)) else []
            if not any(b.kind in ("run", "teardown") and b.text == self.text for b in there):
                return [f"{self.where}: lab: same-as {self.argument}, but no run or teardown block there has this text; "
                        "copy the block as it is there, or mark this one run"]
        if set(self.options) - {"typing", "expect"} or (self.options and self.kind != "run"):
            return [f"{self.where}: typing and expect go with lab: run only"]
        return []


def pages() -> list:
    """README.md, then docs/*.md in name order: the order the runner runs their blocks in."""
    docs = os.path.join(ROOT, "docs")
    return ["README.md"] + sorted(f"docs/{name}" for name in os.listdir(docs) if name.endswith(".md"))


def blocks(page: str) -> list:
    """The fenced blocks of one page (a path relative to the repository), in the order the page shows them."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    found, number = [], 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if not opening:
            number += 1
            continue
        indent, info = opening.groups()
        end = number + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        text = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[number + 1:end])
        above = lines[number - 1] if number else ""
        found.append(Block(page, number + 1, info, text + "\n", above if MARK.match(above) else None))
        number = end + 1
    return found


def all_blocks() -> list:
    return [block for page in pages() for block in blocks(page)]


def commands(text: str) -> list:
    """A shell block's commands as a user types them: one a line, a line ending in a backslash joined with the next;
    blank lines and comment lines left out. A block that is not a list of commands (a here-document, a loop over
    lines) raises ValueError: make demo would run it differently than it reads."""
    found, pending = [], ""
    for line in text.rstrip("\n").split("\n"):
        line = pending + line
        if line.endswith("\\"):
            pending = line + "\n"
            continue
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            if "<<" in line or re.match(r"\s*(for|while|until|if|case|function)\b|.*\{\s*$", line):
                raise ValueError(f"not a command of its own: {line!r}; make demo runs a block line by line")
            found.append(line)
    if pending:
        raise ValueError(f"the last line ends in a backslash: {pending!r}")
    return found


def demo_commands(page: str) -> list:
    """(kind, place, command) for each command of the page's run blocks, then of its teardown blocks: what make demo
    runs (tests/lab/demo.sh). Raises ValueError naming a block it cannot run as typed commands."""
    found = []
    for kind in ("run", "teardown"):
        for block in blocks(page):
            if block.kind == "file" or (block.kind == kind and "typing" in block.options):
                raise ValueError(f"{block.where}: make demo runs {page}'s shell blocks as typed commands; a "
                                 "lab: file block or one with typing belongs on a page under docs/")
            if block.kind == kind:
                try:
                    found += [(kind, block.where, command) for command in commands(block.text)]
                except ValueError as error:
                    raise ValueError(f"{block.where}: {error}") from None
    return found


def main(argv: list) -> int:
    """``docs_blocks.py demo PAGE``: demo_commands(PAGE), each field ended by a NUL byte (for bash's mapfile -d '')."""
    if len(argv) != 2 or argv[0] != "demo":
        sys.stderr.write("usage: docs_blocks.py demo PAGE (README.md)\n")
        return 2
    try:
        found = demo_commands(argv[1])
    except (OSError, ValueError) as error:
        sys.stderr.write(f"docs_blocks.py: {error}\n")
        return 1
    sys.stdout.write("".join(f"{field}\0" for record in found for field in record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
