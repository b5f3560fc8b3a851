"""Storage throughput: kubepeft storage versus `aws s3 cp --recursive`, same server, same files.

Starts its own EmbeddedS3 (SeaweedFS), writes a directory of a few random shards, then runs
alternating rounds of (kubepeft upload, kubepeft download, awscli upload, awscli download).
kubepeft does more work per byte (sha256 of every file, a per-part SHA256 checksum, a manifest,
verification of every downloaded file); awscli only sends its default CRC32.

Last line: ``RESULT storage ratio=<kubepeft MB/s / awscli MB/s, upload+download> up_mbs=...``.
    python bench/storage_throughput.py [--size-mb 256] [--rounds 3] [--shards 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubepeft.storage import open_store
from kubepeft.storage.seaweed import EmbeddedS3

MB = 1024 * 1024


def aws_cli() -> str:
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    found = shutil.which("aws")
    if not found:
        raise SystemExit("awscli not found next to this interpreter or on PATH (pip install awscli)")
    return found


def make_shards(folder: Path, total_mb: int, shards: int) -> None:
    folder.mkdir(parents=True)
    per_shard = total_mb * MB // shards
    for index in range(shards):
        with open(folder / f"model-{index + 1:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            for _ in range(per_shard // MB):
                handle.write(os.urandom(MB))
            handle.write(os.urandom(per_shard % MB))
    (folder / "config.json").write_text('{"bench": true}\n')


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kp-bench-"))
    try:
        source = work / "src"
        make_shards(source, args.size_mb, args.shards)
        total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        with EmbeddedS3(work / "s3") as server:
            server.create_bucket("bench")
            store = open_store("s3://bench/kp", endpoint=server.endpoint, credentials_dir=str(server.credentials_dir))
            env = dict(os.environ, **server.env(), AWS_CONFIG_FILE=str(work / "none"))
            aws = [aws_cli(), "--endpoint-url", server.endpoint, "--only-show-errors"]
            results: dict[str, list[float]] = {"up": [], "down": [], "aws_up": [], "aws_down": []}
            for round_index in range(args.rounds):
                prefix = f"round-{round_index}"
                dst, aws_dst = work / f"dst-{round_index}", work / f"aws-dst-{round_index}"
                up = timed(store.upload_dir, source, prefix, metadata={"kind": "bench"})
                down = timed(store.download_dir, prefix, dst)
                aws_remote = f"s3://bench/aws/{prefix}"
                cp = [*aws, "s3", "cp", "--recursive"]
                aws_up = timed(subprocess.run, [*cp, str(source), aws_remote], env=env, check=True, timeout=900)
                aws_down = timed(subprocess.run, [*cp, aws_remote, str(aws_dst)], env=env, check=True, timeout=900)
                for key, seconds in (("up", up), ("down", down), ("aws_up", aws_up), ("aws_down", aws_down)):
                    results[key].append(total / MB / seconds)
                print(
                    f"round {round_index + 1}: kubepeft up {total / MB / up:.1f} MB/s down {total / MB / down:.1f} MB/s"
                    f" | awscli up {total / MB / aws_up:.1f} MB/s down {total / MB / aws_down:.1f} MB/s",
                    flush=True,
                )
                shutil.rmtree(dst)
                shutil.rmtree(aws_dst)
                store.delete_prefix(prefix)
                store.delete_prefix(f"s3://bench/aws/{prefix}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in results.items()}
    # Upload+download throughput: bytes moved both ways over the time both took (harmonic mean).
    kubepeft_mbs = 2 / (1 / med["up"] + 1 / med["down"])
    aws_mbs = 2 / (1 / med["aws_up"] + 1 / med["aws_down"])
    print(
        f"RESULT storage ratio={kubepeft_mbs / aws_mbs:.3f} up_mbs={med['up']:.1f} down_mbs={med['down']:.1f} "
        f"aws_up_mbs={med['aws_up']:.1f} aws_down_mbs={med['aws_down']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
