# -*- test-case-name: tests.test_cli -*-
"""
Run the C{securemsg} command line as C{python -m securemsg}.
"""

from securemsg.admin.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
