# -*- test-case-name: tests.test_records -*-
"""
What the server remembers across restarts besides the history: bans, the
message of the day, and the names that belong to certificate holders.

It is a small JSON file, rewritten whole (atomically) on each change.
Changes are rare (an operator's command, or a certificate holder seen for
the first time), so the write is done at once.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from twisted.logger import Logger

from securemsg.core.limits import covering_key
from securemsg.protocol import wire

VERSION: Final = 1


class RecordsError(Exception):
    """The state file cannot be used; the message is one line."""


@dataclass
class BanRecord:
    """One ban: who it was for, who made it, and when."""

    name: str
    by: str
    time: float

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "by": self.by, "time": self.time}

    @classmethod
    def from_json(cls, data: Any) -> BanRecord:
        """
        The ban L{as_json} made C{data} of (read from the state file, from
        Redis, or from another node); L{ValueError} if it is not one.
        """
        try:
            name, by, time = data["name"], data["by"], data["time"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"a ban lacks {error}") from None
        if not (
            isinstance(name, str)
            and isinstance(by, str)
            and isinstance(time, int | float)
            and not isinstance(time, bool)
        ):
            raise ValueError("a ban is not a name, an operator and a time")
        return cls(name, by, float(time))


@dataclass
class ServerRecords:
    """
    Bans by certificate fingerprint and by IP address (or the network
    that stands for one client, such as an IPv6 /64: see
    L{securemsg.core.limits.client_key}), the message of the day, and the names
    of certificate holders seen (reserved for them).

    @ivar path: where it is saved; L{None} keeps it in memory only.
    """

    path: str | None = None
    fingerprints: dict[str, BanRecord] = field(default_factory=dict)
    addresses: dict[str, BanRecord] = field(default_factory=dict)
    motd: str = ""
    holders: dict[str, str] = field(default_factory=dict)

    log = Logger()

    @classmethod
    def load(cls, path: str | None) -> ServerRecords:
        """
        Read the state file, or start afresh if it does not exist yet.

        @raise RecordsError: if it exists but cannot be read or understood.
        """
        state = cls(path)
        if path is None or not os.path.exists(path):
            return state
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError("not a securemsg state file of a known version")
            for fingerprint, ban in (
                data.get("bans", {}).get("fingerprints", {}).items()
            ):
                state.fingerprints[fingerprint] = BanRecord.from_json(ban)
            for address, ban in data.get("bans", {}).get("addresses", {}).items():
                state.addresses[address] = BanRecord.from_json(ban)
            motd = data.get("motd", "")
            holders = data.get("holders", [])
            # Wrong types would load "fine" and fail later: a string of
            # holders reserves its letters, a ban's number for a name breaks
            # /unban.
            if not isinstance(motd, str) or not isinstance(holders, list):
                raise ValueError("motd or holders of the wrong type")
            state.motd = motd
            for name in holders:
                state.holders[wire.name_key(name)] = name
        except OSError as error:
            raise RecordsError(
                f"cannot read state file {path}: {error.strerror}"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RecordsError(
                f"state file {path} is damaged ({error}); move it away to start afresh"
            ) from None
        return state

    def check_writable(self) -> None:
        """
        @raise RecordsError: if the state could not be saved.
        """
        if self.path is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.access(directory, os.W_OK):
            raise RecordsError(
                f"cannot write state file {self.path}: its folder is not writable"
            )

    def save(self) -> None:
        """Write the state file atomically (a new file, then a rename)."""
        if self.path is None:
            return
        data = {
            "version": VERSION,
            "bans": {
                "fingerprints": {k: v.as_json() for k, v in self.fingerprints.items()},
                "addresses": {k: v.as_json() for k, v in self.addresses.items()},
            },
            "motd": self.motd,
            "holders": sorted(self.holders.values()),
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".state-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(data, file, indent=1, sort_keys=True)
                file.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise

    def keep(self) -> bool:
        """
        L{save}, logging a failure in one line instead of raising it: the
        chat goes on either way.

        @return: whether the state was saved.
        """
        try:
            self.save()
        except OSError as error:
            self.log.error(
                "could not save the server state to {path}: {error}",
                path=self.path,
                error=error.strerror,
            )
            return False
        return True

    # Bans

    def banned(self, fingerprint: str | None, address: str | None) -> BanRecord | None:
        """
        The ban that keeps this certificate or IP address out, if any: a
        ban of the address, or of a network it is in.
        """
        if fingerprint is not None and fingerprint in self.fingerprints:
            return self.fingerprints[fingerprint]
        if address is not None:
            banned = covering_key(self.addresses, address)
            if banned is not None:
                return self.addresses[banned]
        return None

    def unban(self, target: str) -> list[str]:
        """
        Lift the bans on a name, a fingerprint, or an address (and so the
        ban of a network it is in).

        @return: what was unbanned.
        """
        lifted: list[str] = []
        key = wire.name_key(target)
        for bans in (self.fingerprints, self.addresses):
            for banned, ban in list(bans.items()):
                if (
                    banned == target
                    or wire.name_key(ban.name) == key
                    or (bans is self.addresses and covering_key([banned], target))
                ):
                    del bans[banned]
                    lifted.append(banned)
        return lifted

    # Names of certificate holders

    def add_holder(self, name: str) -> bool:
        """Remember a certificate holder's name; say whether it was new."""
        key = wire.name_key(name)
        if key in self.holders:
            return False
        self.holders[key] = name
        return True

    def is_holder(self, name: str) -> bool:
        """Whether C{name} belongs to a certificate holder."""
        return wire.name_key(name) in self.holders
