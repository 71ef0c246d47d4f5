"""Secrets never reach a log: every token, client secret and password the product
holds is registered here, and a filter on the log handlers blanks it out of every
record, whoever logs it (a library's debug line, an exception's text)."""

from __future__ import annotations

import logging

__all__ = ["RedactSecrets", "keep_secret"]

_SECRETS: set[str] = set()


def keep_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line (see ``RedactSecrets``)."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


class RedactSecrets(logging.Filter):
    """Blanks every known token and client secret out of a log record, whoever logs
    it: a library's debug line or an exception's text must not leak one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS:
            return True
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned, exc_text = text, record.exc_text
        for secret in _SECRETS:
            cleaned = cleaned.replace(secret, "<redacted>")
            if exc_text:
                exc_text = exc_text.replace(secret, "<redacted>")
        if cleaned != text:
            record.msg, record.args = cleaned, None
        record.exc_text = exc_text
        return True
