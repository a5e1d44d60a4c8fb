"""Linux mechanics: system calls, mounts, namespaces, tmpfs, workspaces, cleanup.

Nothing here knows about layers, backends or pytest; it imports only ``_errors``."""
