"""
Tests for L{securemsg.tap}: the options of C{twistd securemsg} as data, the
service it builds (on a L{MemoryReactor}: no port is bound), and that twistd
can find the plugin at all.
"""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.application.service import (
    IService,
    IServiceCollection,
    IServiceMaker,
    Service,
)
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.usage import UsageError

# twistd's own options for this platform, which it imports without
# re-exporting them.
from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securemsg import tap
from securemsg.cluster.config import RedisConfig
from securemsg.cluster.history import StreamHistory
from securemsg.cluster.service import TWISTED_REUSES_PORTS, ClusterService
from securemsg.core.history import MemoryHistory, SqliteHistory
from securemsg.core.limits import Limits
from securemsg.protocol import wire
from securemsg.server.factory import DEFAULT_GREETING, ChatServerFactory
from securemsg.server.guard import GuardedTLSFactory
from securemsg.server.reload import (
    ExpiryWarningService,
    ReloadService,
    SessionKeyService,
)
from securemsg.server.service import (
    CertificateReportService,
    HistoryService,
    ListenerService,
    OpenFileLimitService,
    OrderedMultiService,
    ShutdownService,
)
from securemsg.tls import policy as tls

from . import _certs
from ._service import ServiceTreeCase


def parse(*arguments: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(arguments))
    return options


