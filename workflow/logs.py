"""Logging for rule scripts: everything, tracebacks included, goes to the rule's log file."""

from __future__ import annotations

import logging
import os
import sys


def log_to_file(path: str | os.PathLike[str]) -> logging.Logger:
    """Send stderr and the logging module to ``path`` (line-buffered) and return the workflow logger."""
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    # matplotlib's PDF backend subsets fonts with fontTools, which logs every table it prunes
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    return logging.getLogger("workflow")
