"""The environment variable through which pytest-xdist workers find their namespace.

Its own module: every pytest start reads it, and only a worker that finds it set loads
the namespace code (and ctypes under it).
"""

from __future__ import annotations

#: Set by a process that entered a user namespace for its pytest-xdist workers to adopt.
INHERIT_ENV = "PYTEST_OVERLAY_USERNS"
