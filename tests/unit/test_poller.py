"""process.Poller: the pusher's wait, pinned to multiprocessing.connection.wait, which it replaces for speed."""

from multiprocessing.connection import Pipe, wait

from django_q.cluster.process import Poller


def test_the_poller_finds_what_multiprocessing_wait_finds_as_connections_come_and_go():
    poller = Poller()
    pipes = [Pipe() for _ in range(4)]
    ours = [a for a, _ in pipes]
    again = Pipe()  # a new connection, which may take the number of one closed
    try:
        assert poller.wait(ours, 0) == wait(ours, 0) == []
        pipes[1][1].send_bytes(b"x")
        pipes[3][1].close()  # a peer gone: ready, so that the read finds EOF
        assert sorted(map(id, poller.wait(ours, 1.0))) == sorted(map(id, wait(ours, 1.0)))
        assert {id(c) for c in poller.wait(ours, 0)} == {id(ours[1]), id(ours[3])}
        ours[3].close()  # the pusher closes a connection and waits on the others
        current = [*ours[:3], again[0]]
        assert {id(c) for c in poller.wait(current, 0)} == {id(ours[1])} == {id(c) for c in wait(current, 0)}
        again[1].send_bytes(b"y")
        assert {id(c) for c in poller.wait(current, 0)} == {id(ours[1]), id(again[0])}
        assert poller.wait([ours[0]], 0.01) == []  # the others dropped: not reported
    finally:
        for a, b in [*pipes, again]:
            for conn in (a, b):
                if not conn.closed:
                    conn.close()
