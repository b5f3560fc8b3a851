"""The ``kubepeft`` command. Each subcommand lives in its own module, imported only when used
(``kubepeft validate`` must not pay for importing torch).

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("kubepeft.api.validate_cmd", "check PeftJob and PeftSweep manifests offline with the CRDs' rules"),
    "crds": ("kubepeft.api.crd_cmd", "print or write the generated CRD"),
    "run": ("kubepeft.local.run_cmd", "run a PeftJob or a PeftSweep on this machine, no cluster needed"),
    "sample": ("kubepeft.local.sample_cmd", "answer prompts with a prompt bank's tasks (one base, adapters switched)"),
    "sweep-report": (
        "kubepeft.sweep.report_cmd",
        "write a sweep's comparison report (run by the operator's report pod)",
    ),
    "demo": ("kubepeft.local.demo_cmd", "build a tiny model and run examples/tiny-lora.yaml end to end"),
    "train": ("kubepeft_trainer.main", "the trainer entry point worker pods run"),
    "tiny-model": ("kubepeft_trainer.tiny_model_cmd", "build a tiny Llama-style model and tokenizer offline"),
    "verify": ("kubepeft.storage.verify_cmd", "verify an artifact set against its manifest"),
    "s3-server": ("kubepeft.storage.seaweed_cmd", "run the embedded S3 server (SeaweedFS) in the foreground"),
    "operator": ("kubepeft_operator.main", "run the kopf operator"),
}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubepeft",
        description="Kubernetes-native PEFT fine-tuning.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in SUBCOMMANDS:
        build_parser().parse_args(args)  # prints usage / the error, exits
        return 2
    name, rest = args[0], args[1:]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"kubepeft {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
