"""``kubepeft sweep-report --input FILE``: write a sweep's comparison report (the cluster's report pod).

The operator has no storage credentials (by design), so when a sweep ends it starts one pod with
the trainer image and the template's output credentials, handing it the sweep's spec and status
in a ConfigMap; this command renders and uploads the report exactly as ``kubepeft run`` does
locally (:func:`kubepeft.sweep.report.write_report`, manifest last). Exit 0, 1 (retryable storage
error) or 3 (bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus
from kubepeft.contract import EXIT_PERMANENT, EXIT_RETRYABLE, output_root
from kubepeft.sources import local_path
from kubepeft.storage import StorageError, open_store_for
from kubepeft.sweep.report import write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="JSON: name, namespace, spec, status, endpoint")
    parser.add_argument("--credentials-dir", type=Path, default=None, help="folder with the output's S3 key files")


def run(args: argparse.Namespace) -> int:
    try:
        document = json.loads(args.input.read_text(encoding="utf-8"))
        spec = PeftSweepSpec.model_validate(document["spec"])
        status = PeftSweepStatus.model_validate(document["status"])
        name, namespace = str(document["name"]), str(document["namespace"])
    except (OSError, ValueError, KeyError, ValidationError) as error:
        print(f"sweep-report: bad input {args.input}: {error}", file=sys.stderr)
        return EXIT_PERMANENT
    output = spec.template.output
    credentials = args.credentials_dir if args.credentials_dir and args.credentials_dir.is_dir() else None
    root = output_root(spec.template, namespace, name)
    try:
        # An output on a claim is where the report pod mounts it.
        where = local_path(spec.template, root)
        store = open_store_for(where, output, endpoint=document.get("endpoint"), credentials_dir=credentials)
        with tempfile.TemporaryDirectory() as tmp:
            report = write_report(store, root, Path(tmp), name, spec, status)
    except StorageError as error:
        print(f"sweep-report: storage: {error}", file=sys.stderr)
        return EXIT_RETRYABLE if error.retryable else EXIT_PERMANENT
    print(json.dumps(report.to_wire()))
    return 0
