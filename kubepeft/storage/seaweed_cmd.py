"""``kubepeft s3-server``: run the embedded S3 server (SeaweedFS) in the foreground.

Prints the endpoint and the folder holding the credential files -- never the secret itself.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from kubepeft.storage.seaweed import EmbeddedS3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=".kubepeft/s3", help="data folder; persists across restarts")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    parser.add_argument("--region", default="us-east-1")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with EmbeddedS3(args.data_dir, region=args.region) as server:
        for bucket in args.bucket:
            server.create_bucket(bucket)
        print(f"endpoint: {server.endpoint}", flush=True)
        print(f"region: {server.region}", flush=True)
        print(f"credentials: {server.credentials_dir} (files AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)", flush=True)
        print(f"buckets: {', '.join(args.bucket) or '(none)'}", flush=True)
        print(f"log: {server.log_path}", flush=True)
        print("ready; Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            if not server.running:
                print(f"weed mini exited unexpectedly; see {server.log_path}", flush=True)
                return 1
    return 0
