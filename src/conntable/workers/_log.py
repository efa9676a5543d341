"""The workers' logger, and a default handler for programs that configured no logging."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

logger = logging.getLogger("conntable.workers")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def default_handler() -> Iterator[None]:
    """While inside: if nothing handles this logger, INFO and above go to stderr (what ``run`` prints).

    A program that configured logging (a handler on the root logger or on
    ``conntable.workers``) keeps its own configuration.
    """
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
