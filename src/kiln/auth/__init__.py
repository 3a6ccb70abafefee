"""Authentication policies: who is making a request.

A policy reads the request headers and answers with a user id, or ``None``
when the request carries no credentials it understands. Policies are
chained in the order of ``auth.policies``; the first that identifies the
request wins, and its name prefixes the user id (``basicauth:1f2e...``,
``account:alice``), so the same person gets different ids under different
policies and ids never collide across policies.

This package is sans-IO: headers in, identities out. It never touches
``flask.request``; the views and ``/batch`` call :func:`authenticate` and
:func:`principals_for` with the headers of each (sub-)request.

Built-in policies:

- ``basicauth`` (:mod:`kiln.auth.basicauth`): Cliquet's. Any
  ``user:password`` pair is an identity, derived with HMAC-SHA256 keyed by
  ``auth.userid_hmac_secret``.
- ``accounts`` (:mod:`kiln.auth.accounts`): real accounts with
  Argon2-hashed passwords kept in the storage backend.

Writing a policy::

    class BearerTokenPolicy(AuthenticationPolicy):
        name = "bearer"

        def __init__(self, config):
            self.tokens = config.get("auth.bearer.tokens", {})

        def authenticated_userid(self, headers):
            scheme, _, token = get_header(headers, "Authorization").partition(" ")
            if scheme.lower() != "bearer":
                return None
            ...

and list it by dotted path: ``auth.policies: ["myapp.auth.BearerTokenPolicy"]``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import abc
import difflib
import importlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast, overload

from kiln.config import Setting, register_setting
from kiln.errors import ERRORS, HTTPError
from kiln.exceptions import ConfigError, StartupError

if TYPE_CHECKING:
    from kiln.storage import StorageBase

__all__ = [
    "AUTHENTICATED",
    "BUILTIN_POLICIES",
    "EVERYONE",
    "AuthenticationPolicy",
    "Identity",
    "Principals",
    "Refusal",
    "authenticate",
    "denied",
    "get_header",
    "identify",
    "load_policies",
    "policies_need_storage",
    "principals_for",
]

logger = logging.getLogger("kiln.auth")

#: Principal of every request, authenticated or not.
EVERYONE = "system.Everyone"
#: Principal of every authenticated request.
AUTHENTICATED = "system.Authenticated"

#: Names of the policies kiln ships, usable in ``auth.policies``.
BUILTIN_POLICIES = ("accounts", "basicauth")
#: The class of each built-in policy, in its module ``kiln.auth.<name>``.
_BUILTIN_CLASSES = {"accounts": "AccountsPolicy", "basicauth": "BasicAuthPolicy"}

#: What a policy name may look like: it prefixes user ids, so no ``:``.
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class AuthenticationPolicy(abc.ABC):
    """The contract of an authentication policy.

    Implementations are built once at startup and called from many threads:
    keep them free of per-request state.

    ``name`` prefixes the user ids the policy returns (``basicauth`` gives
    ``basicauth:<id>``). It must be unique in the chain and contain no
    ``:``.
    """

    name: str = ""
    #: The request headers :meth:`authenticated_userid` reads. Requests
    #: whose values of these headers are equal get the same answer, which
    #: kiln memoizes within a request and its batch sub-requests.
    headers: tuple[str, ...] = ("Authorization",)
    #: Whether the policy keeps state in the storage backend: it is then
    #: built with ``(config, storage)`` instead of ``(config)``, and the app
    #: builds a storage backend for it even without resources.
    needs_storage: bool = False

    @abc.abstractmethod
    def authenticated_userid(self, headers: Mapping[str, str]) -> str | None:
        """The unprefixed user id the request's ``headers`` prove, or ``None``.

        ``None`` means "no credentials for this policy": the next policy of
        the chain is tried, and the request is anonymous when none answers.
        Malformed credentials the policy cannot even read are ``None`` too.

        Must never raise anything but :class:`kiln.errors.HTTPError`.

        :raises kiln.errors.HTTPError: ``401`` with errno
            ``ERRORS.INVALID_AUTH_TOKEN`` when credentials for this policy are
            present but wrong (a wrong password); the chain stops there.
        """

    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` value sent with 401 responses, or ``None``.

        The default sends none.
        """
        return None

    def openapi_security_scheme(self) -> dict[str, Any] | None:
        """The OpenAPI Security Scheme Object of this policy's credentials, or ``None``.

        :mod:`kiln.docs` lists it under ``components.securitySchemes`` (named
        after the policy), like ``{"type": "http", "scheme": "bearer"}``. The
        default describes nothing; ``basicauth`` and ``accounts`` are HTTP Basic.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release what the policy holds (connections, caches). The default does nothing."""

    def __repr__(self) -> str:
        # Never show attributes: they may hold secrets.
        return f"<{type(self).__name__} name={self.name!r}>"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: ``user_id`` as the ``policy`` named it, and
    ``prefixed_id`` (``"<policy>:<user_id>"``), the id permissions use."""

    user_id: str
    prefixed_id: str
    policy: str


def get_header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name`` (case-insensitive), or ``""`` when absent.

    Works with plain dicts as well as case-insensitive header objects.
    """
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), "")
    return value


