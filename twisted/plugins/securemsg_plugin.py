"""
twistd plugin for securemsg: C{twistd -n securemsg --cert certificate.pem}.

This module only declares: the service maker names its module as a string,
so nothing of securemsg is imported until the command runs, and an import
problem in securemsg can never hide other twistd plugins.
"""

from twisted.application.service import ServiceMaker

securemsg = ServiceMaker(
    "securemsg",
    "securemsg.tap",
    "A TLS-encrypted multi-user chat server.",
    "securemsg",
)
