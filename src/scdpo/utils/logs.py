"""Dropping a library's known-harmless log records, by logger and message, for one call only."""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def drop_records(logger_name: str, *prefixes: str):
    """Within the block, records of ``logger_name`` whose message starts with one of ``prefixes`` are
    dropped; every other record passes. A filter on that logger alone: nothing global changes."""
    logger = logging.getLogger(logger_name)

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefixes)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
