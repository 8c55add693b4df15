"""`python -m reflex …`: see reflex/cli.py for the commands.

Output piped into a reader that stops early (`python -m reflex status | head`) ends the command quietly, as a
Unix tool ends on SIGPIPE, never with a BrokenPipeError traceback. The handling is the one the Python
documentation gives ("Note on SIGPIPE", https://docs.python.org/3/library/signal.html#note-on-sigpipe): flush
inside the try, then point stdout at devnull so the interpreter's own flush at exit does not raise again. The
exit code is 141 (128 + SIGPIPE), what a shell reports for a Unix tool ended that way; SIGPIPE's disposition
is left alone, as that note asks.
"""

import os
import signal
import sys

from reflex.cli import main
from shared.core.log import quiet_sdk_loggers


def run() -> int:
    quiet_sdk_loggers()  # the CLI's output is its answer, never the Azure SDK's HTTP lines
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


sys.exit(run())
