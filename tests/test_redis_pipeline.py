"""The node's pipelined Redis connection (realtime/infra/resp.py, issue 22): many callers'
commands share one connection and each gets its own reply; a silent Redis fails every waiting
command after the timeout and the next command connects again; a lost connection fails what
waited on it; scripts run by SHA1 and are sent again after Redis forgot them. Before it, each
command held one of the redis-py pool's 32 connections for its whole round trip: in a burst of
500 answers, limit checks queued for a connection until they timed out and 27-47 messages were
refused `unavailable`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import hiredis
import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings

from realtime.infra.resp import Pipeline, Script, pack


class StandIn:
    """A TCP server speaking RESP: `answer(command)` returns the reply bytes for each command,
    or None to stay silent. Counts the connections it accepted."""

    def __init__(self, answer: Callable[[list[str]], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.commands: list[list[str]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        parser = hiredis.Reader(encoding="utf-8")
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                reply = self.answer(command)
                if reply is not None:
                    writer.write(reply)


async def _named_connections(name: str) -> int:
    probe = aioredis.from_url(settings.REDIS_URL)
    try:
        return sum(1 for c in await probe.client_list() if c.get("name") == name)
    finally:
        await probe.aclose()


@pytest.mark.pure
def test_numbers_are_packed_as_redis_reads_them():
    assert pack("EVALSHA", "abc", 2, 0.5) == b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$3\r\n0.5\r\n"
    # A rate of one per minute keeps every digit: the Lua side computes with what it reads.
    assert pack(1 / 60, "é") == b"*2\r\n$20\r\n0.016666666666666666\r\n$2\r\n\xc3\xa9\r\n"


async def test_many_callers_share_one_connection_and_each_gets_its_own_reply():
    name = f"{settings.REDIS_KEY_PREFIX}-pipeline-test"
    pipeline = Pipeline(settings.REDIS_URL, timeout=2, client_name=name)
    try:
        replies = await asyncio.gather(*(pipeline.call("ECHO", f"reply {i}") for i in range(300)))
        assert replies == [f"reply {i}" for i in range(300)]
        assert await _named_connections(name) == 1
        with pytest.raises(redis.ResponseError, match="unknown command"):
            await pipeline.call("NO-SUCH-COMMAND")
        assert await pipeline.call("ECHO", "still in step") == "still in step"  # an error reply is one reply
    finally:
        await pipeline.aclose()


async def test_the_commands_of_one_pass_of_the_loop_go_out_in_one_write():
    """One write (one send()) per pass of the loop, not one per command: 500 PUBLISH in a row
    were a quarter of the loop's time when 500 answers started together."""
    pipeline = Pipeline(settings.REDIS_URL, timeout=2)
    try:
        assert await pipeline.call("ECHO", "connected") == "connected"
        transport = pipeline._connection._transport  # noqa: SLF001 - counting its writes is the point
        writes: list[bytes] = []
        real_write = transport.write

        def counted(data: bytes) -> None:
            writes.append(data)
            real_write(data)

        transport.write = counted
        replies = await asyncio.gather(*(pipeline.call("ECHO", f"reply {i}") for i in range(200)))
        assert replies == [f"reply {i}" for i in range(200)]
        assert len(writes) == 1
        assert writes[0] == b"".join(pack("ECHO", f"reply {i}") for i in range(200))
    finally:
        await pipeline.aclose()


async def test_a_script_redis_forgot_is_sent_again_then_run_by_its_sha():
    pipeline = Pipeline(settings.REDIS_URL, timeout=2)
    script = Script("return {KEYS[1], ARGV[1], 'pipeline-test'}")
    try:
        await pipeline.call("SCRIPT", "FLUSH")
        assert await pipeline.eval(script, ["k"], [7]) == ["k", "7", "pipeline-test"]
        assert await pipeline.call("SCRIPT", "EXISTS", script.sha) == [1]
        assert await pipeline.eval(script, ["k2"], ["x"]) == ["k2", "x", "pipeline-test"]
    finally:
        await pipeline.aclose()


async def test_a_silent_redis_fails_every_waiting_command_after_the_timeout_and_the_next_connects_again():
    silent = True

    def answer(command: list[str]) -> bytes | None:
        if command[0] == "CLIENT":
            return b"+OK\r\n"
        return None if silent else b"+PONG\r\n"

    stand_in = StandIn(answer)
    async with stand_in as url:
        pipeline = Pipeline(url, timeout=0.3, client_name="t")
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(pipeline.call("PING"))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(pipeline.call("PING"))  # written 0.1 s later, same connection
        with pytest.raises(redis.TimeoutError, match="no reply from Redis within 0.3 s"):
            await asyncio.wait_for(first, 5)
        assert loop.time() - started >= 0.3
        # The second fails with the first, not 0.3 s after its own write: the connection is
        # dropped as a whole.
        assert second.done() and isinstance(second.exception(), redis.TimeoutError)
        silent = False
        assert await asyncio.wait_for(pipeline.call("PING"), 5) == "PONG"
        assert stand_in.connections == 2
        await pipeline.aclose()


def bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


async def test_a_lost_connection_fails_what_waited_on_it_and_the_next_command_connects_again():
    stand_in: StandIn

    def answer(command: list[str]) -> bytes | None:
        if command[0] == "CLIENT":
            return b"+OK\r\n"
        if command == ["ECHO", "drop"]:
            stand_in.writers[-1].transport.abort()  # as a restarted Redis does
            return None
        return bulk(command[1]) if command[0] == "ECHO" else b"+PONG\r\n"

    stand_in = StandIn(answer)
    async with stand_in as url:
        pipeline = Pipeline(url, timeout=5, client_name="t")
        waiting = asyncio.ensure_future(pipeline.call("PING"))  # answered before the drop
        dropped = asyncio.ensure_future(pipeline.call("ECHO", "drop"))
        assert await asyncio.wait_for(waiting, 2) == "PONG"
        with pytest.raises(redis.ConnectionError, match="connection to Redis lost"):
            await asyncio.wait_for(dropped, 2)
        assert await asyncio.wait_for(pipeline.call("ECHO", "again"), 2) == "again"
        assert stand_in.connections == 2
        await pipeline.aclose()


async def test_a_caller_that_gives_up_does_not_shift_the_replies_of_the_others():
    release = asyncio.Event()
    held: list[bytes] = []

    def answer(command: list[str]) -> bytes | None:
        if command[0] == "CLIENT":
            return b"+OK\r\n"
        if release.is_set():
            return bulk(command[1])
        held.append(bulk(command[1]))
        if len(held) == 2:
            release.set()
        return None

    stand_in = StandIn(answer)
    async with stand_in as url:
        pipeline = Pipeline(url, timeout=5)
        abandoned = asyncio.ensure_future(pipeline.call("ECHO", "first"))
        kept = asyncio.ensure_future(pipeline.call("ECHO", "second"))
        await asyncio.wait_for(release.wait(), 2)
        abandoned.cancel()
        stand_in.writers[-1].write(b"".join(held))  # both replies, in order
        assert await asyncio.wait_for(kept, 2) == "second"
        assert await asyncio.wait_for(pipeline.call("ECHO", "third"), 2) == "third"
        await pipeline.aclose()


async def test_commands_that_come_while_it_connects_wait_for_the_same_attempt():
    stand_in = StandIn(lambda command: b"+OK\r\n" if command[0] == "CLIENT" else b"+PONG\r\n")
    async with stand_in as url:
        pipeline = Pipeline(url, timeout=2, client_name="t")
        assert await asyncio.gather(*(pipeline.call("PING") for _ in range(50))) == ["PONG"] * 50
        assert stand_in.connections == 1
        await pipeline.aclose()


async def test_nothing_listening_is_a_connection_error():
    async with StandIn(lambda command: None) as url:
        pass  # the port is free again
    pipeline = Pipeline(url, timeout=2)
    with pytest.raises(redis.ConnectionError, match="cannot connect to Redis"):
        await pipeline.call("PING")


async def test_a_refused_password_is_an_authentication_error():
    def answer(command: list[str]) -> bytes | None:
        return b"-WRONGPASS invalid username-password pair\r\n" if command[0] == "AUTH" else b"+OK\r\n"

    async with StandIn(answer) as url:
        pipeline = Pipeline(url.replace("redis://", "redis://:secret@"), timeout=2)
        with pytest.raises(redis.AuthenticationError, match="WRONGPASS"):
            await pipeline.call("PING")


async def test_a_connection_lost_before_it_was_handed_over_is_not_kept():
    # The window between the handshake's last reply and the attempt's done callback: the
    # connection's loss then finds nothing to forget, and kept, it failed every later command.
    def answer(command: list[str]) -> bytes | None:
        return b"+OK\r\n" if command[0] == "CLIENT" else b"+PONG\r\n"

    async with StandIn(answer) as url:
        pipeline = Pipeline(url, timeout=2, client_name="t")
        lost = await pipeline._open()  # noqa: SLF001 - the attempt, before it is handed over
        lost.connection_lost(ConnectionResetError("reset"))
        attempt = asyncio.get_running_loop().create_future()
        attempt.set_result(lost)
        pipeline._connected(attempt)  # noqa: SLF001
        assert await asyncio.wait_for(pipeline.call("PING"), 2) == "PONG"  # on a new connection
        await pipeline.aclose()
