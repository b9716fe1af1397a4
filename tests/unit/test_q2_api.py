"""The API of django-q2 that a project moving over calls: fetch of unfinished tasks, the class API,
async_task's options, cached results, humanhash and the signals' arguments."""

import pytest

from django_q.brokers import get_broker
from django_q.exceptions import TaskTypeError
from django_q.models import Task
from django_q.names import new_id
from django_q.tasks import (
    Async,
    AsyncTask,
    Chain,
    Iter,
    async_task,
    count_group,
    count_group_cached,
    delete_cached,
    delete_group_cached,
    fetch,
    fetch_cached,
    fetch_group_cached,
    queue_size,
    result,
    result_cached,
    result_group,
    result_group_cached,
)
from tests.app.models import Hooked
from tests.app.tasks import add, fail

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
        # 96^173^141^13^135 and 27^96^149^128^130^151
        assert hasher.humanize("60ad8d0d871b6095808297", words=2, separator=" ") == "w202 w123"
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


@sync_db
class TestAsyncTaskOptions:
    def test_broker_is_reused_not_taken_for_a_task_argument(self, queue, queue_name):
        other = get_broker(f"{queue_name}b")
        try:
            task_id = async_task("tests.app.tasks.add", 1, 2, broker=other)
            assert queue_size(broker=other) == 1 and queue_size(other) == 1 and queue_size() == 0
            assert other.lookup(task_id) is not None
        finally:
            other.purge()

    def test_broker_that_is_no_broker_is_named(self, queue):
        with pytest.raises(TaskTypeError, match="broker must be a broker such as get_broker\\(\\) returns, got str"):
            async_task("tests.app.tasks.add", 1, 2, broker="redis")

    def test_q_options_leave_broker_to_the_task(self, queue):
        task_id = async_task("tests.app.tasks.echo_kwargs", broker="mine", cached=1, q_options={"sync": True})
        assert result(task_id) == {"broker": "mine", "cached": 1}

    def test_chain_option_runs_the_links_after_the_task(self, queue):
        async_task(add, 1, 2, group="chained", chain=[(add, (3, 4)), ("tests.app.tasks.add", (5, 6))], sync=True)
        assert result_group("chained") == [3, 7, 11]

    def test_iter_count_folds_parts_into_the_group_id(self, queue):
        group = new_id()
        async_task(add, 1, 1, group=group, iter_count=2, sync=True)
        assert result(group) is None  # one part of two
        async_task(add, 2, 2, group=group, iter_count=2, sync=True)
        assert sorted(result(group)) == [2, 4]
        assert result_group(group) is None  # the list is the group's result, not a member of it

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"cached": -1}, "cached must be True, False or a whole number of seconds > 0, got -1"),
            ({"iter_cached": "yes"}, "iter_cached must be True, False or a whole number of seconds > 0, got 'yes'"),
            ({"iter_count": 2}, "iter_count needs a group"),
            ({"iter_count": 0, "group": "g"}, "iter_count must be a whole number > 0, got 0"),
            ({"chain": "tests.app.tasks.add"}, "chain must be a list of \\(func, args, kwargs\\), got str"),
        ],
    )
    def test_bad_options_are_named(self, queue, options, message):
        with pytest.raises(TaskTypeError, match=message):
            async_task(add, 1, 2, **options)


