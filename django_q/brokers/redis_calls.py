"""How the Redis broker calls its Lua scripts: EVALSHA written and read on a connection of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import redis

from ..exceptions import BrokerConnectionError, BrokerError

if TYPE_CHECKING:
    from redis._parsers.encoders import Encoder
    from redis.commands.core import Script

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's own encoder checks each argument's type in Python
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is an optional extra
    _pack = None

# EVALSHA heads (command, SHA and keys, in RESP) kept by pack_evalsha, up to this many.
HEADS_MAX = 256


def pack_evalsha(sha: str, keys: Sequence[str], args: Sequence[Any], encoder: Encoder,
                 heads: dict[tuple, bytes]) -> bytes:
    """EVALSHA sha len(keys) *keys *args in RESP, as redis-py's Connection.pack_command writes it.

    Without hiredis, redis-py encodes every argument in Python on every call: ~30 us
    for an enqueue, whose 15 keys never change. Here the head (command, SHA, keys)
    is encoded once per script and keys, in `heads`; each call encodes only its
    `args`, as `encoder` (the connection's own Encoder) would.
    """
    head_key = (sha, *keys)
    head = heads.get(head_key)
    if head is None:
        if len(heads) >= HEADS_MAX:
            heads.clear()
        head = heads[head_key] = evalsha_head(sha, keys, encoder)
    return pack_args(head, len(keys), args, encoder)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def evalsha_head(sha: str, keys: Sequence[str], encoder: Encoder) -> bytes:
    """The part of an EVALSHA in RESP that names the script and its keys (pack_args adds the rest)."""
    return b"".join(_bulk(encoder.encode(part)) for part in ("EVALSHA", sha, len(keys), *keys))


def pack_args(head: bytes, key_count: int, args: Sequence[Any], encoder: Encoder) -> bytes:
    """An EVALSHA in RESP from its `head` (evalsha_head, naming `key_count` keys) and its `args`.

    Bytes, ints and str are written here as Encoder.encode writes them (a bool
    is not an int here: it goes to Encoder.encode, which refuses it), the rest
    through it: its method calls and type checks cost more than the packing.
    """
    encoding, errors, encode = encoder.encoding, encoder.encoding_errors, encoder.encode
    parts = [b"*%d\r\n" % (3 + key_count + len(args)), head]
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            value = arg
        elif kind is str:
            value = arg.encode(encoding, errors)
        elif kind is int:
            value = b"%d" % arg
        else:
            value = encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class ScriptCall(Protocol):
    """A script of `Lua.script`: called with its keys and args, the reply; `script`, for `Lua.call_after`."""

    script: Script

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any: ...


BoundCall = Callable[[Sequence[Any]], Any]  # a script of `Lua.bind`: called with its args, the reply


class Lua:
    """Calls the broker's Lua scripts straight on one connection of its own: EVALSHA written, reply read.

    redis-py's client path (command lookup, pool checkout, response callbacks,
    observability hooks) costs about twice what the call itself does: an
    `async_task` spent most of its time there. A broker is used by one thread
    at a time, so one connection serves all its scripts. A script the server
    lost (a restart) is loaded again; a call on a connection that went stale
    is made once more on a new one. Other failures raise redis-py's errors.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.conn: Any = None
        self.heads: dict[tuple, bytes] = {}  # see pack_evalsha
        # What the pool's connections encode arguments with (their Encoder, from the same settings).
        self.encoder = client.get_encoder()

    def script(self, source: str) -> ScriptCall:
        script = self.client.register_script(source)  # computes the SHA; nothing is sent

        def call(keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
            return self.call(script, keys, args)

        typed = cast(ScriptCall, call)  # a plain function (the fastest call); its `script` is set here
        typed.script = script
        return typed

    def bind(self, source: str, keys: Sequence[str]) -> BoundCall:
        """A script whose keys never change (an enqueue's): called with its args alone, its keys packed once."""
        script = self.client.register_script(source)
        encoder = self.encoder
        head = evalsha_head(script.sha, keys, encoder)
        prefix = ("EVALSHA", script.sha, len(keys), *keys)
        key_count = len(keys)

        def call(args: Sequence[Any]) -> Any:
            return self.send(script, _pack((*prefix, *args)) if _pack else pack_args(head, key_count, args, encoder))

        return call

    def call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.send(script, self._packed(script, keys, args))

    def send(self, script: Any, packed: bytes) -> Any:
        """Send `packed` (an EVALSHA of `script`) and read its reply, loading the script if the server lost it."""
        for attempt in range(3):
            if self.conn is None:
                # From the pool, which connects it: a Sentinel pool asks where the primary is now.
                self.conn = self.client.connection_pool.get_connection()
            try:
                self.conn.send_packed_command([packed], False)
                return self.conn.read_response()
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.script)
            except redis.exceptions.ResponseError:
                raise  # the script failed; its reply was read, the connection is fine
            except redis.exceptions.ConnectionError:
                self.close()  # the next call takes a new connection
                if attempt:
                    raise
            except BaseException:  # a timeout, or an interrupted read, leaves a reply unread
                self.close()
                raise
        raise redis.exceptions.NoScriptError("the script was lost again as soon as it was loaded")

    def call_after(self, first: Sequence[Any], script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Send the command `first` (a blocking BLPOP) and then the script in one write; the script's reply.

        The server runs the script the moment `first` returns, without this
        client reading that reply and asking: one round trip and thread wake-up
        fewer than two calls. `first`'s reply is read and dropped. When the
        pair cannot be sent, or the script's reply is lost, the script is
        called alone (as `call`, with its reload and retry).
        """
        if self.conn is None:
            self.conn = self.client.connection_pool.get_connection()
        conn = self.conn
        try:
            packed = [_pack(tuple(first)) if _pack else b"".join(conn.pack_command(*first))]
            conn.send_packed_command([*packed, self._packed(script, keys, args)], False)
            conn.read_response()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # A stale connection, or a read that timed out on a busy machine (as
            # redis-py's own client retries it): the script alone, on a new one.
            self.close()
            return self.call(script, keys, args)
        except BaseException:  # an error reply to `first`, or an interrupt: the script's reply is unread
            self.close()
            raise
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:
            pass  # the server lost the script (a restart): `call` loads it
        except redis.exceptions.ResponseError:
            raise  # the script failed; its reply was read, the connection is fine
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self.close()
        except BaseException:
            self.close()
            raise
        return self.call(script, keys, args)

    def _packed(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        if _pack:
            return _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        return pack_evalsha(script.sha, keys, args, self.encoder, self.heads)

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.disconnect()
            self.client.connection_pool.release(conn)


class _Translate:
    """Turns redis-py errors into the broker error tree, keeping the original as the cause.

    A class rather than a @contextmanager generator: every broker call goes through
    one, and the generator's set-up costs about 1 us of an enqueue's.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # ReadOnlyError: a primary was demoted under us during a failover.
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            redis.exceptions.ReadOnlyError)):
            raise BrokerConnectionError(f"Redis: {exc}") from exc
        if isinstance(exc, redis.exceptions.RedisError):
            raise BrokerError(f"Redis: {exc}") from exc


_TRANSLATE = _Translate()


def translate() -> _Translate:
    """The context in which redis-py errors become BrokerConnectionError or BrokerError (`with translate():`)."""
    return _TRANSLATE
