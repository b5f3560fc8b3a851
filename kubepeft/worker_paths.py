"""Folders every worker pod uses itself, known to the API (which keeps declared volumes off them)
and to the operator (which mounts them). Core only: no imports."""

from __future__ import annotations

CONFIG_DIR = "/etc/kubepeft"
"""The trainer config ConfigMap (``kubepeft.contract.DEFAULT_CONFIG_PATH`` lies in it)."""
SECRETS_DIR = "/var/run/secrets"
"""Credentials (``<CREDENTIALS_ROOT>/<source>``) and the service account token live under it."""
CREDENTIALS_ROOT = f"{SECRETS_DIR}/kubepeft"
SCRATCH_DIR = "/scratch"
"""Downloads, checkpoints before upload, export staging (an emptyDir sized by resources.scratch)."""
TMP_DIR = "/tmp"
CACHE_DIR = "/cache"
SHM_DIR = "/dev/shm"
IMAGE_DIRS = ("/opt/venv", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys")
"""The trainer image's Python environment and the system folders it runs from."""

RESERVED = (CONFIG_DIR, SECRETS_DIR, SCRATCH_DIR, TMP_DIR, CACHE_DIR, SHM_DIR, *IMAGE_DIRS)
"""A declared volume may be mounted neither on, inside nor above any of these."""

DEFAULT_VOLUME_ROOT = "/mnt/kubepeft/volumes"
"""Where a declared claim is mounted when its volume names no mountPath: ``<root>/<claimName>``."""
