"""``kubepeft validate FILE...``: check PeftJob and PeftSweep manifests offline with the CRDs' own rules.

Prints ``<file>: ok`` per valid PeftJob and ``<file>: <field path>: <reason>`` per problem
(``<file>#<n>`` for the n-th document of a multi-document file, ``<file>:<line>`` for YAML
syntax errors). Exit status 1 when any problem was found, 0 otherwise. ``-`` reads stdin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubepeft.api.validate import FileResult, validate_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="PeftJob or PeftSweep YAML files ('-' for stdin)")


def _validate_file(name: str) -> FileResult:
    if name == "-":
        return validate_text(sys.stdin.read(), "<stdin>")
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return FileResult(name, problem=f"{name}: cannot read: {reason}")
    return validate_text(text, name)


def run(args: argparse.Namespace) -> int:
    all_ok = True
    for name in args.files:
        result = _validate_file(name)
        all_ok = all_ok and result.ok
        for line in result.lines():
            print(line)
    return 0 if all_ok else 1
