"""Child names are deterministic, valid DNS names, and distinct for distinct jobs."""

from __future__ import annotations

import re

from kubepeft_operator import naming

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def test_short_names_are_plain() -> None:
    assert naming.worker_pod_name("tune", 2, 1) == "tune-a2-1"
    assert naming.worker_hostname("tune", 0) == "tune-0"
    assert naming.service_name("tune") == "tune"
    assert naming.config_map_name("tune") == "tune-config"
    assert naming.progress_map_name("tune") == "tune-progress"
    assert naming.trainer_account_name("tune") == "tune-trainer"
    assert naming.master_addr("tune", "ns") == "tune-0.tune.ns.svc"


def test_long_names_are_cut_with_a_hash_and_stay_unique() -> None:
    long_a = "a" * 80 + "-first"
    long_b = "a" * 80 + "-second"
    for job in (long_a, long_b):
        for name in (
            naming.worker_pod_name(job, 12, 7),
            naming.worker_hostname(job, 7),
            naming.config_map_name(job),
            naming.progress_map_name(job),
            naming.trainer_account_name(job),
            naming.label_value(job),
        ):
            assert len(name) <= 63 and DNS_LABEL.match(name), name
        assert RFC1035.match(naming.service_name(job))
    assert naming.worker_pod_name(long_a, 1, 0) != naming.worker_pod_name(long_b, 1, 0)
    # A cut name carries a 64-bit hash of the whole job name (no collision can be searched for).
    cut = naming.config_map_name(long_a)
    assert cut.endswith(f"-{naming.short_hash(long_a)}-config") and len(naming.short_hash(long_a)) * 4 >= 64
    assert naming.worker_pod_name(long_a, 1, 0).endswith("-a1-0")
    assert naming.service_name(long_a) == naming.service_name(long_a)  # deterministic


def test_dotted_and_digit_names_become_valid_dns_labels_without_collisions() -> None:
    assert naming.service_name("my.job") != naming.service_name("my-job")
    assert DNS_LABEL.match(naming.worker_hostname("my.job", 0))
    assert RFC1035.match(naming.service_name("7up"))
    assert naming.master_addr("my.job", "ns").startswith(naming.worker_hostname("my.job", 0) + ".")
