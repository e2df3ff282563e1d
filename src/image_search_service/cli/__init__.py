"""The ``image-search`` command: one click group, a module per command family.

Importing this package loads no model runtime, vector store or web framework:
each command imports what it needs when it runs, so ``--help`` is instant.
"""

from __future__ import annotations

from image_search_service.cli import keys, library, reembed, rollout, search, server
from image_search_service.cli.common import main

for _module in (library, search, reembed, server, rollout, keys):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
