# -*- test-case-name: tests.test_cluster_redis,tests.test_cluster_tls -*-
"""
The cluster link over Redis, with txredisapi: one connection publishes and
runs the commands, one listens (as Synapse joins its worker processes:
C{synapse/replication/tcp/redis.py}).  txredisapi reconnects both by
itself; the link is up while both are usable.

What is in Redis (all names start with the cluster's name, C{--cluster-name}):

  - C{NAME:bus}: the channel every node publishes its users' events to:
    what a node publishes in one reactor turn goes out as one C{PUBLISH},
    a JSON list of the messages (one message alone: the object itself, as
    before lists; a node reads both);
  - C{NAME:name:KEY}: the claim of a name (the node's id), which expires
    unless the node renews it;
  - C{NAME:guests}: the last guest number given out (each node reserves
    a block of them at a time: see L{securemsg.cluster.guests});
  - C{NAME:history:ROOM}: a room's history, a capped stream;
  - C{NAME:bans}: a hash, banned fingerprint or address -> the ban (or its
    lifting) as JSON;
  - C{NAME:motd}: the message of the day, as a JSON string;
  - C{NAME:presence:NODE}: a hash, a node's users (name key -> the user as
    JSON), and C{@mark} (see L{securemsg.cluster.presence}); it expires
    unless the node renews it;
  - C{NAME:nodes}: a sorted set, the live nodes, each scored with the time
    (Redis' clock, in ms) its presence expires.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import txredisapi
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import ssl as twisted_ssl
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.cluster.config import (
    RedisConfig,
    certificate_problem,
    no_tls_problem,
)
from securemsg.cluster.interface import (
    ClusterMessage,
    IClusterHandler,
    IClusterLink,
    Presence,
)

#: What may wait to be sent to Redis at once (messages and commands); more
#: is dropped (and counted).
MAX_PENDING = 10_000

#: While commands to Redis fail, or messages are dropped, how often (in
#: seconds) how many so far is logged; and how long none must have failed
#: (or been dropped) for the episode to end, when Redis answers.
REPORT_EVERY = 60.0
QUIET = 10.0

#: The most messages (or history appends) sent in one command: a turn that
#: has more sends several.
MAX_PER_COMMAND = 1000

# The claims and releases of one turn, in order: for each KEYS[i], ARGV[i + 2]
# is "c" (claim it for node ARGV[1] for ARGV[2] ms, unless another node
# holds it), "f" (claim it even then) or "r" (let it go if node ARGV[1]
# holds it); return, for each, 1 if claimed (or released), else 0.
_CLAIMS = """
local done = {}
for index, key in ipairs(KEYS) do
  local what = ARGV[index + 2]
  local holder = redis.call('get', key)
  if what == 'r' then
    if holder == ARGV[1] then
      redis.call('del', key)
      done[index] = 1
    else
      done[index] = 0
    end
  elseif holder == false or holder == ARGV[1] or what == 'f' then
    redis.call('set', key, ARGV[1], 'PX', ARGV[2])
    done[index] = 1
  else
    done[index] = 0
  end
end
return done
"""

# Append, for each stream KEYS[i], the entry ARGV[2i] to it, keeping about
# its last ARGV[2i-1] (XADD MAXLEN ~): the history of one turn in one
# command.
_APPEND = """
if redis.replicate_commands then redis.replicate_commands() end
for index, key in ipairs(KEYS) do
  redis.call('xadd', key, 'MAXLEN', '~', ARGV[2 * index - 1], '*',
             'e', ARGV[2 * index])
end
return #KEYS
"""

# Renew node ARGV[1]'s claims of KEYS for ARGV[2] ms (making again those
# Redis lost); return the indexes (from 1) of those another node holds.
_RENEW = """
local lost = {}
for index, key in ipairs(KEYS) do
  local holder = redis.call('get', key)
  if holder == false or holder == ARGV[1] then
    redis.call('set', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, index)
  end
