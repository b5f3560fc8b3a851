"""``kubepeft train [--config PATH] [--workdir DIR]``: the entry point of every worker pod.

Reads the :class:`~kubepeft.contract.TrainerConfig` (``--config``, else ``$KUBEPEFT_CONFIG``,
else ``/etc/kubepeft/config.json``) and the launcher environment, then hands over to
:func:`kubepeft_trainer.launcher.launch`. Exit codes follow the contract: 0 done, 3 bad input
(never retried), anything else retryable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kubepeft.contract import (
    DEFAULT_CONFIG_PATH,
    ENV_ATTEMPT,
    ENV_CONFIG,
    ENV_WORKDIR,
    EXIT_PERMANENT,
    LauncherEnv,
    TrainerConfig,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"TrainerConfig JSON (default: ${ENV_CONFIG} or {DEFAULT_CONFIG_PATH})")
    parser.add_argument(
        "--workdir",
        help=f"this node's local work folder (default: ${ENV_WORKDIR}, else a new temporary folder)",
    )


def run(args: argparse.Namespace) -> int:
    from kubepeft_trainer.launcher import launch
    from kubepeft_trainer.progress import Reporter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = LauncherEnv.from_env()
    reporter = Reporter.from_env(attempt=int(os.environ.get(ENV_ATTEMPT, "0")))
    config_path = Path(args.config or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH)
    try:
        config = TrainerConfig.from_json(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        reporter.publish(state="Failed", failure_class="permanent", message=f"trainer config {config_path}: {exc}")
        return EXIT_PERMANENT
    workdir_arg = args.workdir or os.environ.get(ENV_WORKDIR)
    if env.node_rank == 0:
        reporter.publish(state="Starting")
    if workdir_arg:
        return launch(config, config_path.resolve(), env, Path(workdir_arg), reporter)
    # Our own temporary folder goes away with the attempt: the next attempt resumes from storage.
    with tempfile.TemporaryDirectory(prefix=f"kubepeft-{config.job.name}-node{env.node_rank}-") as tmp:
        return launch(config, config_path.resolve(), env, Path(tmp), reporter)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubepeft-train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
