"""CLI commands for collections, re-embedding and workers (registered by cli.py)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
