"""Library loggers are capped: at DEBUG, botocore writes the canonical request, the string to
sign and the session token, urllib3 and aiohttp write request lines and headers. Whatever the
gateway's own `log_level`, these libraries may only log warnings and errors."""

from __future__ import annotations

import logging

QUIET_LIBRARIES = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "aiohttp",
    "httpx",
    "httpcore",
    "hpack",
    "redis",
    "asyncio",
)


def cap_library_loggers(level: int = logging.WARNING) -> None:
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level or logger.level == logging.NOTSET:
            logger.setLevel(level)
