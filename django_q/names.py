"""Task ids, the human-readable names derived from them, and the names of worker processes and clusters."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

# 256 short words, one per byte value; four of them plus six hex digits of the
# id name a task ("amber-otter-seven-kite-3fa2c1"), 56 bits in all, so names
# stay unique (Task.name is a unique column) across hundreds of millions of tasks.
WORDS = """
acid acorn actor agent alarm album alpha amber angle apple april arrow aspen atlas attic autumn
bacon badge baker bamboo banjo baron basil beach beacon bear berry bison blade blaze bloom blue
bonus border bravo breeze brick bridge bronze brook brush bugle cabin cactus camel candle canoe canyon
carbon cargo carpet castle cedar cello chalk charm cherry chess chief cider cinema circle citrus clay
cliff clock cloud clover cobalt comet copper coral cotton crane crater crystal cubic cycle dahlia daisy
dawn delta denim desert diesel dingo dolphin domino dragon dream drift drum dune eagle echo eclipse
elbow ember emerald engine epoch falcon fern ferry fiddle field flame flint flute forest fossil fox
frost galaxy garden garnet gecko ginger glacier globe gold gravel green grove guitar harbor hazel
helium heron hill honey horizon hotel husky igloo indigo iris island ivory jacket jade jaguar jasmine
jelly jewel jungle kayak kernel kettle kite koala lagoon lake lantern laser lava lemon lilac lime
linen lotus lunar magnet mango maple marble meadow melon mercury meteor mint mirror monkey moss motor
nectar needle nickel noble north nova oasis ocean olive onyx opal orbit orchid otter oxygen paddle
panda paper parrot pastel peach pearl pebble pepper piano pilot pine planet plasma plum polar poppy
prism pulse quartz quill rabbit radar radio raven reef ribbon river robin rocket ruby saddle saffron
salmon sapphire satin scarlet shadow silver sky slate solar sonic spark spruce squid stone summit sunset
swift tango thistle thunder tiger timber topaz tulip tundra velvet violet walnut willow wizard yellow zebra zephyr
""".split()
assert len(set(WORDS)) == 256


def new_id() -> str:
    """A new task id: a random version-4 UUID as 32 lowercase hex characters (what uuid4().hex gives)."""
    return new_ids(1)[0]


def new_ids(count: int) -> list[str]:
    """`count` new task ids (random version-4 UUIDs, as new_id()), from one read of the OS's randomness."""
    raw = bytearray(os.urandom(16 * count))
    for at in range(6, 16 * count, 16):
        raw[at] = raw[at] & 0x0F | 0x40  # version 4
        raw[at + 2] = raw[at + 2] & 0x3F | 0x80  # the RFC 4122 variant
    text = raw.hex()
    if count == 1:  # async_task's
        return [text]
    return [text[at : at + 32] for at in range(0, 32 * count, 32)]


def humanize(task_id: str) -> str:
    """The readable name of a task id."""
    a, b, c, d = bytes.fromhex(task_id[:8])
    return f"{WORDS[a]}-{WORDS[b]}-{WORDS[c]}-{WORDS[d]}-{task_id[-6:]}"


_HOST = socket.gethostname()
_own_id: tuple[int, str] = (0, "")  # (pid, its worker_id): made once per process


def worker_id(pid: int | None = None) -> str:
    """How a worker process is named in results and statuses: "host:pid"."""
    global _own_id
    if pid is None:
        pid = os.getpid()
        if _own_id[0] != pid:  # a new process (fork)
            _own_id = (pid, f"{_HOST}:{pid}")
        return _own_id[1]
    return f"{_HOST}:{pid}"


# Here rather than in django_q.status, which imports the models: the sentinel
# passes an Identity to each pusher it starts, and under the spawn and
# forkserver start methods the child unpickles it before Django is set up.
@dataclass(frozen=True, slots=True)
class Identity:
    """Who a cluster is: made once by the sentinel, kept by every pusher it starts."""

    id: str
    host: str
    pid: int  # the sentinel's
    name: str
    started: float  # epoch seconds

    @classmethod
    def new(cls, name: str) -> Identity:
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), name, time.time())
