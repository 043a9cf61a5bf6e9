# -*- test-case-name: tests.test_cluster -*-
"""
One chat across several securemsg processes and machines (C{--cluster}).

The chat state (L{securemsg.room.Chat}) stays free of I/O: it tells a
L{node.ClusterNode} what happened to its own users, and the node tells the
other nodes through an L{interface.IClusterLink}: L{redis.RedisLink} over
Redis, or L{local.MemoryLink} between chats of one process (tests).
Without C{--cluster} there is no node at all and nothing changes.
"""
