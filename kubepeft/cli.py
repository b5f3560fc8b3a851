"""The ``kubepeft`` command. Each subcommand lives in its own module, imported only when used
(``kubepeft validate`` must not pay for importing torch).

Subcommands are found through entry points (group ``kubepeft.commands``, see
:mod:`kubepeft.commands`): the core registers its own and each plane registers its own, so the
core never imports the trainer or the operator. A subcommand module exposes
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType
from urllib.parse import urlsplit

from kubepeft.commands import ENTRY_POINT_GROUP, Command

# Import roots of this project: a missing one is a broken install, not a missing plane.
OWN_PACKAGES = ("kubepeft", "kubepeft_trainer", "kubepeft_operator")
EXIT_PLANE_MISSING = 2


def discover_commands() -> dict[str, Command]:
    """Every installed subcommand by name, in ``--help`` order; a registration that cannot be
    loaded (its plane's package is absent) is left out."""
    found: list[tuple[int, str, Command]] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            command = entry.load()
        except ImportError:
            continue
        if isinstance(command, Command):
            found.append((command.order, entry.name, command))
    return {name: command for _order, name, command in sorted(found, key=lambda item: (item[0], item[1]))}


class PlaneMissing(Exception):
    """A subcommand's plane (its optional dependencies) is not installed."""


def plane_missing_message(name: str, command: Command, missing: Sequence[str]) -> str:
    return (
        f"kubepeft {name}: needs the {command.plane} plane, which is not installed here "
        f"(missing: {', '.join(missing)}); install it with: pip install 'kubepeft[{command.plane}]'"
    )


def load_command_module(name: str, command: Command) -> ModuleType:
    """The command's module; raises :class:`PlaneMissing` when its plane's dependencies are absent."""
    missing = [module for module in command.needs if importlib.util.find_spec(module) is None]
    if missing:
        raise PlaneMissing(plane_missing_message(name, command, missing))
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        root = (error.name or "").split(".", 1)[0]
        if not root or root in OWN_PACKAGES:
            raise
        raise PlaneMissing(plane_missing_message(name, command, [root])) from error


NO_COMMANDS = (
    "kubepeft: no commands are registered (group kubepeft.commands): the installed package metadata is "
    "older than this checkout, or a stale kubepeft.egg-info in the current folder hides it. "
    "Reinstall with `make setup` (or `pip install -e .`)."
)

EXIT_CODES = """\
exit status (see docs/local-run.md, "Exit codes"):
  validate  0 all valid, 1 a problem was found, 2 bad usage
  run       0 succeeded, 1 retryable failure (run again to resume), 2 input refused before
            anything ran (invalid manifest, unreadable file, bad flag), 3 permanent failure,
            130 interrupted
  verify    0 matches its manifest, 1 mismatch or missing file, 2 incomplete (no manifest)
            or bad usage, 3 other storage error"""


def endpoint_url(value: str) -> str:
    """argparse type of ``--endpoint``: an ``http(s)://host[:port][/path]`` URL, refused early
    with a usage error instead of a traceback from the S3 client."""
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # e.g. a port that is not a number or out of range
        port_ok = False
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or any(c.isspace() for c in value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL with a host")
    return value


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubepeft",
        description="Kubernetes-native PEFT fine-tuning.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in commands.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = discover_commands()
    if not commands:  # the installed metadata predates the entry points (or shadows them)
        print(NO_COMMANDS, file=sys.stderr)
        return EXIT_PLANE_MISSING
    if not args or args[0] in ("-h", "--help") or args[0] not in commands:
        build_parser(commands).parse_args(args)  # prints usage / the error, exits
        return 2
    name, rest = args[0], args[1:]
    command = commands[name]
    try:
        module = load_command_module(name, command)
    except PlaneMissing as error:
        print(error, file=sys.stderr)
        return EXIT_PLANE_MISSING
    parser = argparse.ArgumentParser(prog=f"kubepeft {name}", description=command.help)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