end
return lost
"""


#: The field of a presence hash that holds the mark (no name key is).
MARK_FIELD = "@mark"

# Keep node ARGV[1]'s users in the hash KEYS[1] for ARGV[2] ms, and count
# it among the live nodes (the sorted set KEYS[2]) as long; ARGV[3] = "1":
# the users given are all of them; ARGV[4]: the mark; then name key and
# user pairs (an empty user: gone).  The time is Redis' own, so that the
# nodes' clocks need not agree.
_STORE_PRESENCE = (
    """
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('del', KEYS[1])
end
for index = 5, #ARGV - 1, 2 do
  if ARGV[index + 1] == '' then
    redis.call('hdel', KEYS[1], ARGV[index])
  else
    redis.call('hset', KEYS[1], ARGV[index], ARGV[index + 1])
  end
end
redis.call('hset', KEYS[1], '"""
    + MARK_FIELD
    + """', ARGV[4])
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
redis.call('zadd', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('pexpire', KEYS[2], ARGV[2])
return 1
"""
)

# The live nodes of the sorted set KEYS[1] but node ARGV[2], each followed
# by its hash (whose names start with ARGV[1]).
_READ_PRESENCE = """
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local found = {}
for _, node in ipairs(redis.call('zrangebyscore', KEYS[1], '(' .. now, '+inf')) do
  if node ~= ARGV[2] then
    table.insert(found, node)
    table.insert(found, redis.call('hgetall', ARGV[1] .. node))
  end
end
return found
"""


