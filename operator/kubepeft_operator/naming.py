"""Deterministic child names and labels.

Every child name derives from the job name, so a restarted operator finds what it made.
Names that would exceed a limit are cut and given a 64-bit hash of the full job name, so two
long job names that share a prefix do not collide by accident, and a collision cannot be found
by search. Names alone are no proof of ownership, though (another job, or anyone who may create
ConfigMaps, can take a name first): the reconciler adopts an existing child only when its
controller owner reference carries the job's uid, and fails the job as ``NameConflict`` otherwise.
"""

from __future__ import annotations

import hashlib

from kubepeft.api.models import GROUP

LABEL_JOB_NAME = f"{GROUP}/job-name"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_RANK = f"{GROUP}/rank"
LABEL_COMPONENT = f"{GROUP}/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubepeft-operator"
ANNOTATION_FAILED_ATTEMPTS = f"{GROUP}/failed-attempts"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_POD_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_POD_GROUP_TOTAL = "kueue.x-k8s.io/pod-group-total-count"

DNS_LABEL_MAX = 63
HASH_LEN = 16
"""Hex digits of the name hash: 64 bits."""


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def fit(base: str, suffix: str = "", limit: int = DNS_LABEL_MAX) -> str:
    """``base + suffix`` within ``limit`` characters; cut bases get ``-<hash of base>``."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    keep = limit - len(suffix) - HASH_LEN - 1
    return f"{base[:keep].rstrip('-.')}-{short_hash(base)}{suffix}"


def label_value(job: str) -> str:
    """The job name as a label value (63 characters at most)."""
    return fit(job)


def dns_label(job: str, suffix: str = "", *, letter_first: bool = False) -> str:
    """A DNS label (no dots, 63 characters) from a job name, which may be a dotted subdomain.

    A name that had to change (dots, a leading digit where a letter is needed) always gets the
    hash, so ``a.b`` and ``a-b`` do not collide.
    """
    clean = job.replace(".", "-")
    if letter_first and not clean[0].isalpha():
        clean = "j-" + clean
    if clean == job:
        return fit(job, suffix)
    keep = DNS_LABEL_MAX - len(suffix) - HASH_LEN - 1
    return f"{clean[:keep].rstrip('-')}-{short_hash(job)}{suffix}"


def service_name(job: str) -> str:
    """The headless Service (RFC 1035: starts with a letter); also the pods' ``subdomain``."""
    return dns_label(job, letter_first=True)


def config_map_name(job: str) -> str:
    return fit(job, "-config")


def progress_map_name(job: str) -> str:
    return fit(job, "-progress")


def trainer_account_name(job: str) -> str:
    return fit(job, "-trainer")


def worker_hostname(job: str, rank: int) -> str:
    return dns_label(job, f"-{rank}")


def worker_pod_name(job: str, attempt: int, rank: int) -> str:
    return fit(job, f"-a{attempt}-{rank}")


def master_addr(job: str, namespace: str) -> str:
    """Rank 0's stable DNS name: ``<hostname>.<service>.<namespace>.svc`` across attempts."""
    return f"{worker_hostname(job, 0)}.{service_name(job)}.{namespace}.svc"


def job_labels(job: str) -> dict[str, str]:
    return {LABEL_JOB_NAME: label_value(job), LABEL_MANAGED_BY: MANAGED_BY}
