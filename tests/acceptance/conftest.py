"""Fixtures of the acceptance tests: a throwaway project that `qcluster` runs against, run counters."""

import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from .test_qcluster import Project


@pytest.fixture(params=["orm", "redis"])
def project(request, tmp_path) -> Iterator[Project]:
    project = Project(tmp_path, settings.REDIS_URL if request.param == "redis" else None)
    done = project.run("-m", "django", "migrate", "-v", "0")
    assert done.returncode == 0, done.stderr
    yield project
    project.kill_all()
    if request.param == "redis":
        project.env = project.original_env  # a test may have broken its settings on purpose
        project.drive("purge")


@pytest.fixture
def counters():
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = f"crash:{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
