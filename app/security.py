"""Bearer tokens: where the admin token comes from, and constant-time checks."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from app.errors import UnauthorizedError

log = logging.getLogger(__name__)


def load_or_create_admin_token(configured: str | None, token_file: Path) -> str:
    """Use the configured token, else the stored one, else generate and store one (0600)."""
    if configured:
        return configured
    if token_file.is_file():
        token = token_file.read_text().strip()
        if token:
            log.info("admin token read from %s", token_file)
            return token
    token = secrets.token_urlsafe(32)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    # Written once, atomically: servers sharing a store that start together agree on one.
    temp = token_file.with_name(f".{token_file.name}.{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(temp, token_file)
    except FileExistsError:
        found = token_file.read_text().strip()
        if found:
            log.info("admin token read from %s (another server created it)", token_file)
            return found
        os.replace(temp, token_file)  # an empty file (an old crash): ours replaces it
    finally:
        temp.unlink(missing_ok=True)
    log.warning("generated an admin token; it is in %s (mode 0600)", token_file)
    return token


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_token(authorization: str | None, *accepted: str | None) -> None:
    """Raise 401 unless the header carries one of the ``accepted`` tokens."""
    given = bearer(authorization)
    if given is None:
        raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <token>'")
    ok = False
    for token in accepted:
        if token and hmac.compare_digest(given.encode(), token.encode()):
            ok = True
    if not ok:
        raise UnauthorizedError("invalid bearer token")
