"""Shared fixtures. Each area keeps its fixtures in tests/fixtures/<area>.py and is imported here."""

import os

# Every training process in tests runs single-threaded: on a shared 2-core machine two threads
# per process made runs up to 50x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tests.fixtures.api import *  # noqa: F403
from tests.fixtures.kube import *  # noqa: F403
from tests.fixtures.s3 import *  # noqa: F403
from tests.fixtures.trainer import *  # noqa: F403
from tests.fixtures.training import *  # noqa: F403
