"""The collection's own code, which the lab does not write again: a module of the repository's ``plugins/`` (one
that imports only the standard library and the lab's own dependencies), loaded by its path from the repository the
lab is installed from. The data channel's codec (``codec.py``) and the IAM policy evaluator (``aws/iamsim.py``)
come from there, so that the collection and the lab share one copy of each.
"""

from __future__ import annotations

import importlib.util
import os
import sys

REPOSITORY = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def load_collection_module(filename: str, name: str, directory: str = "plugin_utils"):
    """``plugins/<directory>/<filename>`` of the repository, loaded once as the module ``name``."""
    if name not in sys.modules:
        path = os.path.join(REPOSITORY, "plugins", directory, filename)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