@sync_db
class TestClassApi:
    def test_async_task_runs_and_reads_its_result(self, queue):
        task = AsyncTask("tests.app.tasks.add", 1, 2, sync=True)
        assert Async is AsyncTask
        assert (task.result(), task.fetch(), task.started) == (None, None, False)  # not run yet
        task_id = task.run()
        assert task.started and task.id == task_id
        assert task.result() == 3 and task.fetch().id == task_id and task.fetch().success
        assert task.result_group() is None  # no group

    def test_async_task_options_are_attributes(self, queue):
        task = AsyncTask(add, 2, 3, q_options={"sync": True})
        assert (task.sync, task.group, task.hook, task.save, task.broker, task.cached) == (True, None, None, None,
                                                                                          None, False)
        task.group, task.hook = "pair", "tests.app.tasks.record_hook"
        assert task.kwargs["q_options"]["group"] == "pair"
        task.run()
        task.run()
        assert task.result_group() == [5, 5] and len(task.fetch_group()) == 2
        assert Hooked.objects.filter(task_id=task.id).exists()
        task.save = False
        assert not task.started  # a changed option waits for the next run()

    def test_async_task_with_cached(self, queue):
        task = AsyncTask(add, 4, 4, sync=True)
        task.cached = True
        task.run()
        assert task.result() == 8 and task.fetch().result == 8
        assert not Task.objects.filter(id=task.id).exists()

    def test_iter_collects_the_results(self, queue):
        it = Iter("tests.app.tasks.add", sync=True)
        assert it.append(1, 2) == 1 and it.append(3, 4) == 2 and it.length() == 2
        assert it.result() is None and it.fetch() is None
        parent = it.run()
        assert it.started and parent == it.id
        assert it.result() == [3, 7] and it.fetch().result == [3, 7]
        it.append(5, 6)
        assert not it.started

    def test_iter_cached_keeps_the_list_in_the_cache(self, queue):
        it = Iter(add, args=[(1, 1), (2, 2)], cached=True, sync=True)
        parent = it.run()
        assert it.result() == [2, 4] and result_cached(parent) == [2, 4]
        assert not Task.objects.filter(id=parent).exists() and not Task.objects.filter(parent=parent).exists()

    def test_chain_runs_in_order(self, queue):
        chain = Chain(sync=True)
        assert chain.current() is None and chain.result() is None
        assert chain.append(add, 1, 2) == 1
        assert chain.append("tests.app.tasks.add", 3, 4) == 2
        group = chain.run()
        assert chain.group == group and chain.length() == 2
        assert chain.result() == [3, 7] and chain.current() == 2
        assert [t.result for t in chain.fetch()] == [3, 7]
        chain.append(add, 5, 6)  # after a run: its results are let go, the next run starts afresh
        assert not chain.started and count_group(group) == 0
        chain.run()
        assert chain.result() == [3, 7, 11]

    def test_chain_of_a_group_of_ones_own(self, queue):
        chain = Chain([(add, (1, 1))], group="mine", sync=True)
        assert chain.run() == "mine" and chain.result() == [2]

    def test_iter_without_func_is_named(self, queue):
        with pytest.raises(TaskTypeError, match="needs a func"):
            Iter(sync=True).run()


@sync_db
class TestCached:
    def test_a_cached_result_is_in_the_cache_not_the_database(self, queue):
        task_id = async_task(add, 1, 2, cached=True, sync=True)
        assert fetch(task_id) is None and result(task_id) is None  # the database has nothing
        assert result_cached(task_id) == 3 and result(task_id, cached=True) == 3
        task = fetch_cached(task_id)
        assert (task.id, task.result, task.success, task.func) == (task_id, 3, True, "tests.app.tasks.add")
        assert fetch(task_id, cached=True).result == 3
        assert delete_cached(task_id) is True
        assert result_cached(task_id) is None and delete_cached(task_id) is False

    def test_a_failure_is_cached_too(self, queue):
        task_id = async_task(fail, cached=60, sync=True)
        assert fetch_cached(task_id).success is False and "boom" in result_cached(task_id)

    def test_q_cluster_cached_makes_every_result_cached(self, q_cluster, queue_name):
        q_cluster(name=queue_name, cached=True, sync=True)
        task_id = async_task(add, 2, 3)
        assert result(task_id) == 5 and fetch(task_id).result == 5  # read from the cache
        assert result(task_id, cached=False) is None

    def test_groups_in_the_cache(self, queue):
        ids = [async_task(add, i, i, group="cg", cached=True, sync=True) for i in range(3)]
        async_task(fail, group="cg", cached=True, sync=True)
        assert result_group_cached("cg") == [0, 2, 4]
        assert len(result_group_cached("cg", failures=True)) == 4
        assert [t.id for t in fetch_group_cached("cg", failures=False)] == ids
        assert count_group_cached("cg") == 3 and count_group_cached("cg", failures=True) == 1
        assert result_group("cg", cached=True) == [0, 2, 4] and count_group("cg", cached=True) == 3
        assert result_group_cached("cg", count=5, wait=50) is None  # fewer than 5
        delete_group_cached("cg")
        assert result_group_cached("cg") is None and result_cached(ids[0]) is None

    def test_the_cache_of_another_queue_is_read_through_its_broker(self, queue, queue_name):
        task_id = async_task(add, 1, 1, cached=True, sync=True, cluster=f"{queue_name}x")
        assert result_cached(task_id) is None
        assert result_cached(task_id, broker=get_broker(f"{queue_name}x")) == 2

    def test_a_cached_success_is_not_replaced_by_a_failure(self, queue):
        from django_q.cached import store
        from django_q.conf import get_config

        task_id = async_task(add, 1, 1, cached=True, sync=True)
        assert store(get_config(), get_config().name, {"id": task_id, "success": False, "result": "x"}, True) is False
        assert result_cached(task_id) == 2


