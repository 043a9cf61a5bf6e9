# -*- test-case-name: tests.test_room -*-
"""
The chat itself: who is here, under which names, and who gets what.

No I/O happens here.  The room talks to participants only through
L{IChatParticipant.deliver}, so it can be tested with plain objects.
"""

from __future__ import annotations

import itertools

from twisted.logger import Logger

from securemsg import wire
from securemsg.interfaces import IChatParticipant


class ChatRoom:
    """
    One room that everyone connected is in.

    @ivar log_messages: if true, the text of chat lines is logged; it is off
        by default because this is a private messenger.
    """

    log = Logger()

    def __init__(self, guest_prefix: str = "guest-", log_messages: bool = False):
        self._guest_prefix = guest_prefix
        self._guest_numbers = itertools.count(1)
        # Everyone here in order of arrival (a dict as an ordered set), and
        # the same people by name key.
        self._members: dict[IChatParticipant, None] = {}
        self._by_name: dict[str, IChatParticipant] = {}
        self.log_messages = log_messages

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, participant: object) -> bool:
        name = getattr(participant, "name", None)
        return (
            isinstance(name, str)
            and self._by_name.get(wire.name_key(name)) is participant
        )

    def names(self) -> list[str]:
        """The names of everyone here, in the order they arrived."""
        return [member.name for member in self._members]

    def find(self, name: str) -> IChatParticipant | None:
        """The participant called C{name} (ignoring case), if any."""
        return self._by_name.get(wire.name_key(name))

    def _broadcast(self, event: wire.Event, exclude: object = None) -> None:
        for member in list(self._members):
            if member is not exclude:
                member.deliver(event)

    def _next_guest_name(self) -> str:
        while True:
            name = f"{self._guest_prefix}{next(self._guest_numbers)}"
            if wire.name_key(name) not in self._by_name:
                return name

    def join(self, participant: IChatParticipant) -> str:
        """
        Let a participant in under a new unique guest name, and tell the
        others.

        @return: the name given to the participant.
        """
        name = self._next_guest_name()
        participant.name = name
        self._broadcast(wire.joined(name))
        self._members[participant] = None
        self._by_name[wire.name_key(name)] = participant
        return name

    def leave(
        self, participant: IChatParticipant, reason: str = "", *, announce: bool = True
    ) -> None:
        """
        Let a participant go and (unless C{announce} is false) tell the
        others.  Leaving twice, or leaving without having joined, does
        nothing.
        """
        if participant not in self:
            return
        del self._members[participant]
        del self._by_name[wire.name_key(participant.name)]
        if announce:
            self._broadcast(wire.left(participant.name, wire.sanitize(reason)))

    def say(self, participant: IChatParticipant, text: str) -> None:
        """Relay a chat line to everyone but its sender."""
        text = wire.sanitize(text)
        if self.log_messages:
            self.log.info("[{name}] {text}", name=participant.name, text=text)
        self._broadcast(wire.Message(participant.name, text), exclude=participant)

    def act(self, participant: IChatParticipant, text: str) -> None:
        """Relay an action (/me) to everyone but its sender."""
        text = wire.sanitize(text)
        if self.log_messages:
            self.log.info("* {name} {text}", name=participant.name, text=text)
        self._broadcast(wire.Action(participant.name, text), exclude=participant)

    def whisper(
        self, participant: IChatParticipant, recipient_name: str, text: str
    ) -> None:
        """
        Send a private line to one participant; the sender gets the same line
        back as confirmation, or an error if there is nobody of that name.
        """
        recipient = self.find(recipient_name)
        if recipient is None:
            shown = wire.sanitize(recipient_name)[: wire.MAX_NAME_LENGTH]
            participant.deliver(wire.Error(f"nobody here is called {shown}"))
            return
        event = wire.PrivateMessage(
            participant.name, recipient.name, wire.sanitize(text)
        )
        if self.log_messages:
            self.log.info(
                "[{sender} -> {recipient}] {text}",
                sender=event.sender,
                recipient=event.recipient,
                text=event.text,
            )
        recipient.deliver(event)
        if recipient is not participant:
            participant.deliver(event)

    def rename(self, participant: IChatParticipant, new_name: str) -> None:
        """
        Change a participant's name if the new one is valid and free, telling
        everyone; otherwise tell the participant what is wrong.
        """
        problem = wire.name_problem(new_name)
        if problem is not None:
            participant.deliver(wire.Error(problem))
            return
        old_name = participant.name
        holder = self.find(new_name)
        if holder is not None and holder is not participant:
            participant.deliver(wire.Error(f"the name {holder.name} is taken"))
            return
        if new_name == old_name:
            participant.deliver(wire.you_are(new_name))
            return
        del self._by_name[wire.name_key(old_name)]
        participant.name = new_name
        self._by_name[wire.name_key(new_name)] = participant
        participant.deliver(wire.you_are(new_name))
        self._broadcast(wire.renamed(old_name, new_name), exclude=participant)
        self.log.info("{old} is now known as {new}", old=old_name, new=new_name)

    def handle(self, participant: IChatParticipant, command: wire.Command) -> None:
        """
        Carry out one command from a participant.  L{wire.Quit} is the
        connection's business and is not handled here.
        """
        match command:
            case wire.Say(text):
                self.say(participant, text)
            case wire.Me(text):
                self.act(participant, text)
            case wire.Nick(name):
                self.rename(participant, name)
            case wire.Private(recipient, text):
                self.whisper(participant, recipient, text)
            case wire.Who():
                participant.deliver(wire.who_list(self.names()))
            case wire.WhoAmI():
                participant.deliver(wire.you_are_called(participant.name))
            case wire.Help():
                for line in wire.help_lines():
                    participant.deliver(line)
            case wire.Invalid(problem):
                participant.deliver(wire.Error(problem))
