"""Make this working tree importable as ``ansible_collections.bastionless.ssm`` for the unit tests.

The tests import the collection's modules by their real name, as ansible-test units would. A symlink
``<tmp>/ansible_collections/bastionless/ssm`` -> the repository root is put on ``sys.path``; ``ansible_collections``
is a namespace package, so amazon.aws keeps resolving from site-packages beside it.
"""

import atexit
import os
import shutil
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_BASE = tempfile.mkdtemp(prefix="bastionless-units-")
os.makedirs(os.path.join(_BASE, "ansible_collections", "bastionless"))
os.symlink(ROOT, os.path.join(_BASE, "ansible_collections", "bastionless", "ssm"))
sys.path.insert(0, _BASE)
atexit.register(shutil.rmtree, _BASE, True)  # removes the link, never what it points to
