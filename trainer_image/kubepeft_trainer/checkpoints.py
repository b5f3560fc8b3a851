"""Checkpoints for exact resume, uploaded in the background, committed across nodes.

What a checkpoint holds (``accelerator.save_state`` + one JSON):
* the trainable (adapter) weights only -- a save hook drops the frozen base from the DDP state
  dict, and DeepSpeed saves with ``exclude_frozen_parameters``;
* optimizer and scheduler state (DeepSpeed: its per-rank ZeRO partitions);
* the RNG states of EVERY rank (accelerate writes ``random_states_<rank>.pkl`` per process);
* ``trainer_state.json`` (rank 0): the step -- which is the whole data position, see
  ``sampling.py`` -- plus epoch, loss history and the eval loss before training.

Layout under ``<output.root>/checkpoints/step-XXXXXXXX/``::

    nodes/node-000/...            node 0's local files + its own manifest.json
    nodes/node-001/...            node 1's local files + its own manifest.json
    manifest.json                 written LAST by global rank 0: commit marker for the checkpoint

Each pod has its own local disk, so each node uploads its own ranks' files (its local rank 0
does, in the background, through :class:`~kubepeft.storage.BackgroundUploader` while training
continues). Node 0's upload thread then waits until every node's part manifest exists and
writes the checkpoint manifest listing every part's files -- only then does the checkpoint
count (``latest_checkpoint`` looks for that manifest) -- and applies retention.

Resume: every node downloads the latest complete checkpoint (verified against its manifest),
overlays the node parts into one folder (node 0's copy wins where DeepSpeed wrote the same
file on several nodes) and ``accelerator.load_state`` restores it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubepeft.storage import (
    BackgroundUploader,
    Manifest,
    Store,
    apply_retention,
    checkpoint_name,
    join,
    latest_checkpoint,
    write_manifest,
)

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
NODES_DIR = "nodes"


@dataclass
class TrainerState:
    """Bookkeeping restored on resume. ``step`` alone fixes the data position."""

    step: int = 0
    epoch: float = 0.0
    total_steps: int = 0
    world_size: int = 1
    seed: int = 0
    tokens_seen: int = 0
    eval_loss_before: float | None = None
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    eval_history: list[tuple[int, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def progress(self) -> dict[str, Any]:
        """Where training stands, for the first report of an attempt: after a resume it carries
        the checkpoint's last eval loss, not nothing until the next evaluation. (The train loss
        stays a per-interval figure: the next one comes with the next logged step.)"""
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "eval_loss": self.eval_history[-1][1] if self.eval_history else None,
        }

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        data = json.loads(text)
        data["loss_history"] = [tuple(x) for x in data.get("loss_history", [])]
        data["eval_history"] = [tuple(x) for x in data.get("eval_history", [])]
        return cls(**data)


def node_part_name(node_rank: int) -> str:
    return f"{NODES_DIR}/node-{node_rank:03d}"


def overlay_node_parts(downloaded: Path, target: Path) -> Path:
    """Merge ``downloaded/nodes/node-*/`` into ``target``; lower node ranks win on duplicates."""
    target.mkdir(parents=True, exist_ok=True)
    parts = sorted((downloaded / NODES_DIR).glob("node-*"))
    for part in parts:
        for path in sorted(part.rglob("*")):
            if not path.is_file() or path.name == "manifest.json":
                continue
            dest = target / path.relative_to(part)
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if _same_device(path, dest.parent):
                os.link(path, dest)
            else:
                shutil.copy2(path, dest)
    return target


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


class CheckpointManager:
    """Saves, uploads, commits and restores checkpoints for one rank."""

    def __init__(
        self,
        accelerator: Any,
        store: Store,
        checkpoints_uri: str,
        workdir: Path,
        *,
        node_rank: int,
        num_nodes: int,
        keep: int,
        deepspeed: bool,
        part_timeout: float,
    ) -> None:
        self.accelerator = accelerator
        self.store = store
        self.checkpoints_uri = checkpoints_uri.rstrip("/")
        self.local_root = Path(workdir) / "checkpoints"
        self.node_rank = node_rank
        self.num_nodes = num_nodes
        self.keep = keep
        self.deepspeed = deepspeed
        # How long node 0 waits for the other nodes' parts ($KUBEPEFT_CHECKPOINT_PART_TIMEOUT).
        self.part_timeout = part_timeout
        self.uploader: BackgroundUploader | None = (
            BackgroundUploader(store, max_pending=1) if accelerator.is_local_main_process else None
        )
        self.committed: list[int] = []
        if not deepspeed:
            accelerator.register_save_state_pre_hook(self._keep_trainable_only)

    # --- saving ----------------------------------------------------------------------------

    def _keep_trainable_only(self, models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        """Drop frozen base weights from the saved state dict: a checkpoint holds the adapter only."""
        for i, model in enumerate(models):
            if i >= len(weights):
                break
            trainable = {name for name, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in trainable}

    def save(self, state: TrainerState) -> None:
        """Collective: every rank writes its files, then each node's local rank 0 queues the upload."""
        name = checkpoint_name(state.step)
        local = self.local_root / name
        if self.deepspeed:
            self.accelerator.save_state(str(local), exclude_frozen_parameters=True)
        else:
            self.accelerator.save_state(str(local), safe_serialization=True)
        if self.accelerator.is_main_process:
            (local / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        self.accelerator.wait_for_everyone()
        if self.uploader is not None:
            uri = join(self.checkpoints_uri, name)
            metadata = {"kind": "checkpoint-part", "step": state.step, "node_rank": self.node_rank}
            step = state.step

            def committed(_manifest: Manifest) -> None:
                self._part_uploaded(step, local)

            self.uploader.submit(local, join(uri, node_part_name(self.node_rank)), metadata, on_complete=committed)

    def _part_uploaded(self, step: int, local: Path) -> None:
        """Runs on the uploader thread after this node's part (with its own manifest) is stored."""
        shutil.rmtree(local, ignore_errors=True)  # keep the local disk bounded
        if self.node_rank != 0:
            return
        uri = join(self.checkpoints_uri, checkpoint_name(step))
        parts = self._wait_for_parts(uri)
        if parts is None:
            log.warning("checkpoint step %d: not every node uploaded its part in time; left uncommitted", step)
            return
        entries = [entry for k, manifest in enumerate(parts) for entry in manifest.prefixed(node_part_name(k))]
        write_manifest(self.store, uri, entries, {"kind": "checkpoint", "step": step, "num_nodes": self.num_nodes})
        self.committed.append(step)
        log.info("checkpoint step %d committed (%d files)", step, len(entries))
        apply_retention(self.store, self.checkpoints_uri, self.keep)

    def _wait_for_parts(self, uri: str) -> list[Manifest] | None:
        deadline = time.monotonic() + self.part_timeout
        delay = 0.05
        while True:
            manifests = [self.store.read_manifest(join(uri, node_part_name(k))) for k in range(self.num_nodes)]
            if all(m is not None for m in manifests):
                return [m for m in manifests if m is not None]
            if time.monotonic() > deadline:
                return None
            time.sleep(delay)
            delay = min(2.0, delay * 2)

    def finish(self) -> None:
        """Wait for this node's uploads (and, on node 0, the commit of the last checkpoint)."""
        if self.uploader is not None:
            self.uploader.close()
        self.accelerator.wait_for_everyone()

    # --- restoring -------------------------------------------------------------------------

    def restore(self) -> TrainerState | None:
        """Restore the latest complete checkpoint into the prepared objects; None when there is none."""
        found = latest_checkpoint(self.store, self.checkpoints_uri)
        if found is None:
            return None
        step, uri = found
        name = checkpoint_name(step)
        download = self.local_root / "download" / name
        merged = self.local_root / "restore" / name
        with self.accelerator.local_main_process_first():
            if self.accelerator.is_local_main_process:
                self.store.download_dir(uri, download, verify=True)
                shutil.rmtree(merged, ignore_errors=True)
                overlay_node_parts(download, merged)
        if self.deepspeed:
            self.accelerator.load_state(str(merged), load_module_strict=False)
        else:
            self.accelerator.load_state(str(merged), strict=False)
        state = TrainerState.from_json((merged / STATE_FILE).read_text(encoding="utf-8"))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_local_main_process:
            shutil.rmtree(self.local_root / "download", ignore_errors=True)
            shutil.rmtree(self.local_root / "restore", ignore_errors=True)
        log.info("resumed from %s (step %d)", uri, state.step)
        return state
