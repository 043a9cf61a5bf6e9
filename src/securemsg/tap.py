# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd securemsg} command: its options and the service it runs.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from twisted.application.service import IService
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from securemsg.cluster.config import ClusterError, parse_cluster_url, probe
from securemsg.cluster.history import StreamHistory
from securemsg.cluster.node import ClusterNode
from securemsg.cluster.service import ClusterService, ReusePortReactor, make_link
from securemsg.core.history import (
    DEFAULT_MAX_COUNT,
    HistoryError,
    HistoryStore,
    MemoryHistory,
    SqliteHistory,
)
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.core.records import RecordsError, ServerRecords
from securemsg.protocol import wire
from securemsg.server import web
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.server.factory import DEFAULT_GREETING, ChatServerFactory
from securemsg.server.reload import (
    CertificateReloader,
    ExpiryWarningService,
    ReloadService,
    SessionKeyService,
)
from securemsg.server.service import (
    CertificateReportService,
    HistoryService,
    ListenError,
    ListenerService,
    OpenFileLimitService,
    OrderedMultiService,
    RepeatedStopSignals,
    ShutdownService,
)
from securemsg.tls import policy as tls
from securemsg.tls.inspect import run_check

DEFAULT_HISTORY_DB: Final = "securemsg-history.sqlite3"
DEFAULT_STATE_FILE: Final = "securemsg-state.json"
#: Days messages are kept by default: a history that only ever grows is a
#: liability, for the disk and for whoever said something in it.
DEFAULT_HISTORY_DAYS: Final = 30


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{number} is not a positive number")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{number} is negative")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"{value} is not a number of seconds")
    return number


def _positive_seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value} is not a positive number")
    return number