class Refusal(NamedTuple):
    """Credentials a policy refused: the 401 it raised, and the policy's name."""

    error: HTTPError
    policy: str


def identify(
    policies: Iterable[AuthenticationPolicy], headers: Mapping[str, str]
) -> Identity | Refusal | None:
    """Try ``policies`` in order: the identity of the first that identifies
    the request, the :class:`Refusal` of the first that finds wrong
    credentials (the chain stops there), or ``None`` for an anonymous request."""
    for policy in policies:
        try:
            user_id = policy.authenticated_userid(headers)
        except HTTPError as exc:
            return Refusal(exc, policy.name)
        if user_id is not None:
            return Identity(user_id, f"{policy.name}:{user_id}", policy.name)
    return None


def authenticate(
    policies: Iterable[AuthenticationPolicy], headers: Mapping[str, str]
) -> Identity | None:
    """Try ``policies`` in order; the first that identifies the request wins.

    Returns ``None`` for an anonymous request.

    :raises kiln.errors.HTTPError: a policy found wrong credentials (401).
    """
    found = identify(policies, headers)
    if isinstance(found, Refusal):
        raise found.error
    return found


def denied(principals: Iterable[str], message: str | None = None) -> HTTPError:
    """The error refusing a request: 401 (errno 104) for an anonymous caller,
    so that a client knows to authenticate, 403 (errno 121) for an
    authenticated one (``message`` says why)."""
    if AUTHENTICATED in principals:
        return HTTPError(403, ERRORS.FORBIDDEN, message or "This user cannot access this resource.")
    return HTTPError(
        401, ERRORS.MISSING_AUTH_TOKEN, "Please authenticate yourself to use this endpoint."
    )


def principals_for(
    identity: Identity | None,
    user_principals: Callable[[str], Iterable[str]] | None = None,
) -> tuple[str, ...]:
    """The principals of a request, sorted and deduplicated.

    Everyone has ``system.Everyone``; an authenticated request adds
    ``system.Authenticated``, its prefixed user id, and the groups
    ``user_principals(prefixed_id)`` returns (the permission backend's
    ``get_user_principals``).

    >>> principals_for(Identity("abc", "basicauth:abc", "basicauth"))
    ('basicauth:abc', 'system.Authenticated', 'system.Everyone')
    """
    principals = {EVERYONE}
    if identity is not None:
        principals |= {AUTHENTICATED, identity.prefixed_id}
        if user_principals is not None:
            principals |= set(user_principals(identity.prefixed_id))
    return tuple(sorted(principals))


