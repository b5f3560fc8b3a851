"""``kubepeft verify URI``: check an artifact set against its manifest.

Exit 0 when every file matches, 1 on a mismatch or missing file (named on stderr), 2 when the
set has no manifest (incomplete) or on bad usage (an ``--endpoint`` that is not a URL), 3 on other
storage errors.
"""

from __future__ import annotations

import argparse
import sys

from kubepeft.cli import endpoint_url
from kubepeft.storage.errors import IncompleteError, IntegrityError, StorageError
from kubepeft.storage.factory import open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "exit status: 0 match, 1 mismatch or missing file, 2 incomplete or bad usage, 3 other storage error"
    parser.add_argument("uri", help="s3://bucket/prefix or an absolute path holding a manifest.json")
    parser.add_argument("--endpoint", type=endpoint_url, help="S3-compatible endpoint URL (http:// or https://)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--credentials-dir", help="folder with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY files")
    parser.add_argument("--virtual-host-style", action="store_true", help="virtual-hosted addressing instead of path")


def run(args: argparse.Namespace) -> int:
    try:
        store = open_store(
            args.uri,
            endpoint=args.endpoint,
            region=args.region,
            force_path_style=not args.virtual_host_style,
            credentials_dir=args.credentials_dir,
        )
        manifest = store.verify(args.uri)
    except IntegrityError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except IncompleteError as exc:
        print(f"INCOMPLETE: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"ERROR ({'retryable' if exc.retryable else 'permanent'}): {exc}", file=sys.stderr)
        return 3
    kind = manifest.metadata.get("kind", "artifacts")
    print(f"OK: {args.uri}: {len(manifest.files)} files, {manifest.total_bytes} bytes ({kind}) match the manifest")
    return 0