def all_services(top: IService) -> list[IService]:
    """C{top} and every service under it, depth first."""
    found = [top]
    if IServiceCollection.providedBy(top):
        for child in top:
            found.extend(all_services(child))
    return found


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options} parses the command line into the values make_service uses.
    """

    def test_defaults(self) -> None:
        """
        With no arguments every option has its documented default, and the
        server listens on TCP port 50000 on all IPv4 addresses.
        """
        options = parse()
        self.assertEqual(
            dict(options),
            {
                "cert": "certificate.pem",
                "key": None,
                "key-passphrase-file": None,
                "port": 50000,
                "interface": "",
                "greeting": DEFAULT_GREETING,
                "max-line-length": 4096,
                "tls-min": "1.2",
                "log-messages": 0,
                "listen": [],
                "handshake-timeout": 10.0,
                "idle-timeout": 300.0,
                "max-connections": 1000,
                "max-per-ip": 20,
                "ipv6-prefix": 64,
                "ipv4-prefix": 32,
                "connect-burst": 20,
                "connect-rate": 5.0,
                "flood-burst": 20,
                "flood-rate": 5.0,
                "flood-disconnect": 100,
                "send-queue": 1048576,
                "shutdown-grace": 5.0,
                "line-flush": 0.2,
                "max-rooms": 500,
                "max-rooms-per-ip": 20,
                "default-room": "#lobby",
                "metrics": None,
                "announce-max": 200,
                "history-db": "securemsg-history.sqlite3",
                "history-replay": 50,
                "history-max": 10000,
                "history-max-age": 30.0,
                "store-private": 0,
                "client-ca": None,
                "client-auth": "required",
                "crl": None,
                "operators": [],
                "state": "securemsg-state.json",
                "watch-certs": 0,
                "check": 0,
                "web": None,
                "web-origin": [],
                "cluster": None,
                "cluster-name": "securemsg",
                "cluster-ca": None,
                "cluster-password-file": None,
                "cluster-claim-ttl": 15.0,
                "cluster-config": None,
                "reuse-port": 0,
            },
        )
        self.assertEqual(options.limits(), Limits())
        self.assertEqual(options.endpoint_descriptions(), ["tcp:50000"])

    def test_help_shows_no_empty_default(self) -> None:
        """
        C{--help} shows no C{[default: ]}: options without a default (such
        as --interface and --operators) say what happens without them.
        """
        usage_text = tap.Options().getUsage(width=80)
        self.assertIn("--interface=", usage_text)
        self.assertIn("--operators=", usage_text)
        self.assertNotIn("[default: ]", usage_text)
        self.assertEqual(parse("--interface", "::")["interface"], "::")

    def test_claim_ttl_help_names_presence(self) -> None:
        """
        C{--cluster-claim-ttl}'s help says that the node's presence in
        Redis lasts as long as its claims (docs/cluster.md, "Presence").
        """
        [text] = [
            option[3]
            for option in tap.Options.optParameters
            if option[0] == "cluster-claim-ttl"
        ]
        self.assertIn("presence in Redis (NAME:presence:NODE, NAME:nodes)", text)
        self.assertIn("unless renewed, which each node does with its claims", text)

    def test_all_options(self) -> None:
        """
        Every option given on the command line ends up in the parsed values,
        converted to its type.
        """
        options = parse(
            "--cert=c.pem",
            "--key=k.pem",
            "--key-passphrase-file=pass.txt",
            "--port=6000",
            "--interface=127.0.0.1",
            "--greeting=hi {name}",
            "--max-line-length=100",
            "--tls-min=1.3",
            "--log-messages",
            "--handshake-timeout=2.5",
            "--idle-timeout=0",
            "--max-connections=50",
            "--max-per-ip=5",
            "--ipv6-prefix=56",
            "--ipv4-prefix=24",
            "--connect-burst=4",
            "--connect-rate=0.25",
            "--flood-burst=3",
            "--flood-rate=0.5",
            "--flood-disconnect=7",
            "--send-queue=4096",
            "--shutdown-grace=1",
            "--line-flush=0",
            "--max-rooms=7",
            "--max-rooms-per-ip=0",
            "--default-room=#hall",
            "--history-db=:memory:",
            "--history-replay=5",
            "--history-max=100",
            "--history-max-age=7",
            "--store-private",
            "--client-ca=ca.pem",
            "--client-auth=optional",
            "--crl=crl.pem",
            "--operators=alice, bob",
            "--state=state.json",
            "--watch-certs",
            "--metrics=tcp:9464:interface=127.0.0.1",
            "--web=tcp:8443",
            "--web-origin=https://chat.example/",
            "--cluster=redis://:pw@127.0.0.1:6390/2",
            "--cluster-name=team",
            "--cluster-claim-ttl=3",
            "--reuse-port",
        )
        self.assertEqual(
            dict(options),
            {
                "cert": "c.pem",
                "key": "k.pem",
                "key-passphrase-file": "pass.txt",
                "port": 6000,
                "interface": "127.0.0.1",
                "greeting": "hi {name}",
                "max-line-length": 100,
                "tls-min": "1.3",
                "log-messages": 1,
                "listen": [],
                "handshake-timeout": 2.5,
                "idle-timeout": 0.0,
                "max-connections": 50,
                "max-per-ip": 5,
                "ipv6-prefix": 56,
                "ipv4-prefix": 24,
                "connect-burst": 4,
                "connect-rate": 0.25,
                "flood-burst": 3,
                "flood-rate": 0.5,
                "flood-disconnect": 7,
                "send-queue": 4096,
                "shutdown-grace": 1.0,
                "line-flush": 0.0,
                "max-rooms": 7,
                "max-rooms-per-ip": 0,
                "default-room": "#hall",
                "metrics": "tcp:9464:interface=127.0.0.1",
                "announce-max": 200,
                "history-db": ":memory:",
                "history-replay": 5,
                "history-max": 100,
                "history-max-age": 7.0,
                "store-private": 1,
                "client-ca": "ca.pem",
                "client-auth": "optional",
                "crl": "crl.pem",
                "operators": ["alice", "bob"],
                "state": "state.json",
                "watch-certs": 1,
                "check": 0,
                "web": "tcp:8443",
                "web-origin": ["https://chat.example"],
                "cluster": "redis://:pw@127.0.0.1:6390/2",
                "cluster-name": "team",
                "cluster-ca": None,
                "cluster-password-file": None,
                "cluster-claim-ttl": 3.0,
                "cluster-config": RedisConfig(
                    host="127.0.0.1",
                    port=6390,
                    db=2,
                    password="pw",
                    tls=False,
                    ca_path=None,
                    name="team",
                    claim_ttl=3.0,
                ),
                "reuse-port": 1,
            },
        )
        self.assertEqual(
            options.limits(),
            Limits(
                handshake_timeout=2.5,
                idle_timeout=0.0,
                max_connections=50,
                max_per_address=5,
                ipv6_prefix=56,
                ipv4_prefix=24,
                connect_burst=4,
                connect_rate=0.25,
                flood_burst=3,
                flood_rate=0.5,
                flood_disconnect=7,
                send_queue=4096,
                shutdown_grace=1.0,
                line_flush=0.0,
                max_rooms=7,
                max_rooms_per_address=0,
                max_line_length=100,
                replay=5,
            ),
        )
        self.assertEqual(
            options.endpoint_descriptions(), ["tcp:6000:interface=127.0.0.1"]
        )

    def test_listen_is_repeatable(self) -> None:
        """
        --listen may be given several times; the endpoints are listened on as
        given, in order, and --port/--interface are then ignored.
        """
        options = parse(
            "--listen",
            "tcp:5000:interface=127.0.0.1",
            "--port=6000",
            "--listen",
            "unix:/run/securemsg.sock",
        )
        given = ["tcp:5000:interface=127.0.0.1", "unix:/run/securemsg.sock"]
        self.assertEqual(options["listen"], given)
        self.assertEqual(options.endpoint_descriptions(), given)

    def test_ipv6_interface(self) -> None:
        """
        An interface with colons makes a tcp6 endpoint, with the colons
        escaped so that the endpoint parser does not split on them.
        """
        self.assertEqual(
            parse("--interface", "::").endpoint_descriptions(),
            ["tcp6:50000:interface=\\:\\:"],
        )
        self.assertEqual(
            parse("--interface", "::1", "--port", "0").endpoint_descriptions(),
            ["tcp6:0:interface=\\:\\:1"],
        )

    def test_port_range(self) -> None:
        """
        --port accepts 0 to 65535 and nothing else.
        """
        self.assertEqual(parse("--port", "0")["port"], 0)
        self.assertEqual(parse("--port", "65535")["port"], 65535)
        for bad in ["65536", "-1", "fifty"]:
            self.assertRaises(UsageError, parse, "--port", bad)

    def test_tls_minimum(self) -> None:
        """
        --tls-min accepts 1.2 and 1.3 only; 1.1 is a usage error that names
        the accepted values.
        """
        self.assertEqual(parse("--tls-min", "1.3")["tls-min"], "1.3")
        error = self.assertRaises(UsageError, parse, "--tls-min", "1.1")
        self.assertEqual(str(error), "--tls-min must be one of 1.2, 1.3, not '1.1'")

    def test_store_private_needs_client_ca(self) -> None:
        """
        --store-private without --client-ca is a usage error: private
        history is kept only for certificate holders.
        """
        error = self.assertRaises(UsageError, parse, "--store-private")
        self.assertEqual(
            str(error),
            "--store-private needs --client-ca: private history is kept only"
            " for certificate holders, whose names nobody can take",
        )

    def test_max_line_length_positive(self) -> None:
        """
        --max-line-length must be at least 1.
        """
        self.assertEqual(parse("--max-line-length", "1")["max-line-length"], 1)
        for bad in ["0", "-5", "lots"]:
            self.assertRaises(UsageError, parse, "--max-line-length", bad)

    def test_prefix_lengths(self) -> None:
        """
        --ipv6-prefix takes 1 to 128 and --ipv4-prefix 1 to 32.
        """
        options = parse("--ipv6-prefix", "128", "--ipv4-prefix", "1")
        self.assertEqual(
            (options.limits().ipv6_prefix, options.limits().ipv4_prefix), (128, 1)
        )
        for option, bad in [
            ("--ipv6-prefix", "0"),
            ("--ipv6-prefix", "129"),
            ("--ipv4-prefix", "33"),
            ("--ipv4-prefix", "all"),
        ]:
            self.assertRaises(UsageError, parse, option, bad)


class TwistdUsageErrorTests(SynchronousTestCase):
    """
    A mistake on the command line of C{twistd securemsg} is one line, not
    twistd's whole usage first.
    """

    def twistd_exit(self, *arguments: str) -> object:
        """Parse C{twistd securemsg ARGUMENTS} as twistd does; the exit code."""
        error = self.assertRaises(
            SystemExit, ServerOptions().parseOptions, ["securemsg", *arguments]
        )
        return error.code

    def test_unknown_option(self) -> None:
        """
        Under twistd, an unknown option stops parsing with L{SystemExit}
        whose message (standard error, status 1) says what is wrong and
        points at --help.
        """
        self.assertEqual(
            self.twistd_exit("--bogus"),
            "twistd securemsg: option --bogus not recognized;"
            " run 'twistd securemsg --help' for usage",
        )

    def test_bad_value(self) -> None:
        """A value postOptions refuses is one line too."""
        self.assertEqual(
            self.twistd_exit("--client-auth", "maybe"),
            "twistd securemsg: --client-auth must be required or optional, not"
            " 'maybe'; run 'twistd securemsg --help' for usage",
        )

    def test_argument(self) -> None:
        """A positional argument is named, not 'Wrong number of arguments.'."""
        self.assertEqual(
            self.twistd_exit("certificate.pem"),
            "twistd securemsg: unexpected argument 'certificate.pem';"
            " run 'twistd securemsg --help' for usage",
        )

    def test_without_twistd(self) -> None:
        """Parsed on their own, the options raise L{UsageError} as usual."""
        error = self.assertRaises(UsageError, parse, "--bogus")
        self.assertEqual(str(error), "option --bogus not recognized")


class OpenHistoryTests(SynchronousTestCase):
    """
    L{tap.open_history} keeps messages 30 days unless told otherwise, and
    reads only the default room's history at start.
    """

    def test_default_age_limit(self) -> None:
        """
        By default messages are kept 30 days, in memory as in a file; 0
        keeps them for ever.
        """
        clock = MemoryReactorClock()
        memory = tap.open_history(clock, parse("--history-db", ":memory:"))
        assert isinstance(memory, MemoryHistory)
        self.assertEqual(memory.max_age, 30 * 86400)
        forever = tap.open_history(
            clock, parse("--history-db", ":memory:", "--history-max-age", "0")
        )
        assert isinstance(forever, MemoryHistory)
        self.assertIsNone(forever.max_age)

    def test_file_reads_the_default_room_only(self) -> None:
        """
        A history file keeps the default age limit, and at start only the
        default room's last messages are read into memory.
        """
        path = self.mktemp()
        clock = MemoryReactorClock()
        first = tap.open_history(clock, parse("--history-db", path))
        assert isinstance(first, SqliteHistory)
        self.assertEqual(first.max_age, 30 * 86400)
        for room in ("#lobby", "#dev", "#ops"):
            first.record(wire.Message("alice", "hi", room, 0.0 + clock.seconds()))
        self.successResultOf(first.close())
        again = tap.open_history(
            clock, parse("--history-db", path, "--default-room", "#ops")
        )
        assert isinstance(again, SqliteHistory)
        self.addCleanup(again.close)
        self.assertEqual(list(again._rooms), ["#ops"])


class MakeServiceTests(ServiceTreeCase):
    """
    L{tap.make_service} builds the whole server from options, reading the
    certificate at once, without binding anything until it is started.
    """

    def setUp(self) -> None:
        super().setUp()
        self.missing = str(self.directory / "missing.pem")

    def test_prefix_lengths_reach_the_guard(self) -> None:
        """
        The connections per client are counted with the prefix lengths of
        --ipv6-prefix and --ipv4-prefix.
        """
        reactor, top = self.build(
            "--ipv6-prefix", "48",
            "--ipv4-prefix", "24",
            listen="tcp:1234",
        )  # fmt: skip
        self.start(top)
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, GuardedTLSFactory)
        self.assertEqual(
            (factory.limits.ipv6_prefix, factory.limits.ipv4_prefix), (48, 24)
        )

    def test_service_tree_and_listener(self) -> None:
        """
        The service tree holds one chat L{ListenerService}; starting it listens on the
        given endpoint with the chat factory wrapped in TLS, built with the
        greeting and line limit from the options.  Stopping stops listening.
        """
        reactor = MemoryReactorClock()
        options = parse(
            "--cert", self.cert_path,
            "--key", self.key_path,
            "--greeting", "hi {name}",
            "--history-db", ":memory:",
            "--max-line-length", "100",
            "--listen", "tcp:1234:interface=127.0.0.1",
        )  # fmt: skip
        top = tap.make_service(reactor, options)
        chat_services = [s for s in all_services(top) if isinstance(s, ListenerService)]
        self.assertEqual(len(chat_services), 1)
        self.assertEqual(reactor.tcpServers, [])

        top.privilegedStartService()
        top.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        port, factory, _, interface = reactor.tcpServers[0]
        self.assertEqual((port, interface), (1234, "127.0.0.1"))
        assert isinstance(factory, TLSMemoryBIOFactory), factory
        chat = factory.wrappedFactory
        self.assertIsInstance(chat, ChatServerFactory)
        self.assertEqual(chat.greeting_lines("alice"), ["hi alice"])
        self.assertEqual(chat.limits.max_line_length, 100)
        self.assertIs(chat.clock, reactor)
        self.assertEqual(len(chat_services[0].ports), 1)

        self.successResultOf(top.stopService())
        self.assertEqual(chat_services[0].ports, [])

    def test_service_tree_shape(self) -> None:
        """
        make_service composes small services, one job each, in an
        L{OrderedMultiService}, in the order they start: the history and
        the clients' shutdown before the listeners, so that they stop
        after them.
        """
        options = parse(
            "--cert", self.cert_path,
            "--key", self.key_path,
            "--history-db", ":memory:",
            "--listen", "tcp:1234",
            "--web", "tcp:8443",
            "--metrics", "tcp:9464",
        )  # fmt: skip
        top = tap.make_service(MemoryReactorClock(), options)
        self.assertIsInstance(top, OrderedMultiService)
        self.assertEqual(
            [(service.name, type(service)) for service in top],
            [
                ("open-files", OpenFileLimitService),
                ("history", HistoryService),
                ("shutdown", ShutdownService),
                ("certificate", CertificateReportService),
                ("reload", ReloadService),
                ("expiry", ExpiryWarningService),
                ("session-keys", SessionKeyService),
                ("chat", ListenerService),
                ("web", ListenerService),
                ("metrics", ListenerService),
            ],
        )

    def test_cluster_service_tree(self) -> None:
        """
        With --cluster, a L{ClusterService} comes first in the tree (so it
        stops last), the chat has its node and the rooms' history is in
        Redis streams; --reuse-port listens with SO_REUSEPORT.
        """
        reactor, top = self.build(
            "--cluster", "redis://127.0.0.1:6390/0",
            "--reuse-port",
            listen="tcp:1234:interface=127.0.0.1",
        )  # fmt: skip
        cluster = top.getServiceNamed("cluster")
        assert isinstance(cluster, ClusterService)
        self.assertIs(next(iter(top)), cluster)
        shutdown = top.getServiceNamed("shutdown")
        assert isinstance(shutdown, ShutdownService)
        chat = shutdown.factory.chat
        self.assertIs(chat.cluster, cluster.node)
        self.assertIsInstance(chat.history, StreamHistory)
        listener = top.getServiceNamed("chat")
        assert isinstance(listener, ListenerService)
        listener.listen()
        self.addCleanup(listener.stopService)
        if not TWISTED_REUSES_PORTS:
            # Twisted before 26.10: a socket made with SO_REUSEPORT, adopted.
            [(_, family, _)] = reactor.adoptedPorts
            self.assertEqual(family, socket.AF_INET)
            return
        [(port, _, _, interface)] = reactor.tcpServers
        # ReusePortReactor hands listenTCP a binding, not a port number.
        binding = cast(Any, port)
        self.assertEqual(
            (binding._port, binding._reusePort, interface), (1234, True, "127.0.0.1")
        )

    def test_stop_order(self) -> None:
        """
        Stopping the service stops listening, then (once the ports are
        closed) shuts the clients down, then (once they are gone) closes
        the history: each waits for the one before it.
        """
        _, top = self.build()
        top.privilegedStartService()
        top.startService()
        done: list[str] = []
        waiting: dict[str, Deferred[None]] = {}

        def step(name: str) -> Callable[[], Deferred[None]]:
            def called() -> Deferred[None]:
                done.append(name)
                waiting[name] = Deferred()
                return waiting[name]

            return called

        chat = top.getServiceNamed("chat")
        assert isinstance(chat, ListenerService)
        [port] = chat.ports
        self.patch(port, "stopListening", step("stop listening"))
        shutdown = top.getServiceNamed("shutdown")
        assert isinstance(shutdown, ShutdownService)
        self.patch(shutdown.factory, "shut_down", step("shut down"))
        history = top.getServiceNamed("history")
        assert isinstance(history, HistoryService)
        self.patch(history.history, "close", step("close history"))

        stopped = top.stopService()
        self.assertEqual(done, ["stop listening"])
        waiting["stop listening"].callback(None)
        self.assertEqual(done, ["stop listening", "shut down"])
        waiting["shut down"].callback(None)
        self.assertEqual(done, ["stop listening", "shut down", "close history"])
        self.assertNoResult(stopped)
        waiting["close history"].callback(None)
        self.successResultOf(stopped)

    def test_several_endpoints(self) -> None:
        """
        Each --listen is listened on with the same chat factory.
        """
        reactor, top = self.build("--listen", "tcp6:1235:interface=\\:\\:1")
        top.privilegedStartService()
        top.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(1234, ""), (1235, "::1")],
        )
        chats = {
            id(cast(TLSMemoryBIOFactory, factory).wrappedFactory)
            for _, factory, _, _ in reactor.tcpServers
        }
        self.assertEqual(len(chats), 1)
        self.successResultOf(top.stopService())

    def test_bad_certificate_path(self) -> None:
        """
        A certificate file that does not exist fails in make_service, with a
        one-line L{tls.TLSConfigError} that says how to make one.
        """
        options = parse("--cert", self.missing, "--port", "0")
        error = self.assertRaises(
            tls.TLSConfigError, tap.make_service, MemoryReactorClock(), options
        )
        self.assertEqual(
            str(error),
            f"certificate file {self.missing} not found"
            " (make one with: securemsg gencert)",
        )

    def test_makeService_exits_with_one_line(self) -> None:
        """
        twistd's entry point turns a configuration problem into
        L{SystemExit} with a one-line C{securemsg: ...} message (which Python
        prints to standard error), not a traceback.
        """
        options = parse("--cert", self.missing, "--port", "0")
        error = self.assertRaises(SystemExit, tap.makeService, options)
        self.assertEqual(
            error.code,
            f"securemsg: certificate file {self.missing} not found"
            " (make one with: securemsg gencert)",
        )

    def test_makeService_missing_key_names_option(self) -> None:
        """
        A certificate with no key beside it and no --key: the one line says
        which file was looked for and to give the key's path with --key.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        cert_path = directory / "certificate.pem"
        cert_path.write_bytes(Path(self.cert_path).read_bytes())
        options = parse("--cert", str(cert_path), "--port", "0")
        error = self.assertRaises(SystemExit, tap.makeService, options)
        self.assertEqual(
            error.code,
            f"securemsg: private key file {directory / 'private.key'} not found"
            " (give its path with --key)",
        )


