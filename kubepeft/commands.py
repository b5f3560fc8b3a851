"""What a ``kubepeft`` subcommand is, and the core's own subcommands.

Every subcommand -- the core's, the trainer's and the operator's -- is registered as an entry
point in the group ``kubepeft.commands`` (see ``pyproject.toml``) whose object is a
:class:`Command`. The CLI discovers them with :mod:`importlib.metadata`, so the core never
imports either plane: a plane whose package or dependencies are missing simply lacks its
commands, and the CLI says which extra to install.

The :class:`Command` objects live in small modules without heavy imports (``kubepeft.commands``,
``kubepeft_trainer.commands``, ``kubepeft_operator.commands``): ``kubepeft --help`` loads them
all, and only the module of the command that runs is imported (``kubepeft validate`` must not
pay for importing torch).
"""

from __future__ import annotations

from dataclasses import dataclass

ENTRY_POINT_GROUP = "kubepeft.commands"


@dataclass(frozen=True)
class Command:
    """One subcommand: ``module`` exposes ``add_arguments(parser)`` and ``run(args) -> int``."""

    module: str
    help: str
    order: int  # its place in ``kubepeft --help``
    plane: str = "core"  # the optional dependency set (pip extra) it needs; "core" for none
    needs: tuple[str, ...] = ()  # top-level modules checked before importing ``module``


VALIDATE = Command(
    "kubepeft.api.validate_cmd", "check PeftJob and PeftSweep manifests offline with the CRDs' rules", order=10
)
CRDS = Command("kubepeft.api.crd_cmd", "print or write the generated CRD", order=20)
RUN = Command("kubepeft.local.run_cmd", "run a PeftJob or a PeftSweep on this machine, no cluster needed", order=30)
SWEEP_REPORT = Command(
    "kubepeft.sweep.report_cmd", "write a sweep's comparison report (run by the operator's report pod)", order=50
)
VERIFY = Command("kubepeft.storage.verify_cmd", "verify an artifact set against its manifest", order=90)
S3_SERVER = Command(
    "kubepeft.storage.seaweed_cmd", "run the embedded S3 server (SeaweedFS) in the foreground", order=100
)
