"""``kubepeft train [--config PATH] [--workdir DIR]``: the entry point of every worker pod.

Reads the trainer's settings (:class:`~kubepeft_trainer.settings.TrainerSettings`: the launcher
environment, where reports go, ...) once, then the :class:`~kubepeft.contract.TrainerConfig`
(``--config``, else ``$KUBEPEFT_CONFIG``, else ``/etc/kubepeft/config.json``), and hands over to
:func:`kubepeft_trainer.launcher.launch`. Exit codes follow the contract: 0 done, 3 bad input
(never retried), anything else retryable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kubepeft.contract import DEFAULT_CONFIG_PATH, ENV_CONFIG, ENV_WORKDIR, EXIT_PERMANENT, TrainerConfig
from kubepeft.settings import SettingsError

log = logging.getLogger("kubepeft_trainer.main")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"TrainerConfig JSON (default: ${ENV_CONFIG} or {DEFAULT_CONFIG_PATH})")
    parser.add_argument(
        "--workdir",
        help=f"this node's local work folder (default: ${ENV_WORKDIR}, else a new temporary folder)",
    )


def run(args: argparse.Namespace) -> int:
    from kubepeft_trainer.launcher import launch
    from kubepeft_trainer.progress import Reporter
    from kubepeft_trainer.settings import TrainerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = TrainerSettings.load()
    except SettingsError as exc:  # nowhere to report to: the settings say where reports go
        log.error("trainer settings: %s", exc)
        return EXIT_PERMANENT
    reporter = Reporter.from_settings(settings)
    config_path = Path(args.config) if args.config else settings.config
    try:
        config = TrainerConfig.from_json(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        reporter.publish(state="Failed", failure_class="permanent", message=f"trainer config {config_path}: {exc}")
        return EXIT_PERMANENT
    workdir = Path(args.workdir) if args.workdir else settings.workdir
    if settings.node_rank == 0:
        reporter.publish(state="Starting")
    if workdir is not None:
        return launch(config, config_path.resolve(), settings, workdir, reporter)
    # Our own temporary folder goes away with the attempt: the next attempt resumes from storage.
    with tempfile.TemporaryDirectory(prefix=f"kubepeft-{config.job.name}-node{settings.node_rank}-") as tmp:
        return launch(config, config_path.resolve(), settings, Path(tmp), reporter)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubepeft-train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