class OrderedMultiServiceTests(SynchronousTestCase):
    """
    L{OrderedMultiService} stops its children in reverse order, one after
    the other.
    """

    def test_failure_does_not_stop_the_rest(self) -> None:
        """
        A child that fails to stop is logged, and the children added before
        it still stop.
        """
        top = OrderedMultiService()
        first, second = Service(), Service()
        first.setServiceParent(top)
        second.setServiceParent(top)
        top.startService()

        def broken() -> None:
            raise RuntimeError("cannot stop")

        self.patch(second, "stopService", broken)
        self.successResultOf(top.stopService())
        self.assertFalse(first.running)
        [failure] = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(str(failure.value), "cannot stop")


class PluginTests(SynchronousTestCase):
    """
    twistd finds the securemsg plugin (from the top-level twisted/plugins/
    folder while developing, or from site-packages once installed).
    """

    def test_plugin_found(self) -> None:
        """
        Exactly one L{IServiceMaker} plugin has the tapname C{securemsg}; it
        provides the interface, its options are L{tap.Options} and its
        service maker is L{tap.makeService}.
        """
        makers: list[Any] = [
            maker for maker in getPlugins(IServiceMaker) if maker.tapname == "securemsg"
        ]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertIsInstance(maker.options(), tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertEqual(maker.description, "A TLS-encrypted multi-user chat server.")


class CheckOptionTests(SynchronousTestCase):
    """
    C{twistd securemsg --check} prints the pre-flight report and exits,
    with status 1 on a problem.
    """

    def run_check(self, *arguments: str) -> tuple[int, str]:
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        error = self.assertRaises(SystemExit, parse, *arguments, "--check")
        return int(error.code or 0), output.getvalue()

    def test_good_pair(self) -> None:
        """A good certificate and key pass, with one line per check."""
        directory = Path(self.mktemp())
        directory.mkdir()
        _, server = _certs.default_ca_and_server()
        cert, key = server.write(directory)
        code, report = self.run_check("--cert", cert, "--key", key)
        self.assertEqual(code, 0, report)
        self.assertIn("ok   private key", report)
        self.assertTrue(report.rstrip().endswith("no warnings"), report)

    def test_missing_certificate(self) -> None:
        """A missing certificate is a FAIL line and exit status 1."""
        code, report = self.run_check("--cert", "nowhere.pem")
        self.assertEqual(code, 1)
        self.assertIn("FAIL", report)
