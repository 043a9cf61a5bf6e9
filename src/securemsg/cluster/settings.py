# -*- test-case-name: tests.test_cluster -*-
"""
The cluster's bans and message of the day, kept by the link as well as in
each node's state file.  No I/O: the link does it.

Bans and the message of the day are kept by the link (in Redis), so that
a node that was stopped or cut off when they changed learns them: it reads
them whenever its link comes up (L{SharedSettings.share}) and merges them
into its own state file.  A ban is kept under the banned fingerprint or
address as C{{"kind", "name", "by", "time"}}; an C{/unban} replaces it with
C{{"lifted": true, "time"}}, so that a node whose state file still has the
ban drops it instead of bringing it back.  Of a ban and its lifting, the
later one wins; a ban this node has and the cluster has never heard of
(made before the node joined, or while it was cut off) is given to the
cluster.  What an operator changes while the link is down is written when
it comes up, before reading.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from securemsg.cluster.interface import ClusterMessage, IClusterLink
from securemsg.core.records import BanRecord, ServerRecords
from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.core.hub import ChatHub


class SharedSettings:
    """
    The bans and the motd of one node's C{chat}, shared with the cluster
    through C{link}.
    """

    log = Logger()

    def __init__(self, chat: ChatHub, link: IClusterLink, clock: IReactorTime) -> None:
        self.chat = chat
        self.link = link
        self.clock = clock
        # Bans (by value) and the motd changed here while the link could
        # not keep them: written when it comes up.
        self._unsaved_bans: dict[str, dict[str, Any]] = {}
        self._unsaved_motd: str | None = None
        # While the cluster's bans are being read (see share): the bans
        # lifted here meanwhile.  The answer may predate a lift, which must
        # not bring the ban back (a ban made since is heard on the bus).
        self._lifted_while_reading: set[str] | None = None

    # What an operator changes here

    def banned(self, kind: str, value: str, entry: BanRecord) -> None:
        """
        A ban was made here: every node keeps it, and so does the link, for
        the nodes that hear of it later.
        """
        self._store_ban(value, {"kind": kind, **entry.as_json()})
        self.link.publish(
            {"t": "banned", "kind": kind, "value": value, **entry.as_json()}
        )

    def unbanned(self, target: str, lifted: list[str]) -> None:
        """Bans were lifted here: on every node, and in the link."""
        now = self.clock.seconds()
        for value in lifted:
            self._store_ban(value, {"lifted": True, "time": now})
        self._note_lifted(lifted)
        self.link.publish({"t": "unban", "target": target})

    def motd_set(self, text: str) -> None:
        """An operator here set the message of the day: for every node."""
        if not self.link.store_motd(text):
            self._unsaved_motd = text
        self.link.publish({"t": "motd", "text": text})

    def _store_ban(self, value: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True, separators=(",", ":"))
        if not self.link.store_ban(value, data):
            self._unsaved_bans[value] = record

    # What the others tell this node (their C{banned}, C{unban} and
    # C{motd} messages)

    def heard_ban(self, message: ClusterMessage) -> None:
        """Another node made a ban: keep it."""
        entry = BanRecord.from_json(message)
        kept = (
            self.chat.state.fingerprints
            if message["kind"] == "fingerprint"
            else self.chat.state.addresses
        )
        kept[str(message["value"])] = entry
        self.chat.state.keep()

    def heard_unban(self, message: ClusterMessage) -> None:
        """Another node lifted bans: lift them here too."""
        lifted = self.chat.state.unban(str(message["target"]))
        if lifted:
            self._note_lifted(lifted)
            self.chat.state.keep()

    def _note_lifted(self, lifted: list[str]) -> None:
        if self._lifted_while_reading is not None:
            self._lifted_while_reading.update(lifted)

    def heard_motd(self, message: ClusterMessage) -> None:
        """
        Another node set the message of the day (or gave it to the cluster
        C{again}: not told again to users who have it).
        """
        text = str(message["text"])
        if message.get("again") and text == self.chat.state.motd:
            return
        self._take_motd(text)
        self.chat.state.keep()

    def _take_motd(self, text: str) -> None:
        """Another node's message of the day: take it, and tell local users."""
        self.chat.state.motd = text
        event = wire.Notice(f"motd: {text or '(none)'}")
        for participant in self.chat.local_participants():
            participant.deliver(event)

    # When the link comes up

    def share(self) -> None:
        """
        Write what changed here while the link was down, then read the
        cluster's bans and motd and merge them with this node's.
        """
        # Told on the bus again too: the nodes that are up now did not
        # hear of them either.
        unsaved, self._unsaved_bans = self._unsaved_bans, {}
        for value, record in unsaved.items():
            if record.get("lifted"):
                self._store_ban(value, record)
                self.link.publish({"t": "unban", "target": value})
            else:
                self.banned(record["kind"], value, BanRecord.from_json(record))
        motd, self._unsaved_motd = self._unsaved_motd, None
        if motd is not None:
            self.motd_set(motd)

        def read_motd(bans: dict[str, str]) -> Deferred[None]:
            return self.link.read_motd().addCallback(
                lambda motd: self._merge(bans, motd)
            )

        def failed(reason: Failure) -> None:
            self._lifted_while_reading = None
            self.log.warn(
                "the cluster's bans and motd could not be read (next time the"
                " link comes up): {error}",
                error=reason.getErrorMessage(),
            )

        self._lifted_while_reading = set()
        self.link.read_bans().addCallback(read_motd).addErrback(failed)

    def _merge(self, bans: dict[str, str], motd: str | None) -> None:
        """
        Take the cluster's bans and motd into this node's state (see the
        module's docstring for the rule), disconnecting the local users a
        ban learned now keeps out; give it the bans it never heard of.
        """
        state = self.chat.state
        lifted_meanwhile, self._lifted_while_reading = self._lifted_while_reading, None
        shared: dict[str, dict[str, Any]] = {}
        for value, data in bans.items():
            try:
                record = json.loads(data)
                if record.get("lifted"):
                    record["time"] = float(record["time"])
                else:
                    record["time"] = BanRecord.from_json(record).time
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                self.log.warn(
                    "the cluster's ban of {value} was not understood: {error!r}",
                    value=value,
                    error=error,
                )
                continue
            shared[value] = record
        learned = ServerRecords()
        changed = False
        lifted = given = 0
        for value, record in shared.items():
            local = state.fingerprints.get(value) or state.addresses.get(value)
            if record.get("lifted"):
                # Lifted after (or as) it was made: gone here too.
                if local is not None and local.time <= record["time"]:
                    state.fingerprints.pop(value, None)
                    state.addresses.pop(value, None)
                    changed = True
                    lifted += 1
                continue
            if local is not None and local.time >= record["time"]:
                continue
            if lifted_meanwhile and value in lifted_meanwhile:
                # Lifted here since Redis answered: not back.
                continue
            entry = BanRecord.from_json(record)
            fingerprint = record.get("kind") == "fingerprint"
            for kept in (
                (state.fingerprints, learned.fingerprints)
                if fingerprint
                else (state.addresses, learned.addresses)
            ):
                kept[value] = entry
            changed = True
        for kind, kept in (
            ("fingerprint", state.fingerprints),
            ("address", state.addresses),
        ):
            for value, entry in list(kept.items()):
                if value in shared and shared[value]["time"] >= entry.time:
                    continue
                # Never heard of by the cluster (or newer than what it
                # has): every node gets it.
                self.banned(kind, value, entry)
                given += 1
        motd_news = ""
        if motd is None:
            if state.motd:
                if self.link.store_motd(state.motd):
                    # Not an operator's news: users who have it already
                    # (every node's, after Redis lost its data) are not
                    # told it again.
                    self.link.publish({"t": "motd", "text": state.motd, "again": True})
                motd_news = "; the motd given to the cluster"
        elif motd != state.motd:
            self._take_motd(motd)
            changed = True
            motd_news = "; the motd taken from the cluster"
        if changed:
            state.keep()
        count = len(learned.fingerprints) + len(learned.addresses)
        if count or lifted or given or motd_news:
            self.log.info(
                "bans merged with the cluster's: {count} learned, {lifted}"
                " lifted, {given} given to the cluster{motd}",
                count=count,
                lifted=lifted,
                given=given,
                motd=motd_news,
            )
        if learned.fingerprints or learned.addresses:
            self.chat.turn_away(learned)
