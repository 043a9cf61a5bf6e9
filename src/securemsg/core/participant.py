# -*- test-case-name: tests.test_hub -*-
"""
The interfaces that join the wire protocol to the chat logic.
"""

from zope.interface import Attribute, Interface

from securemsg.protocol.wire import Event


class IChatParticipant(Interface):
    """
    Someone in a chat room: the room calls this to hand them events.

    The server's protocol provides it for each connection; tests provide it
    with plain objects that record what they were given.
    """

    name = Attribute("The participant's current name, set by the room.")

    def deliver(event: Event) -> None:
        """
        Give the participant one event.  This must not block and must not
        call back into the room.
        """

    def deliver_all(events: tuple[Event, ...]) -> None:
        """
        Give the participant several events, in order: the same as calling
        L{deliver} with each, which is all a participant needs to do.  The
        room uses it to hand a member every line one speaker said in one
        read, at the cost of one call instead of one per line.
        """

    def disconnect(error: str, farewell: str) -> None:
        """
        Tell the participant C{error} and close their connection; when it is
        gone, others hear C{farewell}.  The room may already have let them
        go.
        """
