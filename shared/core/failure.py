"""The line of a failed program's output that says what went wrong, for reasons an operator reads.

Why: a failed job's reason used to be the last few lines of its log joined together, and whatever showed that
reason cut it short, so `status` and `explain` showed a log line *before* the error (an MLflow warning, a
traceback frame) and never the error itself. Programs say what went wrong in a few well-known forms; this
picks that line, so the reason starts with it:

* argparse's `parser.error` and Reflex's training script (jobs/train/train.py documents its exit code 2 and
  its one stderr line) print `<prog>: error: <message>` (CPython Lib/argparse.py, `ArgumentParser.error`);
* an uncaught Python exception ends its traceback with `<ExceptionType>: <message>` (or the bare type name)
  after the indented frames (CPython Lib/traceback.py, `TracebackException.format_exception_only`);
* otherwise the last line that says "error" or "failed", else the last line.

Pure: no I/O. Used by the local job runner (local/jobrunner.py) and usable for any platform's failure text.
"""

from __future__ import annotations

import re

__all__ = ["error_line"]

_PROG_ERROR = re.compile(r"^[\w.\-/]+: error: \S")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure|Failed)"
                        r"(?::\s.*)?$")
_SAYS_ERROR = re.compile(r"\b(?:error|failed|fatal)\b", re.IGNORECASE)
_LIMIT = 1000


def _cut(line: str) -> str:
    return line if len(line) <= _LIMIT else line[:_LIMIT - 1] + "…"


def error_line(text: str) -> str:
    """The line of `text` (a program's output) that states its error; "" for empty text."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    for pattern in (_PROG_ERROR, _EXCEPTION):
        found = [line for line in lines if not line[0].isspace() and pattern.match(line)]
        if found:
            return _cut(found[-1])
    says = [line for line in lines if _SAYS_ERROR.search(line)]
    return _cut((says or lines)[-1].strip())
