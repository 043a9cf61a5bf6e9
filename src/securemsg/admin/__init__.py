"""
The C{securemsg} command; may import anything; nothing imports admin.
"""
