"""
TLS policy, certificate files and identities; imports only L{securemsg.protocol}.
"""
