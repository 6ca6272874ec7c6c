"""The data channel's codec, which the lab does not write again: the collection's own
``plugins/plugin_utils/_data_channel.py``, loaded from the repository the lab is installed from. The service's end
of the channel (``aws/wire.py``) and the client stand-in (``client/plugin.py``) both speak through it, so the
protocol is written once, for the collection and the lab.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def load_collection_module(filename: str, name: str):
    """A module of the collection's plugins/plugin_utils, loaded as ``name`` from the repository the lab is installed
    from (standard library and websockets only): the protocol is written once, for the collection and the lab."""
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "plugins", "plugin_utils",
                            filename)
        spec = importlib.util.spec_from_file_location(name, os.path.normpath(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


dc = load_collection_module("_data_channel.py", "bastionless_data_channel")
