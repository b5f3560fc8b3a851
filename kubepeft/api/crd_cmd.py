"""``kubepeft crds``: print the generated CRD, or write it (and the API reference) into the repo.

``--write`` writes ``crds/kubepeft.dev_peftjobs.yaml`` and ``crds/kubepeft.dev_peftsweeps.yaml``, the
chart's copies under ``charts/kubepeft/crds/`` when the chart exists, and the reference pages
``docs/api-reference.md`` and ``docs/api-reference-peftsweep.md``. ``--check``
writes nothing and exits 1 when any of those files differs from what would be generated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubepeft.api import crd, reference, sweep_crd, sweep_reference

CHART_DIR = Path("charts/kubepeft")


def generated_files(root: Path) -> dict[Path, str]:
    """Every file ``--write`` produces, relative to the repository root, with its content."""
    crd_text = crd.crd_yaml()
    sweep_text = sweep_crd.crd_yaml()
    files = {
        root / "crds" / crd.CRD_FILE: crd_text,
        root / "crds" / sweep_crd.CRD_FILE: sweep_text,
        root / reference.REFERENCE_FILE: reference.render_reference(),
        root / sweep_reference.REFERENCE_FILE: sweep_reference.render_reference(),
    }
    if (root / CHART_DIR).is_dir():
        files[root / CHART_DIR / "crds" / crd.CRD_FILE] = crd_text
        files[root / CHART_DIR / "crds" / sweep_crd.CRD_FILE] = sweep_text
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the CRD (and chart copy) and docs/api-reference.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if the checked-in files are not up to date")
    mode.add_argument("--docs", action="store_true", help="print the API reference (Markdown) instead of the CRD")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: current directory)")


def run(args: argparse.Namespace) -> int:
    if args.docs:
        sys.stdout.write(reference.render_reference())
        return 0
    if not (args.write or args.check):
        sys.stdout.write(crd.crd_yaml())
        return 0
    stale = []
    for path, content in generated_files(args.root).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path}")
    for path in stale:
        print(f"{path}: out of date; run `make crds`", file=sys.stderr)
    return 1 if stale else 0