class Principals(Sequence[str]):
    """The principals of a request (as :func:`principals_for` gives them),
    its groups read only when a question needs them.

    ``system.Everyone``, ``system.Authenticated`` and the user id are known
    without any read (:attr:`base`); the groups come from
    ``user_principals(user_id)`` when first needed, or are handed over by a
    read that fetched them with something else (:meth:`resolve`), so that a
    permission check costs one round trip, and none when :attr:`base`
    already decides. Behaves as the sorted tuple of all of them.

    >>> p = Principals(Identity("abc", "basicauth:abc", "basicauth"), lambda _: {"group:g"})
    >>> p.known, "system.Authenticated" in p, p.known
    (False, True, False)
    >>> list(p), p.known
    (['basicauth:abc', 'group:g', 'system.Authenticated', 'system.Everyone'], True)
    """

    __slots__ = ("_all", "_read_groups", "base", "user_id")

    def __init__(
        self,
        identity: Identity | None,
        user_principals: Callable[[str], Iterable[str]] | None = None,
    ) -> None:
        self.base: tuple[str, ...] = principals_for(identity)
        #: Whose groups are still to be read (``None``: nothing to read).
        self.user_id = (
            identity.prefixed_id if identity is not None and user_principals is not None else None
        )
        self._read_groups = user_principals
        self._all: tuple[str, ...] | None = self.base if self.user_id is None else None

    @property
    def known(self) -> bool:
        """Whether the groups are known (read, or nothing to read)."""
        return self._all is not None

    def resolve(self, groups: Iterable[str] | None = None) -> tuple[str, ...]:
        """All the principals: ``groups`` (read elsewhere) added to :attr:`base`,
        or the groups read now; read once."""
        if self._all is None:
            if groups is None:
                assert self._read_groups is not None  # set with user_id
                assert self.user_id is not None
                groups = self._read_groups(self.user_id)
            self._all = tuple(sorted({*self.base, *groups}))
        return self._all

    def __contains__(self, principal: object) -> bool:
        return principal in self.base or principal in self.resolve()

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolve())

    def __len__(self) -> int:
        return len(self.resolve())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self.resolve()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Principals):
            other = other.resolve()
        return self.resolve() == other

    def __hash__(self) -> int:
        return hash(self.resolve())

    def __repr__(self) -> str:
        if self._all is None:
            return f"Principals({self.base!r} and the groups of {self.user_id!r}, unread)"
        return f"Principals({self._all!r})"


# --------------------------------------------------------------------------
# Loading the chain
# --------------------------------------------------------------------------


def load_policies(config: Any, storage: StorageBase | None = None) -> list[AuthenticationPolicy]:
    """Build the policies listed in ``auth.policies`` of ``config`` (a
    :class:`kiln.config.Configuration`), in order.

    Entries are built-in names (``basicauth``, ``accounts``) or dotted paths
    to an :class:`AuthenticationPolicy` subclass built with ``(config)``, or
    ``(config, storage)`` when it :attr:`~AuthenticationPolicy.needs_storage`
    (``accounts`` keeps its accounts in ``storage``).

    ``accounts`` then ``basicauth`` is Kinto's chain: Basic credentials of an
    account identify the account, any other pair a ``basicauth`` user.

    :raises kiln.exceptions.ConfigError: an entry is unknown or cannot be
        imported, a policy refuses its settings (``basicauth`` without a
        long enough secret), two policies share a name, or ``basicauth``
        and ``accounts`` are listed in an order where one shadows the other.
    :raises kiln.exceptions.StartupError: a policy needs storage and no
        ``storage`` is given.
    """
    entries = config.setting("auth.policies")
    problem = _check_policy_list(entries)
    if problem:
        raise ConfigError(f"Config key 'auth.policies' {problem}.")
    if "basicauth" in entries and "accounts" in entries:
        if entries.index("basicauth") < entries.index("accounts"):
            raise ConfigError(
                "auth.policies lists 'basicauth' before 'accounts'; both read the Basic "
                "Authorization header and 'basicauth' accepts any password, so it would "
                "shadow accounts. List 'accounts' first."
            )
        if config.setting("accounts.reject_invalid_credentials"):
            raise ConfigError(
                "auth.policies lists 'accounts' then 'basicauth', but "
                "accounts.reject_invalid_credentials answers 401 to every pair that is "
                "not an account's, so 'basicauth' would never be reached. Keep one, or "
                "turn accounts.reject_invalid_credentials off."
            )
    policies: list[AuthenticationPolicy] = []
    for entry in entries:
        policy = _build_policy(entry, config, storage)
        if not isinstance(policy.name, str) or not _POLICY_NAME.match(policy.name):
            raise ConfigError(
                f"auth.policies entry {entry!r} has name {policy.name!r}; a policy name "
                "prefixes user ids, so it must be letters, digits, '_', '.' or '-' (no ':')."
            )
        if any(other.name == policy.name for other in policies):
            raise ConfigError(
                f"auth.policies lists two policies named {policy.name!r}; "
                "user ids would collide. Keep one."
            )
        policies.append(policy)
    return policies


def policies_need_storage(config: Any) -> bool:
    """Whether a policy of ``auth.policies`` keeps state in the storage backend.

    :raises kiln.exceptions.ConfigError: as :func:`load_policies`.
    """
    entries = config.setting("auth.policies")
    problem = _check_policy_list(entries)
    if problem:
        raise ConfigError(f"Config key 'auth.policies' {problem}.")
    return any(_policy_class(entry).needs_storage for entry in entries)


