"""The ``basicauth`` policy (Cliquet's): any ``user:password`` pair is an identity.

Reading ``Authorization: Basic`` headers is shared with
:mod:`kiln.auth.accounts` through :func:`parse_basic_credentials`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, NamedTuple

from kiln.auth import AuthenticationPolicy, get_header
from kiln.exceptions import ConfigError

__all__ = [
    "MIN_SECRET_LENGTH",
    "BasicAuthPolicy",
    "BasicCredentials",
    "basic_challenge",
    "parse_basic_credentials",
]

#: Shortest ``auth.userid_hmac_secret`` accepted (``secrets.token_hex(16)``).
MIN_SECRET_LENGTH = 32


class BasicCredentials(NamedTuple):
    """A decoded ``Authorization: Basic`` header."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password='***')"


def parse_basic_credentials(headers: Mapping[str, str]) -> BasicCredentials | None:
    """The credentials of an ``Authorization: Basic`` header, or ``None``.

    ``None`` when there is no such header or it cannot be read: another
    scheme, invalid base64, bytes that are not UTF-8 (RFC 7617's charset), or
    no ``:``. The password is what follows the first ``:`` and may contain
    more. Never raises.
    """
    scheme, _, encoded = get_header(headers, "Authorization").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        # ValueError covers UnicodeDecodeError and non-ASCII input to b64decode.
        return None
    username, colon, password = decoded.partition(":")
    if not colon:
        return None
    return BasicCredentials(username, password)


def basic_challenge(config: Any) -> str:
    """``Basic realm="<project.name>"`` for ``WWW-Authenticate``."""
    realm = str(config.setting("project.name")).replace("\\", "").replace('"', "")
    return f'Basic realm="{realm}", charset="UTF-8"'


class BasicAuthPolicy(AuthenticationPolicy):
    """Any ``user:password`` pair of a Basic header is an identity.

    The user id is the hex HMAC-SHA256 of ``"user:password"`` keyed by
    ``auth.userid_hmac_secret``: nothing is stored, changing the password
    changes the identity, and the secret ties ids to the server. An empty
    username is anonymous. No password is ever wrong, so this policy never
    answers 401.

    Settings read: ``auth.userid_hmac_secret``, ``project.name`` (the realm).

    :raises kiln.exceptions.ConfigError: the secret is shorter than
        :data:`MIN_SECRET_LENGTH`.
    """

    name = "basicauth"

    def __init__(self, config: Any) -> None:
        secret = config.setting("auth.userid_hmac_secret")
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            # Never echo the secret, not even a short one.
            raise ConfigError(
                "auth.userid_hmac_secret must be a string of at least "
                f"{MIN_SECRET_LENGTH} characters when the 'basicauth' policy is on: it keys "
                "the HMAC that turns credentials into user ids. Generate one with "
                '`python -c "import secrets; print(secrets.token_hex(32))"` (`kiln init` '
                "writes one), and keep it stable: changing it changes every user id."
            )
        self._secret = secret.encode("utf-8")
        self._challenge = basic_challenge(config)

    def userid(self, username: str, password: str) -> str:
        """The user id of a ``username``/``password`` pair (hex HMAC-SHA256)."""
        message = f"{username}:{password}".encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def authenticated_userid(self, headers: Mapping[str, str]) -> str | None:
        credentials = parse_basic_credentials(headers)
        if credentials is None or not credentials.username:
            return None
        return self.userid(credentials.username, credentials.password)

    def challenge(self) -> str:
        return self._challenge
