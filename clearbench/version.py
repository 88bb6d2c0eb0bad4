"""The installed clearbench version, in a module of its own.

Every layer stamps it into what it writes (run configs, embedding metadata, boards); reading it from
here instead of the package root keeps the root's lazy API table out of the import graph.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clearbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