class _Episode:
    """
    Troubles of one kind (commands failing, messages dropped) logged by
    episode, not one line each (a slow Redis can fail thousands of commands
    at once): a line when the first comes, how many so far every
    L{REPORT_EVERY} seconds while more come, and how many in all when it
    ends (L{calm}: Redis answers, and none came for L{QUIET} seconds).
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        *,
        begun: str,
        going_on: str,
        ended: str,
    ) -> None:
        self.log = log
        self.clock = clock
        self.formats = (begun, going_on, ended)
        #: How many in this episode (0: none is going on).
        self.count = 0
        self._started = self._last = self._reported = 0.0
        self._fields: dict[str, object] = {}

    def add(self, count: int = 1, **fields: object) -> None:
        """
        C{count} more: C{fields} for the lines logged (the error...).
        """
        now = self.clock.seconds()
        first = not self.count
        self.count += count
        self._last = now
        self._fields = fields
        if first:
            self._started = self._reported = now
            self.log.warn(self.formats[0], count=count, seconds=0, **fields)
        elif now - self._reported >= REPORT_EVERY:
            self._reported = now
            self.log.warn(self.formats[1], **self._counted())

    def calm(self, *, at_once: bool = False) -> None:
        """
        Things go well (Redis answered; the link came up, if C{at_once}):
        end the episode, if any, unless one came in the last L{QUIET}
        seconds (a trouble that comes and goes is one episode).
        """
        if not self.count:
            return
        if not at_once and self.clock.seconds() - self._last < QUIET:
            return
        self.log.info(self.formats[2], **self._counted())
        self.count = 0

    def _counted(self) -> dict[str, object]:
        seconds = round(self._last - self._started)
        return dict(self._fields, count=self.count, seconds=seconds)


class _Factory(txredisapi.RedisFactory):  # type: ignore[misc]
    """A txredisapi factory that tells the link about its connections."""

    def __init__(self, link: RedisLink, protocol: type, config: RedisConfig) -> None:
        super().__init__(
            None,
            config.db,
            1,
            isLazy=True,
            password=config.password,
            # Long enough for a busy machine; a stalled Redis is noticed.
            replyTimeout=max(5.0, config.claim_ttl / 3),
        )
        self.protocol = protocol
        self.link = link
        # Failures (a wrong password...) are the link's to report.
        self.deferred.addErrback(link.failed)


class _WholeReads:
    """
    Parse all of a read at once.  txredisapi's own parser (the one used
    without hiredis) pauses the transport after each bulk reply and parses
    what follows in the next reactor turn: a read of N replies took up to
    N turns.  On the bus that made each message reach the users in a turn
    (and a write to each) of its own; on the command connection, replies
    fell behind the commands of a busy node until its backlog overflowed.
    """

    line_mode: int
    # What follows a bulk reply in a read, parsed before the read ends.
    _rest = b""

    def setLineMode(self, extra: bytes = b"") -> None:
        self.line_mode = 1
        if extra:
            self._rest += extra

    def _reading(self) -> AbstractContextManager[None]:
        """The context one read is parsed in."""
        return nullcontext()

    def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
        with self._reading():
            result = super().dataReceived(data, unpause)  # type: ignore[misc]
            while self._rest:
                rest, self._rest = self._rest, b""
                result = super().dataReceived(rest)  # type: ignore[misc]
            return result


class _CommandProtocol(_WholeReads, txredisapi.RedisProtocol):  # type: ignore[misc]
    def connectionMade(self) -> Any:
        result = super().connectionMade()
        self.whenConnected().addCallback(self.factory.link.commands_ready)
        return result

    def connectionLost(self, why: Failure) -> None:
        # Before txredisapi reports it as a mere "Lost connection".
        self.factory.link.tls_check(why)
        super().connectionLost(why)
        self.factory.link.connection_lost(self, why)


class _SubscriberProtocol(_WholeReads, txredisapi.SubscriberProtocol):  # type: ignore[misc]
    def _reading(self) -> AbstractContextManager[None]:
        # The messages of one read reach the users together.
        return self.factory.link.receiving()  # type: ignore[no-any-return]

    def connectionMade(self) -> Any:
        result = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self._subscribe())
        return result

    def _subscribe(self) -> None:
        link = self.factory.link
        self.subscribe(link.channel).addCallbacks(
            lambda _: link.subscribed(self), link.failed
        )

    def messageReceived(
        self, pattern: object, channel: object, message: object
    ) -> None:
        self.factory.link.message(message)

    def connectionLost(self, why: Failure) -> None:
        self.factory.link.tls_check(why)
        super().connectionLost(why)
        self.factory.link.connection_lost(self, why)


def _tls_problem(config: RedisConfig, why: Failure) -> str | None:
    """
    What TLS refused, if it is why a connection to Redis was lost: Redis'
    certificate (its chain, checked by OpenSSL; its names, by
    service-identity), or the handshake.
    """
    if why.check(VerificationError):
        return certificate_problem(
            config, f"it is not valid for {config.host}", name_mismatch=True
        )
    if not why.check(SSL.Error):
        return None
    # pyOpenSSL's error: a list of (library, function, reason).
    args = why.value.args if why.value is not None else ()
    errors = args[0] if args else []
    detail = ", ".join(
        str(error[-1]) for error in errors if isinstance(error, tuple)
    ) or str(why.value)
    if "certificate verify failed" in detail:
        return certificate_problem(config, detail, name_mismatch=False)
    return no_tls_problem(config, detail)


@implementer(IClusterLink)
class RedisLink:
    """
    One node's link to the others through Redis.

    @ivar dropped: messages not published (Redis out of reach, or too much
        waiting to be sent).

    What is published, the history appended, and the names claimed and
    released wait for the end of the reactor turn (or the next other
    command, or L{stop}): then they go out as one command that appends them
    all, one C{PUBLISH} (a JSON list) and one script that makes the claims
    and releases in their order (see L{MAX_PER_COMMAND}), which costs
    txredisapi and Redis far less than one command each.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        config: RedisConfig,
        *,
        node_id: str | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.node_id = (
            node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.claim_ttl = config.claim_ttl
        self.channel = f"{config.name}:bus"
        self.up = False
        self.dropped = 0
        self.max_pending = max_pending
        self._pending = 0
        # Published and appended this turn, waiting for _flush.
        self._published: list[ClusterMessage] = []
        self._appends: list[tuple[str, str, int]] = []
        # Claims ("c", "f": forced) and releases ("r") of this turn, in order:
        # the key, which, and the claim's result to give.
        self._claims: list[tuple[str, str, Deferred[bool] | None]] = []
        self._flushing: IDelayedCall | None = None
        self._stopping = False
        # Failed commands and dropped messages, logged by episode.
        self._failures = _Episode(
            self.log,
            reactor,
            begun="a Redis command failed: {error} (more failures are counted,"
            " not logged one by one)",
            going_on="{count} commands to Redis failed in {seconds} s, the last:"
            " {error}",
            ended="{count} commands to Redis failed in {seconds} s; Redis"
            " answers again",
        )
        self._drops = _Episode(
            self.log,
            reactor,
            begun="cluster messages are being dropped (Redis out of reach or too"
            " slow); {dropped} so far",
            going_on="{count} cluster messages dropped in {seconds} s (Redis out"
            " of reach or too slow)",
            ended="{count} cluster messages were dropped in {seconds} s",
        )
        self._handler: IClusterHandler | None = None
        # What TLS refused last, said once until the link is up again.
        self._tls_problem: str | None = None
        self._commands: _CommandProtocol | None = None
        self._listener: _SubscriberProtocol | None = None
        self._factories: list[_Factory] = []

    @property
    def backlog(self) -> int:
        """
        Messages and commands waiting to be sent to Redis or answered by it
        (a message published, a claim or a release counts one, whatever
        command carries it).
        """
        waiting = len(self._published) + len(self._appends) + len(self._claims)
        return self._pending + waiting

    def _full(self) -> bool:
        """Whether Redis is out of reach, or too much waits already."""
        return self._commands is None or not self.up or self.backlog >= self.max_pending

    def _ready(self) -> _CommandProtocol | None:
        """
        The connection to send a command on, after what waits to be sent;
        L{None} if Redis is out of reach or too much waits for its answers.
        """
        self._flush()
        return None if self._full() else self._commands

    def _endpoint(self) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, self.config.host, self.config.port, timeout=5
        )
        if self.config.tls:
            # Every certificate of --cluster-ca (a bundle too), as the check
            # at start trusts them; the system's CAs without it.  The host
            # name is checked (service-identity) by optionsForClientTLS.
            trust = None
            if self.config.ca_certificates:
                trust = twisted_ssl.trustRootFromCertificates(
                    [
                        twisted_ssl.Certificate.loadPEM(
                            certificate.public_bytes(Encoding.PEM)
                        )
                        for certificate in self.config.ca_certificates
                    ]
                )
            endpoint = wrapClientTLS(
                twisted_ssl.optionsForClientTLS(self.config.host, trustRoot=trust),
                endpoint,
            )
        return endpoint

    def _key(self, key: str) -> str:
        return f"{self.config.name}:name:{key}"

    # IClusterLink

    def start(self, handler: IClusterHandler) -> None:
        self._handler = handler
        for protocol in (_CommandProtocol, _SubscriberProtocol):
            factory = _Factory(self, protocol, self.config)
            self._factories.append(factory)
            factory.startConnecting(self._endpoint())

    def stop(self) -> Deferred[None]:
        self._flush()
        self.up = False
        self._stopping = True
        factories, self._factories = self._factories, []
        stopped = gatherResults([f.disconnect() for f in factories], consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def publish(self, message: ClusterMessage) -> bool:
        if self._full():
            self._drop()
            return False
        self._published.append(dict(message, n=self.node_id))
        self._flush_later()
        return True

    def receiving(self) -> AbstractContextManager[None]:
        """The context of one read of the bus (L{IClusterHandler.receiving})."""
        if self._handler is None:
            return nullcontext()
        return self._handler.receiving()

    def _flush_later(self) -> None:
        if self._flushing is None:
            self._flushing = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        """
        Send what waits to be appended, published, claimed and released:
        the history first, as when each line was sent on its own (XADD, then
        PUBLISH); the claims and releases last (a user's departure is
        published before its name is free; a claim's result is waited for
        before what it decides is published).
        """
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        appends, self._appends = self._appends, []
        published, self._published = self._published, []
        claims, self._claims = self._claims, []
        if not appends and not published and not claims:
            return
        commands = self._commands
        if commands is None or not self.up:
            # Lost since: nobody hears it; nobody can tell if a name is free.
            if appends or published:
                self._drop(len(appends) + len(published))
            for _, _, won in claims:
                if won is not None:
                    won.callback(False)
            return
        for start in range(0, len(appends), MAX_PER_COMMAND):
            chunk = appends[start : start + MAX_PER_COMMAND]
            if len(chunk) == 1:
                [(stream, data, max_count)] = chunk
                sent = commands.execute_command(
                    "XADD", stream, "MAXLEN", "~", str(max_count), "*", "e", data
                )
            else:
                args: list[str] = []
                for _, data, max_count in chunk:
                    args += [str(max_count), data]
                sent = commands.eval(_APPEND, [stream for stream, _, _ in chunk], args)
            self._send(sent, weight=len(chunk))
        for start in range(0, len(published), MAX_PER_COMMAND):
            messages = published[start : start + MAX_PER_COMMAND]
            data = json.dumps(
                messages[0] if len(messages) == 1 else messages, separators=(",", ":")
            )
            self._send(commands.publish(self.channel, data), weight=len(messages))
        for start in range(0, len(claims), MAX_PER_COMMAND):
            self._send_claims(commands, claims[start : start + MAX_PER_COMMAND])

    def _send_claims(
        self,
        commands: _CommandProtocol,
        claims: list[tuple[str, str, Deferred[bool] | None]],
    ) -> None:
        """
        Send C{claims} (and releases) as one script, and fire each claim's
        L{Deferred} with its own result (or the command's failure).
        """
        args = [self.node_id, str(int(self.claim_ttl * 1000))]
        args += [what for _, what, _ in claims]
        running = self._send(
            commands.eval(_CLAIMS, [key for key, _, _ in claims], args),
            fail=True,
            weight=len(claims),
        )

        def answered(done: Any) -> None:
            done = list(done or ())
            for index, (_, _, won) in enumerate(claims):
                if won is not None:
                    won.callback(index < len(done) and done[index] == 1)

        def failed(reason: Failure) -> None:
            for _, _, won in claims:
                if won is not None:
                    won.errback(reason)

        running.addCallbacks(answered, failed)

    def claim(self, key: str, force: bool) -> Deferred[bool]:
        if self._full():
            return succeed(False)
        won: Deferred[bool] = Deferred()
        self._claims.append((self._key(key), "f" if force else "c", won))
        self._flush_later()
        return won

    def release(self, key: str) -> None:
        if not self._full():
            self._claims.append((self._key(key), "r", None))
            self._flush_later()

    def renew(self, keys: list[str]) -> Deferred[list[str]]:
        commands = self._ready()
        if not keys or commands is None:
            return succeed([])
        args = [self.node_id, str(int(self.claim_ttl * 1000))]
        running = self._send(
            commands.eval(_RENEW, [self._key(key) for key in keys], args)
        )
        return running.addCallback(
            lambda lost: [keys[index - 1] for index in lost or ()]
        )

    def reserve_guests(self, count: int) -> Deferred[int]:
        commands = self._ready()
        if commands is None:
            return fail(ConnectionError("Redis is out of reach"))
        reserving = self._send(
            commands.incrby(f"{self.config.name}:guests", count), fail=True
        )
        # INCRBY answers with the last of the numbers it gave.
        return reserving.addCallback(lambda last: int(last) - count + 1)

    def append_history(self, room_key: str, data: str, max_count: int) -> None:
        if self._full():
            self._drop()
            return
        self._appends.append((self._stream(room_key), data, max_count))
        self._flush_later()

    def read_history(self, room_key: str, count: int) -> Deferred[list[str]]:
        commands = self._ready()
        if commands is None:
            return succeed([])
        reading = self._send(
            commands.execute_command(
                "XREVRANGE", self._stream(room_key), "+", "-", "COUNT", str(count)
            )
        )

        def entries(reply: Any) -> list[str]:
            # [[id, [field, value]], ...], newest first.
            found: list[str] = []
            for entry in reply or ():
                fields = entry[1]
                found.extend(
                    str(fields[i + 1])
                    for i in range(0, len(fields) - 1, 2)
                    if fields[i] == "e"
                )
            found.reverse()
            return found

        return reading.addCallback(entries)

    def store_presence(
        self, users: dict[str, str | None], mark: int, whole: bool
    ) -> Deferred[bool]:
        # Refused, it is written whole with the next renewal: not a loss.
        commands = self._ready()
        if commands is None:
            return succeed(False)
        args = [
            self.node_id,
            str(int(self.claim_ttl * 1000)),
            "1" if whole else "0",
            str(mark),
        ]
        for key, data in users.items():
            args += [key, data or ""]
        keys = [self._presence(self.node_id), f"{self.config.name}:nodes"]
        running = self._send(commands.eval(_STORE_PRESENCE, keys, args))
        return running.addCallback(lambda done: done == 1)

    def read_presence(self) -> Deferred[dict[str, Presence]]:
        self._flush()
        if self._commands is None or not self.up:
            return fail(ConnectionError("Redis is out of reach"))
        reading = self._send(
            self._commands.eval(
                _READ_PRESENCE,
                [f"{self.config.name}:nodes"],
                [self._presence(""), self.node_id],
            ),
            fail=True,
        )

        def nodes(reply: Any) -> dict[str, Presence]:
            # [node, [field, value, ...], ...]; txredisapi makes numbers of
            # what looks like one: the mark, and perhaps a name key (read
            # from the user's own name instead).
            found: dict[str, Presence] = {}
            reply = list(reply or ())
            for node, fields in zip(reply[::2], reply[1::2], strict=False):
                mark = 0
                users = []
                fields = list(fields or ())
                for field, value in zip(fields[::2], fields[1::2], strict=False):
                    if field == MARK_FIELD:
                        mark = int(value)
                    else:
                        users.append(str(value))
                found[str(node)] = (mark, users)
            return found

        return reading.addCallback(nodes)

    def clear_presence(self) -> None:
        commands = self._ready()
        if commands is None:
            return
        self._send(commands.delete(self._presence(self.node_id)))
        self._send(commands.zrem(f"{self.config.name}:nodes", self.node_id))

    def _presence(self, node_id: str) -> str:
        return f"{self.config.name}:presence:{node_id}"

    def _stream(self, room_key: str) -> str:
        return f"{self.config.name}:history:{room_key}"

    def store_ban(self, value: str, data: str) -> bool:
        # Refused, the caller keeps it for when the link is up: not a loss.
        commands = self._ready()
        if commands is None:
            return False
        self._send(commands.hset(f"{self.config.name}:bans", value, data))
        return True

    def read_bans(self) -> Deferred[dict[str, str]]:
        self._flush()
        if self._commands is None or not self.up:
            return fail(ConnectionError("Redis is out of reach"))
        reading = self._send(
            self._commands.hgetall(f"{self.config.name}:bans"), fail=True
        )
        return reading.addCallback(
            lambda found: {str(k): str(v) for k, v in (found or {}).items()}
        )

    def store_motd(self, text: str) -> bool:
        commands = self._ready()
        if commands is None:
            return False  # Kept by the caller, as a ban is.
        # As JSON: txredisapi would read "42" back as a number.
        self._send(commands.set(f"{self.config.name}:motd", json.dumps(text)))
        return True

    def read_motd(self) -> Deferred[str | None]:
        self._flush()
        if self._commands is None or not self.up:
            return fail(ConnectionError("Redis is out of reach"))
        reading = self._send(self._commands.get(f"{self.config.name}:motd"), fail=True)

        def text(found: object) -> str | None:
            if found is None:
                return None
            decoded = json.loads(str(found))
            if not isinstance(decoded, str):
                raise ValueError(f"{self.config.name}:motd is not a JSON string")
            return decoded

        return reading.addCallback(text)

    # Bookkeeping

    def _send(
        self, command: Deferred[Any], *, fail: bool = False, weight: int = 1
    ) -> Deferred[Any]:
        """
        Count C{command} (as C{weight} messages) while it waits for Redis;
        its failure is logged, and then passed on if C{fail}, else taken as
        a L{None} reply.
        """
        self._pending += weight
        done: Deferred[Any] = Deferred()

        def finished(result: object) -> None:
            self._pending -= weight
            if isinstance(result, Failure):
                if not self._stopping:
                    self._failures.add(error=result.getErrorMessage())
                if fail:
                    done.errback(result)
                else:
                    done.callback(None)
            else:
                if self._failures.count:
                    self._failures.calm()
                # Half the bound free again: the backlog is over.
                if self._drops.count and self._pending <= self.max_pending // 2:
                    self._drops.calm()
                done.callback(result)

        command.addBoth(finished)
        return done

    def _drop(self, count: int = 1) -> None:
        self.dropped += count
        self._drops.add(count, dropped=self.dropped)

    # What the connections say

    def commands_ready(self, protocol: _CommandProtocol) -> None:
        self._commands = protocol
        self._check()

    def subscribed(self, protocol: _SubscriberProtocol) -> None:
        self._listener = protocol
        self._check()

    def tls_check(self, why: Failure) -> None:
        """
        A connection was lost: if TLS refused Redis (a certificate that
        does not check out...), say so in one line, once until the link is
        up again, as txredisapi goes on trying.
        """
        problem = _tls_problem(self.config, why)
        if problem is not None and problem != self._tls_problem:
            self._tls_problem = problem
            self.log.error("{problem}", problem=problem)

    def connection_lost(self, protocol: object, why: Failure) -> None:
        if protocol is self._commands:
            self._commands = None
        elif protocol is self._listener:
            self._listener = None
        else:
            return
        if self.up:
            self.up = False
            self.log.warn(
                "lost Redis at {where}: {why}",
                where=self.config.where(),
                why=why.getErrorMessage(),
            )
            if self._handler is not None:
                self._handler.link_down(why.getErrorMessage())

    def _check(self) -> None:
        if self.up or self._commands is None or self._listener is None:
            return
        self.up = True
        self._tls_problem = None
        self._drops.calm(at_once=True)
        self.log.info("reached Redis at {where}", where=self.config.where())
        if self._handler is not None:
            self._handler.link_up()

    def failed(self, reason: Failure) -> None:
        """Redis refused us (a wrong password, database...): say so once."""
        if self._tls_problem is not None:
            # Said better already: txredisapi's "Lost connection" is why.
            return
        self.log.error(
            "Redis at {where}: {why}",
            where=self.config.where(),
            why=reason.getErrorMessage(),
        )

    def message(self, data: object) -> None:
        """
        One message from the bus: a message, or a list of them (what one
        node published in one turn).
        """
        try:
            decoded = json.loads(data)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.log.warn("a message on {channel} is not JSON", channel=self.channel)
            return
        for message in decoded if isinstance(decoded, list) else (decoded,):
            if not isinstance(message, dict) or message.get("n") == self.node_id:
                continue
            if self._handler is not None:
                self._handler.received(message)