@sync_db
class TestSignalsTheDjangoQ2Way:
    """Receivers written for django-q2: `task` is a dict with its keys; ours adds the attributes."""

    def test_pre_enqueue_pre_execute_post_execute(self, queue):
        from django_q import signals

        seen = []

        def before(sender, task, **kwargs):
            seen.append(("pre_enqueue", sender, task["id"], task["name"], task["func"], task["args"],
                         task["kwargs"], task.get("group"), task.get("hook"), "started" in task))

        def executing(sender, func, task, **kwargs):
            seen.append(("pre_execute", sender, func(*task["args"], **task["kwargs"]), task["id"]))

        def after(sender, task, **kwargs):
            seen.append(("post_execute", sender, task["id"], task["result"], task["success"],
                         task["stopped"] >= task["started"], task.get("group"), task.time_taken() >= 0))

        receivers = [(signals.pre_enqueue, before), (signals.pre_execute, executing), (signals.post_execute, after)]
        for signal, receiver in receivers:
            signal.connect(receiver)
        try:
            task_id = async_task("tests.app.tasks.add", 2, 3, group="sig", sync=True)
        finally:
            for signal, receiver in receivers:
                signal.disconnect(receiver)
        name = fetch(task_id).name
        assert seen == [
            ("pre_enqueue", "django_q", task_id, name, "tests.app.tasks.add", (2, 3), {}, "sig", None, True),
            ("pre_execute", "django_q", 5, task_id),
            ("post_execute", "django_q", task_id, 5, True, True, "sig", True),
        ]

    def test_the_task_is_a_dict_with_our_attributes(self, queue):
        from django_q import signals

        from .helpers import received

        with received(signals.pre_enqueue) as calls:
            async_task(add, 1, 1, hook="tests.app.tasks.record_hook", cached=30, timeout=5,
                       chain=[(add, (2, 2))], broker=get_broker())
        task = calls[0]["task"]
        assert isinstance(task, dict) and dict(task) == {
            "id": task.id, "name": task.name, "func": "tests.app.tasks.add", "args": (1, 1), "kwargs": {},
            "started": task["started"], "hook": "tests.app.tasks.record_hook", "timeout": 5.0, "cached": 30,
            "chain": [["tests.app.tasks.add", (2, 2), {}]],
        }
        assert task.priority == 0 and task.chain == (("tests.app.tasks.add", (2, 2), {}),)


@sync_db
def test_q_cluster_cached_keeps_an_iters_list_where_result_reads_it(q_cluster, queue_name):
    from django_q.tasks import async_iter

    q_cluster(name=queue_name, cached=True, sync=True)
    parent = async_iter(add, [(1, 1), (2, 2)])
    assert result(parent) == [2, 4] and not Task.objects.filter(id=parent).exists()


@sync_db
def test_post_execute_in_worker_gets_the_result_with_the_function(queue):
    from django_q import signals

    from .helpers import received

    with received(signals.post_execute_in_worker) as calls:
        task_id = async_task(add, 2, 2, sync=True)
        async_task(fail, sync=True)
    ok, failed = (call["task"] for call in calls)
    assert calls[0]["func"] is add and calls[0]["sender"] == "django_q"
    assert (ok["id"], ok["result"], ok["success"], ok["stopped"] is not None) == (task_id, 4, True, True)
    assert failed["success"] is False and "boom" in failed["result"]


def test_a_task_info_copies_and_pickles_with_its_source():
    import copy
    import pickle

    from django_q.package import TaskPackage
    from django_q.signals import TaskInfo, package_info

    info = package_info(TaskPackage(id="a" * 32, name="n", func="math.floor", args=(1.5,), group="g"))
    for twin in (copy.copy(info), copy.deepcopy(info), pickle.loads(pickle.dumps(info))):
        assert isinstance(twin, TaskInfo) and twin == info and twin.group == "g" and twin.source == info.source
    with pytest.raises(AttributeError):
        TaskInfo.__new__(TaskInfo).func


@sync_db
def test_a_cached_tasks_hook_and_post_execute_run(queue):
    from django_q import signals

    from .helpers import received

    with received(signals.post_execute) as calls:
        task_id = async_task(add, 3, 3, cached=True, hook="tests.app.tasks.record_hook", sync=True)
    assert Hooked.objects.get(task_id=task_id).success is True
    assert [(c["task"]["id"], c["task"]["result"]) for c in calls] == [(task_id, 6)]
    assert not Task.objects.filter(id=task_id).exists()
