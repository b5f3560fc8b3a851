"""``kubepeft validate FILE...``: check PeftJob and PeftSweep manifests offline with the CRDs' own rules.

Prints ``<file>: ok`` per valid PeftJob and ``<file>: <field path>: <reason>`` per problem
(``<file>#<n>`` for the n-th document of a multi-document file, ``<file>:<line>: <reason>`` for
YAML that cannot be read: syntax, limits, types JSON cannot hold). ``-`` reads stdin. Files are
read as ``kubepeft run`` reads them, with the API server's limits (see
:mod:`kubepeft.api.yaml_input`), and checked by the same function, so ``validate`` says ok exactly
when ``run`` would accept the file.

Exit status: 0 every PeftJob is valid; 1 a problem was found (listed on stdout); 2 bad usage.
"""

from __future__ import annotations

import argparse

from kubepeft.api.validate import FileResult, validate_text
from kubepeft.api.yaml_input import ManifestInputError, read_manifest

EXIT_OK = 0
EXIT_INVALID = 1

EPILOG = "exit status: 0 all valid, 1 a problem was found (printed as FILE: FIELD: REASON), 2 bad usage"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("files", nargs="+", metavar="FILE", help="PeftJob or PeftSweep YAML files ('-' for stdin)")


def _validate_file(name: str) -> FileResult:
    try:
        text = read_manifest(name)
    except ManifestInputError as error:
        return FileResult(error.source, problem=str(error))
    return validate_text(text, "<stdin>" if name == "-" else name)


def run(args: argparse.Namespace) -> int:
    all_ok = True
    for name in args.files:
        result = _validate_file(name)
        all_ok = all_ok and result.ok
        for line in result.lines():
            print(line)
    return EXIT_OK if all_ok else EXIT_INVALID
