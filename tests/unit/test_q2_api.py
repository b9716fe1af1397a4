"""The API of django-q2 that a project moving over calls: fetch of unfinished tasks, the class API,
async_task's options, cached results, humanhash and the signals' arguments."""

import pytest

from django_q.brokers import get_broker
from django_q.models import Task
from django_q.tasks import async_task, fetch

sync_db = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue(q_cluster, queue_name):
    """A database-broker queue of this test's own, purged after."""
    q_cluster(name=queue_name)
    yield get_broker()
    get_broker().purge()


@sync_db
class TestFetch:
    def test_a_queued_task_is_none_unless_in_flight(self, queue):
        task_id = async_task("tests.app.tasks.add", 1, 2)
        assert fetch(task_id) is None  # as in django-q: not finished, nothing to fetch
        assert fetch(task_id, wait=50) is None
        pending = fetch(task_id, in_flight=True)
        assert isinstance(pending, Task) and pending._state.adding  # unsaved
        assert (pending.id, pending.status, pending.success, pending.result) == (task_id, "queued", None, None)
        assert not Task.objects.filter(id=task_id).exists()

    def test_a_finished_task_is_the_stored_row_either_way(self, queue):
        task_id = async_task("tests.app.tasks.add", 1, 2, sync=True)
        assert fetch(task_id).result == 3
        assert fetch(task_id, in_flight=True).result == 3
        assert not fetch(task_id, in_flight=True)._state.adding

    def test_an_unknown_task_is_none_either_way(self, queue):
        assert fetch("0" * 32) is None and fetch("0" * 32, in_flight=True) is None


class TestHumanhash:
    def test_humanize_folds_the_digest_as_django_q2_does(self):
        from django_q.humanhash import HumanHasher

        hasher = HumanHasher([f"w{i}" for i in range(256)])
        # django-q2's documented example folds these 11 bytes to 205, 128, 156, 96.
        assert hasher.humanize("60ad8d0d871b6095808297") == "w205-w128-w156-w96"
        assert hasher.humanize("60ad8d0d871b6095808297", words=2, separator=" ") == "w202 w123"  # 96^173^141^13^135, 27^96^149^128^130^151
        assert HumanHasher.compress([96, 173, 141, 13, 135, 27, 96, 149, 128, 130, 151], 4) == [205, 128, 156, 96]

    def test_module_functions_use_the_default_words(self):
        from django_q import humanhash
        from django_q.names import WORDS

        assert humanhash.humanize("00ff0102") == "-".join(WORDS[b] for b in (0, 255, 1, 2))
        words, digest = humanhash.uuid()
        assert len(digest) == 32 and words == humanhash.humanize(digest)
        assert len(humanhash.uuid(words=2)[0].split("-")) == 2

    def test_bad_input_is_named(self):
        from django_q.humanhash import HumanHasher, humanize

        with pytest.raises(ValueError, match="exactly 256 words, got 3"):
            HumanHasher(["a", "b", "c"])
        with pytest.raises(ValueError, match="hex digest, got 'not hex!'"):
            humanize("not hex!")
        with pytest.raises(ValueError, match="at least 4 input bytes, got 2"):
            humanize("abcd")
