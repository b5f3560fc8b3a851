"""The e2e tier's fixtures (tests/fixtures/e2e.py); the session-wide S3 server and tiny model come
from the root conftest."""

from tests.fixtures.e2e import *  # noqa: F403
