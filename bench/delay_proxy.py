"""A TCP proxy that holds every chunk back a fixed time each way: a far broker on one machine.

This kernel has no `netem` qdisc, so bench/hosts.py puts this proxy between
the clusters (each in a network namespace of its own) and the broker. Each
chunk read from one side is written to the other `delay / 2` ms later, in
order; a round trip through it costs `delay` ms more than the link under it
(measured by `--check`, which pings Redis through it).

    python bench/delay_proxy.py --listen 10.77.1.1:16379 --to 127.0.0.1:6379 --delay-ms 1.0
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import threading
import time

CHUNK = 65536


def _pump(source: socket.socket, sink: socket.socket, one_way: float) -> None:
    """Copy `source` to `sink`, each chunk `one_way` seconds after it was read, in order.

    Threads, not asyncio: an event loop's timers wake to the millisecond at
    best, which would add about a millisecond each way; time.sleep does not.
    """
    held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def send() -> None:
        try:
            while True:
                due, data = held.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while data := source.recv(CHUNK):
            held.put((time.monotonic() + one_way, data))
    except OSError:
        pass
    held.put((0.0, b""))
    sender.join()


def _connect(client: socket.socket, to: tuple[str, int], one_way: float) -> None:
    try:
        server = socket.create_connection(to)
    except OSError:
        client.close()
        return
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(server, client, one_way), daemon=True)
    back.start()
    _pump(client, server, one_way)
    back.join()
    client.close()
    server.close()


def _serve(listen: tuple[str, int], to: tuple[str, int], delay_ms: float) -> None:
    one_way = delay_ms / 2000
    with socket.create_server(listen, reuse_port=False) as server:
        while True:
            client, _ = server.accept()
            threading.Thread(target=_connect, args=(client, to, one_way), daemon=True).start()


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def check(address: tuple[str, int], rounds: int = 200) -> float:
    """Median round trip of a Redis PING through `address`, in ms."""
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            sock.sendall(b"PING\r\n")
            sock.recv(64)
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True, help="host:port to accept on")
    parser.add_argument("--to", type=_address, required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=1.0,
                        help="round trip added, ms (default 1.0; --check measures what it comes to)")
    parser.add_argument("--check", action="store_true", help="print the median PING round trip through --listen")
    args = parser.parse_args()
    if args.check:
        print(f"{check(args.listen):.2f} ms")
        return
    with contextlib.suppress(KeyboardInterrupt):
        _serve(args.listen, args.to, args.delay_ms)


if __name__ == "__main__":
    main()
