"""The ``accounts`` policy: real accounts whose passwords are hashed with Argon2.

Accounts are records of the storage backend: resource ``account``, parent
``""``, ``{"id": <username>, "password": <argon2 hash>, ...}``.
:class:`AccountStore` creates, verifies, changes and deletes them; the
``/accounts`` endpoints (which come with the HTTP wiring) are thin layers
over it: its errors are :class:`kiln.errors.HTTPError` subclasses carrying
the status and errno to answer with.

Hashing is argon2-cffi's :class:`argon2.PasswordHasher` (Argon2id). A hash
made with parameters other than the hasher's is replaced at the next
successful login (:meth:`argon2.PasswordHasher.check_needs_rehash`).
Verifying an unknown username hashes a dummy password, so it takes as long
as a wrong password: timing does not tell which usernames exist.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from kiln.auth import AuthenticationPolicy
from kiln.auth.basicauth import basic_challenge, parse_basic_credentials
from kiln.errors import ERRORS, HTTPError
from kiln.storage import PreconditionFailed, Record, RecordNotFoundError, StorageBase, UnicityError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "RESOURCE_NAME",
    "USERNAME_PATTERN",
    "AccountExistsError",
    "AccountNotFoundError",
    "AccountStore",
    "AccountsPolicy",
    "InvalidCredentialsError",
    "InvalidPasswordError",
    "InvalidUsernameError",
    "make_hasher",
]

logger = logging.getLogger("kiln.auth.accounts")

#: Resource name of account records (parent ``""``).
RESOURCE_NAME = "account"
#: What a username may look like: it travels in Basic headers (no ``:``)
#: and in URLs, and may be an email address.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
#: Longest password accepted (hashing cost stays bounded).
MAX_PASSWORD_LENGTH = 1024

_DUMMY_PASSWORD = "kiln-dummy-password-for-constant-time"  # noqa: S105 - not a credential


class AccountExistsError(HTTPError):
    """An account with this username exists already (409)."""

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(
            409, ERRORS.CONSTRAINT_VIOLATED, f"An account named {username!r} exists already."
        )


class AccountNotFoundError(HTTPError):
    """No account has this username (404)."""

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(404, ERRORS.MISSING_RESOURCE, f"No account named {username!r}.")


class InvalidUsernameError(HTTPError):
    """The username cannot name an account (400)."""

    def __init__(self) -> None:
        super().__init__(
            400,
            ERRORS.INVALID_PARAMETERS,
            "A username is 1 to 128 letters, digits or '_', '.', '@', '+', '-', "
            "starting with a letter or digit.",
        )


class InvalidPasswordError(HTTPError):
    """The new password is too short, too long or not a string (400)."""

    def __init__(self, min_length: int) -> None:
        super().__init__(
            400,
            ERRORS.INVALID_PARAMETERS,
            f"A password is a string of {min_length} to {MAX_PASSWORD_LENGTH} characters.",
        )


class InvalidCredentialsError(HTTPError):
    """Wrong username or password (401); never says which."""

    def __init__(self, challenge: str | None = None) -> None:
        headers = {"WWW-Authenticate": challenge} if challenge else None
        super().__init__(
            401, ERRORS.INVALID_AUTH_TOKEN, "Invalid username or password.", headers=headers
        )


def make_hasher(config: Any) -> PasswordHasher:
    """A :class:`~argon2.PasswordHasher` with the parameters of ``accounts.argon2``."""
    return PasswordHasher(**config.setting("accounts.argon2"))


class AccountStore:
    """Accounts kept in ``storage``, passwords hashed by ``hasher``.

    ``hasher`` defaults to argon2-cffi's recommended parameters; tests pass
    a cheap one (``PasswordHasher(time_cost=1, memory_cost=8,
    parallelism=1)``). Records returned never contain the password hash.
    """

    def __init__(
        self,
        storage: StorageBase,
        hasher: PasswordHasher | None = None,
        *,
        min_password_length: int = 8,
    ) -> None:
        self.storage = storage
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self.min_password_length = min_password_length
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<AccountStore storage={type(self.storage).__name__}>"

    # -- reading -------------------------------------------------------

    def get(self, username: str) -> Record:
        """The account ``username``, without its password hash.

        :raises AccountNotFoundError: no such account.
        """
        return _public(self._get(username))

    def all(self) -> list[Record]:
        """Every account, without password hashes."""
        return [_public(record) for record in self.storage.list_all(RESOURCE_NAME, "")]

    def verify(self, username: str, password: str) -> bool:
        """Whether ``password`` is the password of account ``username``.

        Takes as long for an unknown username as for a wrong password.
        Rehashes the stored hash when the hasher's parameters changed.
        """
        try:
            record = self._get(username)
        except AccountNotFoundError:
            self._verify_hash(self._dummy(), password)
            return False
        stored = record.get("password")
        if not isinstance(stored, str) or not self._verify_hash(stored, password):
            return False
        if self.hasher.check_needs_rehash(stored):
            self._rehash(record, password)
        return True

    # -- writing -------------------------------------------------------

    def create(self, username: str, password: str, **fields: Any) -> Record:
        """Create account ``username``; return it without the hash.

        ``fields`` are stored alongside (``email``, ...).

        :raises InvalidUsernameError: the username cannot name an account.
        :raises InvalidPasswordError: the password is too short or too long.
        :raises AccountExistsError: the username is taken.
        """
        self._check_username(username)
        self._check_password(password)
        record = {**fields, "id": username, "password": self.hasher.hash(password)}
        try:
            rv = self.storage.create(RESOURCE_NAME, "", record)
        except UnicityError:
            raise AccountExistsError(username) from None
        return _public(rv)

    def change_password(self, username: str, old_password: str | None, new_password: str) -> Record:
        """Set a new password; return the account without the hash.

        ``old_password`` is checked when given; ``None`` resets the password
        without it (administrators).

        :raises InvalidCredentialsError: ``old_password`` is wrong, or the
            account does not exist (not told apart).
        :raises AccountNotFoundError: no such account (``old_password`` is ``None``).
        :raises InvalidPasswordError: the new password is too short or too long.
        """
        self._check_password(new_password)
        if old_password is not None and not self.verify(username, old_password):
            raise InvalidCredentialsError()
        record = self._get(username)
        record["password"] = self.hasher.hash(new_password)
        record.pop("last_modified", None)
        return _public(self.storage.update(RESOURCE_NAME, "", username, record))

    def delete(self, username: str) -> Record:
        """Delete account ``username``; return its tombstone.

        :raises AccountNotFoundError: no such account.
        """
        try:
            return self.storage.delete(RESOURCE_NAME, "", username)
        except RecordNotFoundError:
            raise AccountNotFoundError(username) from None

    # -- internals -----------------------------------------------------

    def _get(self, username: str) -> Record:
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
            # Such a name cannot exist; do not hand it to the backend.
            raise AccountNotFoundError(str(username))
        try:
            return self.storage.get(RESOURCE_NAME, "", username)
        except RecordNotFoundError:
            raise AccountNotFoundError(username) from None

    def _verify_hash(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except InvalidHashError:
            logger.error("An account's password hash is not an Argon2 hash; login refused.")
            return False
        except VerificationError:
            # VerifyMismatchError and parameter errors alike: not this password.
            return False

    def _dummy(self) -> str:
        with self._lock:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(_DUMMY_PASSWORD)
            return self._dummy_hash

    def _rehash(self, record: Record, password: str) -> None:
        updated = {k: v for k, v in record.items() if k != "last_modified"}
        updated["password"] = self.hasher.hash(password)
        try:
            self.storage.update(
                RESOURCE_NAME, "", record["id"], updated, if_match=record["last_modified"]
            )
        except PreconditionFailed:
            # Changed meanwhile (a password change): that write wins.
            return
        logger.info("Rehashed the password of account %r with current parameters.", record["id"])

    def _check_username(self, username: str) -> None:
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
            raise InvalidUsernameError()

    def _check_password(self, password: str) -> None:
        if not isinstance(password, str) or not (
            self.min_password_length <= len(password) <= MAX_PASSWORD_LENGTH
        ):
            raise InvalidPasswordError(self.min_password_length)


def _public(record: Record) -> Record:
    return {k: v for k, v in record.items() if k != "password"}


class AccountsPolicy(AuthenticationPolicy):
    """Basic auth against the accounts of an :class:`AccountStore`.

    A Basic header whose password verifies identifies its username: the
    principal is ``account:<username>``, as in Kinto. Any other Basic header
    is anonymous, as in Kinto, whether the account does not exist or the
    password is wrong (one answer for both, so that responses do not tell
    which usernames exist): a client may sign up with the credentials it
    will use (``PUT /accounts/alice`` as ``alice:<password>``). With
    ``accounts.reject_invalid_credentials`` on, such headers answer 401
    ``INVALID_AUTH_TOKEN`` instead, so that a mistyped password never acts
    anonymously. No Basic header (or an unreadable one, or an empty
    username) is ``None``: anonymous.

    Subclass it to change who may sign up (:meth:`may_create`), who
    administers accounts (:meth:`is_admin`) or how credentials are read; list
    the subclass by dotted path in ``auth.policies``: it is built with
    ``(config, storage)`` and the ``/accounts`` endpoints mount for it.

    Settings read: ``accounts.argon2``, ``accounts.min_password_length``,
    ``accounts.create_principals``, ``accounts.admin_principals``,
    ``accounts.reject_invalid_credentials``, ``project.name`` (the realm).

    .. versionchanged:: 0.1
        The principal is ``account:<name>`` (was ``accounts:<name>``).
    """

    name = "account"
    needs_storage = True

    def __init__(self, config: Any, storage: StorageBase) -> None:
        self.store = AccountStore(
            storage,
            make_hasher(config),
            min_password_length=config.setting("accounts.min_password_length"),
        )
        self.create_principals = frozenset(config.setting("accounts.create_principals"))
        self.admin_principals = frozenset(config.setting("accounts.admin_principals"))
        self.reject_invalid_credentials = config.setting("accounts.reject_invalid_credentials")
        self._challenge = basic_challenge(config)

    def authenticated_userid(self, headers: Mapping[str, str]) -> str | None:
        credentials = parse_basic_credentials(headers)
        if credentials is None or not credentials.username:
            return None
        if self.store.verify(credentials.username, credentials.password):
            return credentials.username
        if self.reject_invalid_credentials:
            raise InvalidCredentialsError(self._challenge)
        return None

    def challenge(self) -> str:
        return self._challenge

    def may_create(self, principals: Iterable[str]) -> bool:
        """Whether a request with ``principals`` may create an account."""
        return not self.create_principals.isdisjoint(principals)

    def is_admin(self, principals: Iterable[str]) -> bool:
        """Whether a request with ``principals`` may read, reset and delete every account."""
        return not self.admin_principals.isdisjoint(principals)
