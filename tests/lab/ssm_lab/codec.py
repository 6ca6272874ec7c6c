"""The data channel's codec, which the lab does not write again: the collection's own
``plugins/plugin_utils/_data_channel.py``, loaded from the repository the lab is installed from. The service's end
of the channel (``aws/wire.py``) and the client stand-in (``client/plugin.py``) both speak through it, so the
protocol is written once, for the collection and the lab.
"""

from __future__ import annotations

from .collection import load_collection_module  # noqa: F401  (client/plugin.py loads through it too)

dc = load_collection_module("_data_channel.py", "bastionless_data_channel")
