"""Store URLs without the heavy imports: the default URL and password masking.

Kept apart from ``hpsearch.storage`` (which imports Optuna and SQLAlchemy) so that the CLI can
mask a URL or pick the default store without loading them.
"""

from __future__ import annotations

import os
import re

DEFAULT_STORAGE = "sqlite:///hpsearch.db"


def default_storage_url() -> str:
    """``HPSEARCH_STORAGE`` if set, else ``sqlite:///hpsearch.db`` in the working directory."""
    return os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


# scheme://user:password@ : the password is what lies between the first ':' after '//' and the
# last '@' of the authority (a password may hold '@' or ':'), before any '/', '?' or '#'.
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^/?#\s]*@")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``. Never raises: it works on the text, so
    a bad port, a malformed IPv6 host or no URL at all is masked (or returned) as it is."""
    if not isinstance(url, str):
        return "<not a URL>"
    return mask_secrets(url)


_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&#\s]*", re.IGNORECASE)


def mask_secrets(text: str, *urls: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` (or ``?password=``) in
    it replaced by ``***``, and the passwords of ``urls`` wherever else they appear (for error
    messages of drivers and of MLflow, which quote the URL or parts of it)."""
    for url in urls:
        for password in _passwords(url):
            text = text.replace(password, "***")
    text = _CREDENTIALS.sub(lambda match: f"{match['head']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda match: f"{match['head']}***", text)


def _passwords(url: str) -> list[str]:
    found = []
    for match in re.finditer(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:(?P<pw>[^/?#\s]*)@", url):
        found.append(match["pw"])
    found += [
        match.group(1)
        for match in re.finditer(r"[?&](?:password|passwd|pwd)=([^&#\s]*)", url, re.I)
    ]
    return [password for password in found if len(password) >= 3 and password != "***"]