def _ipv6_prefix(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 128:
        raise ValueError(f"{number} is not a prefix length from 1 to 128")
    return number


def _ipv4_prefix(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 32:
        raise ValueError(f"{number} is not a prefix length from 1 to 32")
    return number


_positive.coerceDoc = "At least 1."  # type: ignore[attr-defined]
_ipv6_prefix.coerceDoc = "1 to 128."  # type: ignore[attr-defined]
_ipv4_prefix.coerceDoc = "1 to 32."  # type: ignore[attr-defined]
_seconds.coerceDoc = ""  # type: ignore[attr-defined]
_positive_seconds.coerceDoc = ""  # type: ignore[attr-defined]
_DEFAULTS = Limits()


class Options(usage.Options):
    """
    Options of C{twistd securemsg}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a securemsg TLS chat server. Make a certificate first with "
        "'securemsg gencert'. The key is read from --key if given, else from "
        "the certificate file if it holds one, else from private.key beside "
        "the certificate. An encrypted key's passphrase comes from "
        "--key-passphrase-file, else the SECUREMSG_KEY_PASSPHRASE environment "
        "variable, else a prompt on a terminal."
    )

    optFlags = [
        ["log-messages", None, "Also log the text of chat lines (off: private)."],
        [
            "store-private",
            None,
            "Also keep private messages between certificate holders in the"
            " history, for /history NAME (needs --client-ca; guests' are never"
            " kept: anyone may take a guest's name).",
        ],
        [
            "watch-certs",
            None,
            "Reload the certificates when their files change (SIGHUP and an"
            " operator's /reload always do).",
        ],
        [
            "reuse-port",
            None,
            "Listen with SO_REUSEPORT, so that several securemsg processes (of"
            " one --cluster) share one port; see docs/cluster.md.",
        ],
        [
            "check",
            None,
            "Check the certificate, key, client CA and CRL, print a report and"
            " exit (1 on a problem).",
        ],
    ]

    optParameters: list[Any] = [
        ["cert", "c", "certificate.pem", "PEM certificate (chain) file."],
        ["key", "k", None, "PEM private key file (default: see below)."],
        [
            "key-passphrase-file",
            None,
            None,
            "File whose first line is the private key's passphrase.",
        ],
        ["port", "p", wire.DEFAULT_PORT, "TCP port to listen on.", usage.portCoerce],
        [
            "cluster",
            None,
            None,
            "Join the other securemsg processes of one chat through Redis:"
            " redis://[:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS (the"
            " password is better given by --cluster-password-file or"
            " SECUREMSG_CLUSTER_PASSWORD). See docs/cluster.md.",
        ],
        [
            "cluster-name",
            None,
            "securemsg",
            "The chat's name in Redis (the prefix of its keys and channel):"
            " several chats may share one Redis.",
        ],
        [
            "cluster-ca",
            None,
            None,
            "With rediss://: PEM file of the CA (or CAs) that may sign Redis'"
            " certificate, which must also name the --cluster host (default:"
            " the system's CAs).",
        ],
        [
            "cluster-password-file",
            None,
            None,
            "File whose first line is the Redis password.",
        ],
        [
            "cluster-claim-ttl",
            None,
            15.0,
            "Seconds a node's claims on its users' names, and its presence in"
            " Redis (NAME:presence:NODE, NAME:nodes), last unless renewed, which"
            " each node does with its claims: a node gone without a word frees"
            " its names and is seen leaving within this time.",
            _positive_seconds,
        ],
        [
            "interface",
            "i",
            None,
            "Address to listen on (default: all IPv4 addresses; '::' for all"
            " IPv4 and IPv6).",
        ],
        [
            "greeting",
            None,
            DEFAULT_GREETING,
            "Notice sent to each client on joining; {name} is replaced by the"
            " client's name; '' sends none.",
        ],
        [
            "max-line-length",
            None,
            _DEFAULTS.max_line_length,
            "Longest line accepted, in bytes.",
            _positive,
        ],
        ["tls-min", None, "1.2", "Lowest TLS version accepted: 1.2 or 1.3."],
        [
            "client-ca",
            None,
            None,
            "Verify client certificates against this CA file (mutual TLS); a"
            " verified client's name is its certificate's. Give --crl too, or"
            " revoked certificates are accepted.",
        ],
        [
            "client-auth",
            None,
            "required",
            "With --client-ca: 'required' (no certificate, no entry) or"
            " 'optional' (clients without one are guests, shown as ~name).",
        ],
        [
            "crl",
            None,
            None,
            "Refuse client certificates this CRL (PEM) revokes; a reload of it"
            " also disconnects their connected holders.",
        ],
        [
            "operators",
            None,
            None,
            "Comma-separated names (certificate holders only) that may /kick,"
            " /ban, /unban, /motd and /reload.",
        ],
        [
            "state",
            None,
            DEFAULT_STATE_FILE,
            "File that keeps bans, the message of the day and certificate"
            " holders' names across restarts (with --cluster, each process"
            " keeps its own; bans and the motd are kept in Redis too).",
        ],
        ["default-room", None, wire.DEFAULT_ROOM, "The room everyone starts in."],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics (plain HTTP) on this endpoint,"
            " e.g. tcp:9464:interface=127.0.0.1 (off by default; never the chat"
            " port; see docs/operations.md).",
        ],
        [
            "web",
            None,
            None,
            "Also serve the chat page for browsers and its WebSocket on this"
            " endpoint (e.g. tcp:8443), with the same certificate and TLS"
            " settings (see docs/web.md).",
        ],
        [
            "history-db",
            None,
            DEFAULT_HISTORY_DB,
            "SQLite file for the history; ':memory:' keeps it in memory only.",
        ],
        [
            "announce-max",
            None,
            _DEFAULTS.announce_max,
            "Announce arrivals and departures only in rooms with at most this"
            " many members (0: in every room).",
            _count,
        ],
        [
            "history-replay",
            None,
            _DEFAULTS.replay,
            "Past messages a user gets on joining a room (0: none).",
            _count,
        ],
        [
            "history-max",
            None,
            DEFAULT_MAX_COUNT,
            "Messages kept per room in the database (older ones are deleted).",
            _positive,
        ],
        [
            "history-max-age",
            None,
            DEFAULT_HISTORY_DAYS,
            "Days messages are kept (0: no limit).",
            _seconds,
        ],
        [
            "handshake-timeout",
            None,
            _DEFAULTS.handshake_timeout,
            "Seconds a client may take to finish the TLS handshake.",
            _positive_seconds,
        ],
        [
            "idle-timeout",
            None,
            _DEFAULTS.idle_timeout,
            "Seconds without a line before a client is disconnected (0: never).",
            _seconds,
        ],
        [
            "max-connections",
            None,
            _DEFAULTS.max_connections,
            "Connections held at once in total; more are closed at once (per"
            " process: each process of a --cluster counts its own).",
            _positive,
        ],
        [
            "max-per-ip",
            None,
            _DEFAULTS.max_per_address,
            "Connections held at once from one client: one IPv4 address, or one"
            " IPv6 /64 (see --ipv6-prefix); per process, as --max-connections.",
            _positive,
        ],
        [
            "ipv6-prefix",
            None,
            _DEFAULTS.ipv6_prefix,
            "IPv6 addresses that share this many leading bits are one client,"
            " for --max-per-ip and for a guest's /ban (128: each address).",
            _ipv6_prefix,
        ],
        [
            "ipv4-prefix",
            None,
            _DEFAULTS.ipv4_prefix,
            "The same for IPv4 (32: each address is one client).",
            _ipv4_prefix,
        ],
        [
            "connect-burst",
            None,
            _DEFAULTS.connect_burst,
            "New connections one client (see --max-per-ip) may open at once ...",
            _positive,
        ],
        [
            "connect-rate",
            None,
            _DEFAULTS.connect_rate,
            "... and per second after it; more are closed at once, before TLS.",
            _positive_seconds,
        ],
        [
            "flood-burst",
            None,
            _DEFAULTS.flood_burst,
            "Lines a client may send in a burst (/who and /help count as 2;"
            " /history, /rooms and /join as 5) ...",
            _positive,
        ],
        [
            "flood-rate",
            None,
            _DEFAULTS.flood_rate,
            "... and per second after it; more get an error and are dropped.",
            _positive_seconds,
        ],
        [
            "flood-disconnect",
            None,
            _DEFAULTS.flood_disconnect,
            "Lines dropped in a row before a flooding client is disconnected.",
            _positive,
        ],
        [
            "max-rooms",
            None,
            _DEFAULTS.max_rooms,
            "Rooms that may exist at once (0: no limit).",
            _count,
        ],
        [
            "max-rooms-per-ip",
            None,
            _DEFAULTS.max_rooms_per_address,
            "Rooms besides the default one that the clients from one IP"
            " address may be in at once (0: no limit).",
            _count,
        ],
        [
            "send-queue",
            None,
            _DEFAULTS.send_queue,
            "Most bytes held for one client (counted as they are queued)"
            " before it is disconnected.",
            _positive,
        ],
        [
            "shutdown-grace",
            None,
            _DEFAULTS.shutdown_grace,
            "Seconds a closing connection (at shutdown, /quit, a kick, a"
            " timeout) gets to flush and close its TLS cleanly before it is"
            " cut off.",
            _seconds,
        ],
        [
            "line-flush",
            None,
            _DEFAULTS.line_flush,
            "Seconds text without a newline may wait for more before it is"
            " taken as a whole line, for clients that send messages without"
            " one (0: wait for the newline).",
            _seconds,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["web-origin"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse as L{usage.Options} does; under twistd, a mistake is one line
        on standard error, as the C{securemsg} command does it, and twistd's
        exit status for a usage error, 1.

        twistd itself would print its whole usage (over 80 lines of
        options) before the line that says what is wrong.  Parsed without
        twistd (no C{parent}), L{usage.UsageError} is raised as usual.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            if self.parent is None:
                raise
            problem = str(error).rstrip(".")
            raise SystemExit(
                f"twistd securemsg: {problem}; run 'twistd securemsg --help' for usage"
            ) from None

    def parseArgs(self, *args: str) -> None:
        """Refuse positional arguments: everything is an option."""
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}")

    def opt_listen(self, description: str) -> None:
        """
        Listen on this endpoint instead of --port/--interface, e.g.
        tcp6:50000:interface=\\:\\:1 or unix:/run/securemsg.sock (TLS is added;
        repeat for several); haproxy:tcp:50000 behind a load balancer that
        sends the PROXY protocol, systemd:domain=INET:name=chat under socket
        activation (docs/operations.md).
        """
        self["listen"].append(description)

    def opt_web_origin(self, origin: str) -> None:
        """
        With --web: also let pages from this origin open the chat's WebSocket,
        e.g. https://chat.example.com (repeat for several; the page's own
        origin is always allowed).
        """
        origin = origin.strip().rstrip("/")
        scheme, _, host = origin.partition("://")
        if scheme.lower() not in ("https", "http") or not host or "/" in host:
            raise usage.UsageError(
                f"--web-origin {origin!r}: give an origin such as"
                " https://chat.example.com"
            )
        self["web-origin"].append(origin)

    def postOptions(self) -> None:
        problem = wire.room_problem(self["default-room"])
        if problem is not None:
            raise usage.UsageError(f"--default-room: {problem}")
        if self["client-auth"] not in ("required", "optional"):
            raise usage.UsageError(
                "--client-auth must be required or optional,"
                f" not {self['client-auth']!r}"
            )
        if self["crl"] is not None and self["client-ca"] is None:
            raise usage.UsageError("--crl needs --client-ca")
        if self["web-origin"] and self["web"] is None:
            raise usage.UsageError("--web-origin needs --web")
        # None (no default shown by --help) means none given.
        if self["interface"] is None:
            self["interface"] = ""
        operators = [
            name.strip()
            for name in (self["operators"] or "").split(",")
            if name.strip()
        ]
        for name in operators:
            problem = wire.name_problem(name)
            if problem is not None:
                raise usage.UsageError(f"--operators: {name!r}: {problem}")
        if operators and self["client-ca"] is None:
            raise usage.UsageError(
                "--operators needs --client-ca:"
                " operators are known by their certificates"
            )
        self["operators"] = operators
        if self["store-private"] and self["client-ca"] is None:
            raise usage.UsageError(
                "--store-private needs --client-ca: private history is kept"
                " only for certificate holders, whose names nobody can take"
            )
        if self["tls-min"] not in tls.TLS_VERSIONS:
            raise usage.UsageError(
                f"--tls-min must be one of {', '.join(tls.TLS_VERSIONS)}, "
                f"not {self['tls-min']!r}"
            )
        self["cluster-config"] = None
        if self["cluster"] is not None:
            try:
                self["cluster-config"] = parse_cluster_url(
                    self["cluster"],
                    name=self["cluster-name"],
                    ca_path=self["cluster-ca"],
                    password_file=self["cluster-password-file"],
                    claim_ttl=self["cluster-claim-ttl"],
                )
            except ClusterError as error:
                raise usage.UsageError(str(error)) from None
        if self["check"]:
            # Done while parsing: twistd would refuse to go on to makeService
            # while a server runs here (its pid file), and a check should
            # work next to a running server.
            report = run_check(
                self["cert"],
                self["key"],
                passphrases=tls.PassphraseSource.from_process(
                    self["key-passphrase-file"]
                ),
                client_ca=self["client-ca"],
                crl=self["crl"],
            )
            sys.stdout.write(report.text())
            raise SystemExit(report.exit_code)

    def tls_settings(self) -> tls.TLSSettings:
        """The L{tls.TLSSettings} these options ask for."""
        return tls.TLSSettings(
            cert_path=self["cert"],
            key_path=self["key"],
            passphrases=tls.PassphraseSource.from_process(self["key-passphrase-file"]),
            minimum=tls.TLS_VERSIONS[self["tls-min"]],
            client_ca_path=self["client-ca"],
            client_auth=self["client-auth"],
            crl_path=self["crl"],
        )

    def limits(self) -> Limits:
        """The L{Limits} these options ask for."""
        return Limits(
            handshake_timeout=self["handshake-timeout"],
            idle_timeout=self["idle-timeout"],
            max_connections=self["max-connections"],
            max_per_address=self["max-per-ip"],
            ipv6_prefix=self["ipv6-prefix"],
            ipv4_prefix=self["ipv4-prefix"],
            connect_burst=self["connect-burst"],
            connect_rate=self["connect-rate"],
            flood_burst=self["flood-burst"],
            flood_rate=self["flood-rate"],
            flood_disconnect=self["flood-disconnect"],
            send_queue=self["send-queue"],
            shutdown_grace=self["shutdown-grace"],
            line_flush=self["line-flush"],
            max_rooms=self["max-rooms"],
            max_rooms_per_address=self["max-rooms-per-ip"],
            max_line_length=self["max-line-length"],
            replay=self["history-replay"],
            announce_max=self["announce-max"],
        )

    def endpoint_descriptions(self) -> list[str]:
        """The endpoints to listen on, as endpoint description strings."""
        if self["listen"]:
            return list(self["listen"])
        interface = self["interface"]
        kind = "tcp6" if ":" in interface else "tcp"
        description = f"{kind}:{self['port']}"
        if interface:
            description += f":interface={quoteStringArgument(interface)}"
        return [description]


# usage.Options shows a method's docstring as it is, indentation included
# (Python 3.11 keeps it): flow it into one paragraph for --help.
Options.opt_listen.__doc__ = " ".join((Options.opt_listen.__doc__ or "").split())


def open_history(reactor: IReactorTime, options: Options) -> HistoryStore:
    """
    The history the options ask for: in memory, or in an SQLite file that is
    checked now.

    @raise HistoryError: if the database cannot be used.
    """
    max_age = options["history-max-age"] * 86400 or None
    if options["history-db"] == ":memory:":
        return MemoryHistory(
            reactor,
            max(options["history-replay"], 1),
            max_age=max_age,
            store_private=options["store-private"],
        )
    return SqliteHistory.open(
        options["history-db"],
        reactor,
        options["history-replay"],
        max_count=options["history-max"],
        max_age=max_age,
        store_private=options["store-private"],
        preload=[options["default-room"]],
    )


def make_service(reactor: IReactorTime, options: Options) -> OrderedMultiService:
    """
    Build the securemsg service from parsed options.

    @raise tls.TLSConfigError: if the certificate, key or an endpoint cannot
        be used.
    @raise HistoryError: if the history database cannot be used.
    @raise RecordsError: if the state file cannot be used.
    """
    settings = options.tls_settings()
    loaded = tls.load_tls(settings)
    creator = tls.ServerTLS(loaded.context)
    reloader = CertificateReloader(settings, creator, loaded)
    limits = options.limits()
    state = ServerRecords.load(options["state"])
    state.check_writable()
    history = open_history(reactor, options)
    link = None
    if options["cluster-config"] is not None:
        link = make_link(reactor, options["cluster-config"])
        # Rooms' history in Redis streams; private messages stay here.
        history = StreamHistory(
            reactor,
            link,
            history,
            per_room=options["history-replay"],
            max_count=options["history-max"],
            max_age=options["history-max-age"] * 86400 or None,
        )
    chat = ChatHub(
        reactor,
        default_room=options["default-room"],
        history=history,
        log_messages=options["log-messages"],
        state=state,
        operators=options["operators"],
        certificates=settings.client_ca_path is not None,
        reload=lambda: reloader.reload("/reload by an operator"),
        limits=limits,
    )
    node = ClusterNode(chat, link, reactor) if link is not None else None
    factory = ChatServerFactory(reactor, chat, greeting=options["greeting"])
    reloader.recheck = factory.recheck_certificates
    # Several processes on one port: the kernel spreads the connections.
    listening: Any = ReusePortReactor(reactor) if options["reuse-port"] else reactor
    endpoints = [
        (description, tls_server_endpoint(listening, description, creator, limits))
        for description in options.endpoint_descriptions()
    ]
    # Stopped in reverse: stop listening, then close the clients'
    # connections, then the history (see OrderedMultiService); with a
    # cluster, its node last, so the users' departures reach the others.
    top = OrderedMultiService()
    services: list[tuple[str, IService]] = [
        ("open-files", OpenFileLimitService(limits.max_connections)),
        ("history", HistoryService(history)),
        ("shutdown", ShutdownService(factory)),
        ("certificate", CertificateReportService(loaded.credentials)),
        ("reload", ReloadService(reloader, reactor, watch=options["watch-certs"])),
        ("expiry", ExpiryWarningService(reloader, reactor)),
        ("session-keys", SessionKeyService(reloader, reactor)),
        ("chat", ListenerService(factory, endpoints)),
    ]
    if node is not None:
        services.insert(0, ("cluster", ClusterService(node)))
    if options["web"] is not None:
        # The same TLS (so a reload covers it too) and the same chat.
        site = web.make_site(factory, options["web-origin"])
        try:
            endpoint = tls_server_endpoint(reactor, options["web"], creator, limits)
        except tls.TLSConfigError as error:
            problem = str(error).replace("--listen", "--web", 1)
            raise tls.TLSConfigError(problem) from None
        web_listener = ListenerService(
            site,
            [(options["web"], endpoint)],
            announce="securemsg web chat at https://{address}/",
        )
        services.append(("web", web_listener))
    if options["metrics"] is not None:
        # Imported only when asked for: prometheus_client is not needed
        # otherwise.
        from securemsg.server.metrics import make_registry, metrics_listener

        registry = make_registry(
            factory, history=history, reloader=reloader, cluster=node
        )
        services.append(
            ("metrics", metrics_listener(reactor, options["metrics"], registry))  # type: ignore[arg-type]
        )
    for name, service in services:
        service.setName(name)
        service.setServiceParent(top)
    return top


def makeService(options: Options) -> OrderedMultiService:
    """
    twistd's entry point: L{make_service} with the global reactor, listening
    at once, and any problem as one line on standard error.

    Listening here rather than when twistd starts the service reports a port
    in use like a missing certificate: before twistd starts logging (which
    takes standard error over) and, as a daemon, before it forks and writes
    its pid file, so the command that was run says why and exits 1.  (When
    twistd starts the service, its log has standard error, and a daemon's
    parent can only say "An error has occurred" and point at the log.)
    twistd calls this before it drops privileges, so ports below 1024 still
    work.
    """
    from twisted.internet import reactor

    try:
        if options["cluster-config"] is not None:
            # Redis out of reach: one line and exit 1, not a lone server.
            probe(options["cluster-config"])
        top = make_service(reactor, options)
        for service in top:
            # The chat's endpoints, and the web page's and metrics' if any.
            if isinstance(service, ListenerService):
                service.listen()
    except (
        tls.TLSConfigError,
        HistoryError,
        RecordsError,
        ListenError,
        ClusterError,
    ) as error:
        raise SystemExit(f"securemsg: {error}") from None
    signals = RepeatedStopSignals(reactor)
    signals.setName("signals")
    signals.setServiceParent(top)
    return top
