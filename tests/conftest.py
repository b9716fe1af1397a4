"""Fixtures shared by every layer of tests."""

import uuid

import pytest
import redis
from django.conf import settings


@pytest.fixture
def redis_url() -> str:
    return settings.REDIS_URL


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test (or concurrent test run) uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
