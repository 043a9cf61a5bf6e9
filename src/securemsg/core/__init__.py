"""
The chat rules: no I/O but the history store; imports only L{securemsg.protocol}.
"""