def _build_policy(entry: str, config: Any, storage: StorageBase | None) -> AuthenticationPolicy:
    cls = _policy_class(entry)
    if not cls.needs_storage:
        # Policies are built with ``(config)``; the ABC leaves ``__init__`` to them.
        return cast("Callable[[Any], AuthenticationPolicy]", cls)(config)
    if storage is None:
        raise StartupError(
            f"The {entry!r} policy keeps its state in the storage backend; "
            "pass storage= to load_policies()."
        )
    return cast("Callable[[Any, StorageBase], AuthenticationPolicy]", cls)(config, storage)


def _policy_class(entry: str) -> type[AuthenticationPolicy]:
    if entry in BUILTIN_POLICIES:
        # Built-in policies are modules of this package, imported by name like
        # any policy (as storage backends are), so this module imports none.
        module = importlib.import_module(f"kiln.auth.{entry}")
        return cast("type[AuthenticationPolicy]", getattr(module, _BUILTIN_CLASSES[entry]))
    if "." not in entry:
        message = f"auth.policies entry {entry!r} is not a known policy."
        guesses = difflib.get_close_matches(entry.lower(), BUILTIN_POLICIES, 1, 0.6)
        if guesses:
            message += f" Did you mean {guesses[0]!r}?"
        raise ConfigError(
            f"{message} Use one of {', '.join(BUILTIN_POLICIES)}, "
            "or the dotted path of an AuthenticationPolicy subclass."
        )
    module_name, _, attribute = entry.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"auth.policies entry {entry!r}: module {module_name!r} cannot be imported "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    factory = getattr(module, attribute, None)
    if not (isinstance(factory, type) and issubclass(factory, AuthenticationPolicy)):
        raise ConfigError(
            f"auth.policies entry {entry!r} must name a subclass of kiln.auth.AuthenticationPolicy."
        )
    return factory


def _check_policy_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return 'must be a list of policy names or dotted paths, like ["accounts"]'
    return None


def _check_argon2(value: Any) -> str | None:
    allowed = {"time_cost", "memory_cost", "parallelism"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        return f"takes only {', '.join(sorted(allowed))}, got {', '.join(unknown)}"
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
        return "values must be positive integers"
    return None


def _check_positive(value: Any) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


def _check_principals(value: Any) -> str | None:
    if not all(isinstance(v, str) and v for v in value):
        return 'must be a list of principals, like ["system.Everyone"]'
    return None


def _register_settings(settings: Sequence[Setting]) -> None:
    for setting in settings:
        register_setting(setting)


_register_settings(
    (
        Setting(
            "auth.policies",
            (list,),
            [],
            "Authentication policies tried in order: `basicauth`, `accounts`, or dotted "
            "paths to `kiln.auth.AuthenticationPolicy` subclasses. Empty: anonymous only.",
            check_value=_check_policy_list,
        ),
        Setting(
            "auth.userid_hmac_secret",
            (str,),
            "",
            "Key of the HMAC that turns `basicauth` credentials into user ids (at least "
            "32 characters; `kiln init` writes one). Changing it changes every user id.",
        ),
        Setting(
            "accounts.create_principals",
            (list,),
            [],
            'Principals allowed to create accounts; `["system.Everyone"]` opens sign-up.',
            True,
            check_value=_check_principals,
        ),
        Setting(
            "accounts.admin_principals",
            (list,),
            [],
            "Principals that may read, reset and delete every account.",
            check_value=_check_principals,
        ),
        Setting(
            "accounts.reject_invalid_credentials",
            (bool,),
            False,
            "Answer 401 to Basic credentials that name no account or carry a wrong "
            "password, so that a mistyped password never acts anonymously. Off (Kinto's "
            "behaviour): such requests are anonymous, and a client may sign up with "
            "the credentials it will use.",
        ),
        Setting(
            "accounts.min_password_length",
            (int,),
            8,
            "Shortest password an account may get.",
            True,
            check_value=_check_positive,
        ),
        Setting(
            "accounts.argon2",
            (dict,),
            {},
            "Argon2 parameters (`time_cost`, `memory_cost` in KiB, `parallelism`); "
            "default: argon2-cffi's RFC 9106 profile. Hashes made with other "
            "parameters are rehashed at the next login.",
            check_value=_check_argon2,
        ),
    )
)
