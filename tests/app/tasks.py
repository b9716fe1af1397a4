"""Task functions the tests enqueue."""

import asyncio
import os
import time


def add(a, b):
    return a + b


def fail(message="boom"):
    raise ValueError(message)


def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


def pid():
    return os.getpid()


def span(seconds):
    """Sleep; return (worker pid, start, end) in epoch seconds."""
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time()


def record_hook(task):
    """A hook: keeps the finished task's id and result in the Hooked table."""
    from tests.app.models import Hooked

    Hooked.objects.create(task_id=task.id, result=repr(task.result), success=task.success)


def bad_hook(task):
    raise RuntimeError("this hook always fails")


def mark_then_sleep(key, seconds, value=None):
    """Record that the task started (a Hooked row with result 'started'), then sleep."""
    from tests.app.models import Hooked

    Hooked.objects.create(task_id=key, result="started", success=True)
    time.sleep(seconds)
    return value


# Added for tests/unit.


def echo_kwargs(**kwargs):
    """Returns its keyword arguments, to show which ones reached the function."""
    return kwargs


def unpicklable_result():
    """Returns a value that cannot be pickled."""
    import threading

    return threading.Lock()


async def async_fail(message="async boom"):
    await asyncio.sleep(0)
    raise ValueError(message)


class Greeter:
    """A module-level class whose bound methods and instances are picklable callables."""

    def __init__(self, greeting="hello"):
        self.greeting = greeting

    def greet(self, name):
        return f"{self.greeting} {name}"

    def __call__(self, name):
        return self.greet(name)


def die():
    """Kill the worker running this task, as a segfault or the OOM killer would."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def grow(kib):
    """Keep `kib` KiB alive in the worker (for max_rss)."""
    global _ballast
    _ballast = bytearray(kib * 1024)
    for i in range(0, len(_ballast), 4096):
        _ballast[i] = 1
    return os.getpid()


_redis = None


def incr(key, seconds=0.0, url="redis://127.0.0.1:6379/14"):
    """Sleep, then count one run of this task in Redis (one connection per process)."""
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(url)
    if seconds:
        time.sleep(seconds)
    return _redis.incr(key)


# Added for the task lifecycle (tests/integration/test_lifecycle.py).


def _counter():
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url("redis://127.0.0.1:6379/14")
    return _redis


def flaky(key, failures, error="ValueError"):
    """Fail with `error` (a builtin exception name) on the first `failures` runs, then return the run count."""
    import builtins

    runs = _counter().incr(key)
    if runs <= failures:
        raise getattr(builtins, error)(f"run {runs} of {key} fails")
    return runs


def record_order(key, value):
    """Append `value` to the Redis list `key`: the order tasks ran in."""
    _counter().rpush(key, value)
    return value


def stubborn(key, seconds):
    """Mark the start, then sleep ignoring the cancel signal: only SIGKILL stops it."""
    import signal

    from tests.app.models import Hooked

    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    Hooked.objects.create(task_id=key, result="started", success=True)
    time.sleep(seconds)
    return "finished"


def catch_everything(key, seconds):
    """Mark the start, then sleep inside `except Exception`: a cancel still gets through."""
    from tests.app.models import Hooked

    Hooked.objects.create(task_id=key, result="started", success=True)
    try:
        time.sleep(seconds)
    except Exception:
        return "swallowed"
    return "finished"


def hold_gil():
    """Hold the GIL until killed: sum() over a range runs in C and never lets another thread in."""
    return sum(range(10**15))


def count_then_sleep(key, seconds):
    """Count this run in the Redis key `key` as it starts, then sleep; return the count at the start."""
    runs = _counter().incr(key)
    time.sleep(seconds)
    return runs


def touch_then_sleep(folder, seconds):
    """Create a file of this run in `folder` as it starts, sleep, then return the epoch time it ended."""
    with open(os.path.join(folder, f"{os.getpid()}-{time.time()}"), "w"):
        pass
    time.sleep(seconds)
    return time.time()


def wait_for_file(path, timeout=60.0):
    """Run until the file `path` exists (the test lets it finish), at most `timeout` seconds; True if it came."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def note_then_sleep(folder, n, seconds):
    """Create the file `n-<parent pid>-<epoch>` in `folder` as it starts (the parent is the cluster's sentinel),
    then sleep `seconds`; return `n`."""
    with open(os.path.join(folder, f"{n}-{os.getppid()}-{time.time()}"), "w"):
        pass
    time.sleep(seconds)
    return n
