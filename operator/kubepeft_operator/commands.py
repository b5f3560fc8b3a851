"""The operator plane's ``kubepeft`` subcommand (an entry point of group ``kubepeft.commands``).

Kept free of heavy imports: ``kubepeft --help`` loads this module to list the commands.
"""

from __future__ import annotations

from kubepeft.commands import Command

OPERATOR = Command(
    "kubepeft_operator.main", "run the kopf operator", order=110, plane="operator", needs=("kopf", "kubernetes")
)
