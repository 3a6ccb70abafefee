"""An HTTP client for calling other services, and a ``Cache-Control`` view decorator.

:func:`request` sends one request and returns a :class:`Response`
``(status, headers, data)``, as Clay's ``clay.http.request`` did. The contract:

* Only ``http`` and ``https`` URLs are accepted; anything else raises
  :class:`InvalidURLError` (a ``ValueError`` too) before any I/O.
* Every response that arrives is **returned**, 4xx and 5xx included. Only a
  failure to get a response raises, always a subclass of :class:`HTTPError`
  (connection refused, DNS, timeout, TLS, too many redirects, a broken
  response, a blocked host).
* There is always a timeout (``http.timeout``, 10 s by default), applied to
  the connection and to every read of each hop.
* TLS certificates and host names are verified on the connection that
  carries the request, against the system store or ``http.ca_certs_file``.
* Connections are kept alive and pooled (urllib3) and shared by all threads.
* Redirects are followed, at most ``http.max_redirects`` of them; a ``303``
  (and a ``301``/``302`` answering a ``POST``) turns the request into a body-less
  ``GET``, as browsers do.
* With ``http.allowed_hosts`` and ``http.block_private_networks``, every hop,
  redirect targets included, is checked before kiln connects to it.
* Header names and values holding CR, LF or NUL raise ``ValueError`` before
  any I/O, so caller-supplied values cannot inject headers.

Example::

    from kiln import http

    response = http.request("GET", "https://api.example.com/ip", timeout=2)
    if response.status != 200:
        print("Something bad happened:", response.data)
    print(response.json()["origin"])

    http.request("POST", "https://api.example.com/users", json={"name": "ana"})

:func:`cache_control` decorates a Flask view::

    @app.route("/hello_cache", methods=["GET"])
    @http.cache_control(max_age=3600, public=True)
    def hello_cache():
        return "Hi!"               # Cache-Control: max-age=3600, public

Do not confuse :class:`kiln.http.HTTPError` (this module: *no* response was
received) with :class:`kiln.errors.HTTPError` (an error response that a kiln
view sends to its own client).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, ParamSpec
from urllib.parse import urljoin

import flask
import orjson
import urllib3
from flask.typing import ResponseReturnValue
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Url, parse_url

from kiln.config import CONFIG, Setting, register_setting
from kiln.exceptions import ConfigError, KilnError

__all__ = [
    "CACHE_DIRECTIVES",
    "BlockedHostError",
    "ConnectError",
    "HTTPError",
    "InvalidURLError",
    "ProtocolError",
    "RequestTimeout",
    "Response",
    "TLSError",
    "TooManyRedirects",
    "cache_control",
    "request",
]

logger = logging.getLogger("kiln.http")

P = ParamSpec("P")

_NUMBER = (int, float)

for _setting in (
    Setting(
        "http.timeout",
        _NUMBER,
        10.0,
        "Seconds allowed to connect, and to each read, per hop of `kiln.http.request` "
        "(overridden by its `timeout=`).",
        True,
    ),
    Setting(
        "http.verify_server_certificates",
        (bool,),
        True,
        "Verify TLS certificates and host names. Turning it off is logged as a warning.",
        True,
    ),
    Setting(
        "http.ca_certs_file",
        (str, None),
        None,
        "PEM file of the CAs to trust instead of the system store.",
        True,
    ),
    Setting("http.max_redirects", (int,), 10, "Redirects followed before giving up.", True),
    Setting(
        "http.allowed_hosts",
        (list, None),
        None,
        "Host names `kiln.http` may contact (`api.example.com`, `*.example.com`); "
        "null allows every host.",
        True,
    ),
    Setting(
        "http.block_private_networks",
        (bool,),
        False,
        "Refuse to connect to loopback, private, link-local and reserved addresses.",
        True,
    ),
    Setting(
        "http.allowed_private_networks",
        (list,),
        [],
        "Networks (CIDR) exempt from `http.block_private_networks`, e.g. `10.1.2.0/24`.",
        True,
    ),
    Setting("http.pool_maxsize", (int,), 10, "Idle connections kept per host.", True),
):
    register_setting(_setting)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class HTTPError(KilnError):
    """A request sent by :func:`request` got no response.

    Error *responses* (4xx, 5xx) are returned, never raised. ``url`` is the
    URL of the hop that failed (after redirects), or ``None``.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)


class InvalidURLError(HTTPError, ValueError):
    """The URL is not an ``http``/``https`` URL kiln can send to (raised before any I/O)."""


class BlockedHostError(HTTPError):
    """The host is not in ``http.allowed_hosts``, or resolves to a blocked network."""


class ConnectError(HTTPError):
    """No connection: the name does not resolve, or the server refused or is unreachable."""


class RequestTimeout(HTTPError, TimeoutError):
    """Connecting or reading took longer than the timeout (also a builtin ``TimeoutError``)."""


class TLSError(HTTPError):
    """The TLS handshake failed: untrusted certificate, wrong host name, protocol mismatch."""


class TooManyRedirects(HTTPError):
    """More than ``http.max_redirects`` redirects (often a redirect loop)."""


class ProtocolError(HTTPError):
    """The server broke HTTP: it closed the connection early or sent a malformed response."""


# --------------------------------------------------------------------------
# Response
# --------------------------------------------------------------------------


class Response(NamedTuple):
    """What the server answered: ``status``, ``headers`` and the body ``data``.

    ``headers`` is case-insensitive (``headers["content-type"]``); repeated
    headers are joined with ``", "`` (``headers.getlist(name)`` splits them).
    ``data`` is the whole body as bytes (``b""`` when there is none).
    """

    status: int
    headers: Mapping[str, str]
    data: bytes

    def json(self) -> Any:
        """The body decoded as JSON.

        :raises ValueError: the body is not JSON.
        """
        return orjson.loads(self.data)


# --------------------------------------------------------------------------
# Settings and connection pools
# --------------------------------------------------------------------------


class _PoolSettings(NamedTuple):
    # Everything a PoolManager is built from; a change (a config reload) builds a new one.
    verify: bool
    ca_certs_file: str | None
    block_private_networks: bool
    allowed_private_networks: tuple[str, ...]
    pool_maxsize: int


class _AddressGuard:
    """Decides which IP addresses connections may reach when private networks are blocked."""

    def __init__(self, allowed_networks: Iterable[str]) -> None:
        self.allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for network in allowed_networks:
            try:
                self.allowed.append(ipaddress.ip_network(network, strict=False))
            except ValueError:
                raise ConfigError(
                    f"http.allowed_private_networks holds {network!r}, which is not a network; "
                    "write it in CIDR form, like '10.1.2.0/24'."
                ) from None

    def blocks(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
        if any(ip in network for network in self.allowed):
            return False
        return not ip.is_global or ip.is_multicast


class _GuardedConnectionMixin:
    # urllib3 calls _new_conn() to open the socket of every new connection; with a
    # guard, the host is resolved here, every address checked, and the socket opened
    # to the checked addresses only. Resolving once and connecting to what was checked
    # closes the DNS-rebinding gap of "check, then let the socket resolve again".
    address_guard: _AddressGuard | None
    host: str
    port: int
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        guard = self.address_guard
        if guard is None:
            return super()._new_conn()  # type: ignore[misc,no-any-return]
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        blocked = [address for address in addresses if guard.blocks(address)]
        if blocked:
            raise BlockedHostError(
                f"{self.host} resolves to {', '.join(blocked)}, a loopback, private, "
                "link-local or reserved address, and http.block_private_networks is on. "
                "Add the network to http.allowed_private_networks if this service must "
                "reach it.",
                url=f"{self.host}:{self.port}",
            )
        errors: list[Exception] = []
        for address in addresses:
            try:
                return self._connect_to(address)
            except (NewConnectionError, ConnectTimeoutError) as exc:
                errors.append(exc)  # try the next address, as socket.create_connection does
        raise errors[-1]

    def _connect_to(self, address: str) -> socket.socket:
        # urllib3 resolves _dns_host; pointing it at the checked address for the
        # duration of the connect keeps urllib3's error handling and socket options,
        # while TLS SNI and certificate checks still use the host name.
        host = self._dns_host
        self._dns_host = address
        try:
            return super()._new_conn()  # type: ignore[misc,no-any-return]
        finally:
            self._dns_host = host


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    def __init__(self, *args: Any, address_guard: _AddressGuard | None = None, **kw: Any) -> None:
        self.address_guard = address_guard
        super().__init__(*args, **kw)


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    def __init__(self, *args: Any, address_guard: _AddressGuard | None = None, **kw: Any) -> None:
        self.address_guard = address_guard
        super().__init__(*args, **kw)


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection

    def _validate_conn(self, conn: Any) -> None:
        # urllib3 warns (InsecureRequestWarning) on every unverified request; kiln
        # logs once when http.verify_server_certificates is turned off instead.
        if conn.is_closed:
            conn.connect()


class _PoolManager(urllib3.PoolManager):
    def __init__(self, guard: _AddressGuard | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.guard = guard
        self.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        # Given to each connection here rather than through the pool key, which
        # urllib3 builds from a fixed list of fields.
        pool.conn_kw["address_guard"] = self.guard
        return pool


_managers: dict[_PoolSettings, _PoolManager] = {}
_managers_lock = threading.Lock()
_warned_unverified = False


def _pool_settings() -> _PoolSettings:
    return _PoolSettings(
        verify=bool(CONFIG.setting("http.verify_server_certificates")),
        ca_certs_file=CONFIG.setting("http.ca_certs_file"),
        block_private_networks=bool(CONFIG.setting("http.block_private_networks")),
        allowed_private_networks=tuple(CONFIG.setting("http.allowed_private_networks")),
        pool_maxsize=int(CONFIG.setting("http.pool_maxsize")),
    )


def _manager() -> _PoolManager:
    """The pool manager for the current settings, built on first use and after a change."""
    settings = _pool_settings()
    with _managers_lock:
        manager = _managers.get(settings)
        if manager is None:
            manager = _build_manager(settings)
            # Settings only change on a config reload: close the pools built for the
            # old ones (requests in flight finish; their connections are then dropped).
            for old in _managers.values():
                old.clear()
            _managers.clear()
            _managers[settings] = manager
    return manager


def _build_manager(settings: _PoolSettings) -> _PoolManager:
    global _warned_unverified
    guard = None
    if settings.block_private_networks:
        guard = _AddressGuard(settings.allowed_private_networks)
    tls: dict[str, Any]
    if settings.verify:
        ca_certs = settings.ca_certs_file
        if ca_certs is not None and not os.path.isfile(ca_certs):
            raise ConfigError(
                f"http.ca_certs_file {ca_certs!r} does not exist. Point it at a PEM file of "
                "trusted CAs, or set it to null to use the system store."
            )
        tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs}
    else:
        if not _warned_unverified:
            _warned_unverified = True
            logger.warning(
                "http.verify_server_certificates is off: kiln.http accepts any TLS "
                "certificate, so anyone on the network path can read and change its "
                "HTTPS traffic. Turn it back on, or set http.ca_certs_file for a private CA."
            )
        tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
    return _PoolManager(guard, num_pools=32, maxsize=settings.pool_maxsize, block=False, **tls)


# --------------------------------------------------------------------------
# Checks made before any I/O
# --------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\0]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def _check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(
                f"Header name {name!r} is not valid: use letters, digits and "
                "!#$%&'*+-.^_`|~ only (no spaces, colons, CR, LF or NUL)."
            )
        if not isinstance(value, str) or _FORBIDDEN_IN_VALUE.search(value):
            raise ValueError(
                f"Header {name} has the value {value!r}; a header value must be a string "
                "without CR, LF or NUL. Strip or reject such characters from untrusted input."
            )


def _parse_target(url: str) -> Url:
    """Parse and check one hop's URL; raises before any I/O."""
    if _CONTROL_OR_SPACE.search(url):
        raise InvalidURLError(
            f"URL {url!r} contains spaces or control characters; percent-encode them.", url=url
        )
    try:
        parsed = parse_url(url)
    except LocationParseError as exc:
        raise InvalidURLError(f"URL {url!r} cannot be parsed: {exc}.", url=url) from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidURLError(
            f"URL {url!r} is not supported: kiln.http only sends http:// and https:// URLs.",
            url=url,
        )
    if not parsed.host:
        raise InvalidURLError(f"URL {url!r} has no host; write it like https://host/path.", url=url)
    if parsed.auth is not None:
        raise InvalidURLError(
            f"URL {_display(parsed)} holds credentials; pass them in an Authorization "
            "header instead (urllib3.util.make_headers(basic_auth='user:password')).",
            url=_display(parsed),
        )
    _check_allowed_host(parsed)
    return parsed


def _check_allowed_host(target: Url) -> None:
    patterns = CONFIG.setting("http.allowed_hosts")
    if patterns is None:
        return
    host = (target.host or "").strip("[]").rstrip(".").lower()
    if any(_host_matches(host, pattern) for pattern in patterns):
        return
    raise BlockedHostError(
        f"{host} is not in http.allowed_hosts; add it (or a pattern like '*.{host}') "
        "to the list if this service must call it.",
        url=_display(target),
    )


def _host_matches(host: str, pattern: object) -> bool:
    if pattern == "*":
        return True
    if not isinstance(pattern, str) or "*" in pattern.removeprefix("*."):
        raise ConfigError(
            f"http.allowed_hosts holds {pattern!r}; write host names like 'api.example.com', "
            "'*.example.com' (any subdomain) or '*' (any host)."
        )
    pattern = pattern.strip("[]").rstrip(".").lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _display(target: Url) -> str:
    # Logs and messages show scheme, host, port and path: never credentials or the
    # query string, which often carries tokens.
    return Url(scheme=target.scheme, host=target.host, port=target.port, path=target.path).url


# --------------------------------------------------------------------------
# request()
# --------------------------------------------------------------------------

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_BODY_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding")
_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")


def request(
    method: str | None,
    uri: str,
    headers: Mapping[str, str] | None = None,
    data: str | bytes | None = None,
    timeout: float | None = None,
    *,
    json: Any = None,
    follow_redirects: bool = True,
) -> Response:
    """Send ``method`` to ``uri`` and return the :class:`Response`.

    :param method: an HTTP method; ``None`` means ``POST`` when there is a
        body (``data`` or ``json``) and ``GET`` otherwise, as in Clay.
    :param uri: an ``http://`` or ``https://`` URL.
    :param headers: request headers; values must be strings.
    :param data: the body, bytes or text (sent as UTF-8). No Content-Type is
        added for it.
    :param timeout: seconds allowed to connect and to each read, per hop;
        ``None`` uses ``http.timeout``.
    :param json: a value to send as a JSON body (encoded with orjson) with
        ``Content-Type: application/json`` unless ``headers`` sets one.
        ``None`` sends no body (send JSON ``null`` with ``data=b"null"``).
    :param follow_redirects: ``False`` returns 3xx responses as they are.
    :raises ValueError: a header or the method holds forbidden characters, or
        both ``data`` and ``json`` are given (before any I/O).
    :raises InvalidURLError: the URL, or a redirect's, is not http/https.
    :raises BlockedHostError: a hop is not allowed by ``http.allowed_hosts``
        or ``http.block_private_networks``.
    :raises ConnectError: the host does not resolve or refuses the connection.
    :raises RequestTimeout: connecting or reading took longer than ``timeout``.
    :raises TLSError: the server's certificate is untrusted or for another host.
    :raises TooManyRedirects: more than ``http.max_redirects`` redirects.
    :raises ProtocolError: the server closed the connection or broke HTTP.
    """
    if data is not None and json is not None:
        raise ValueError("Pass the body as data= or as json=, not both.")
    if data is not None and not isinstance(data, (str, bytes)):
        raise TypeError(
            f"data must be bytes or str, not {type(data).__name__}; pass a JSON value as json=."
        )
    body: bytes | None = data.encode() if isinstance(data, str) else data
    request_headers = urllib3.HTTPHeaderDict(headers or {})
    if json is not None:
        body = orjson.dumps(json)
        request_headers.setdefault("Content-Type", "application/json")
    if method is None:
        method = "GET" if body is None else "POST"
    method = method.upper()
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"Method {method!r} is not valid: use a word like GET or POST.")
    _check_headers(request_headers)
    seconds = CONFIG.setting("http.timeout") if timeout is None else timeout
    timeouts = urllib3.Timeout(connect=seconds, read=seconds)
    max_redirects = int(CONFIG.setting("http.max_redirects"))

    url = uri
    target = _parse_target(url)
    manager = _manager()
    redirects = 0
    while True:
        response = _send(manager, method, target, request_headers, body, timeouts)
        location = response.headers.get("Location")
        if not follow_redirects or response.status not in _REDIRECT_STATUSES or not location:
            break
        if redirects >= max_redirects:
            raise TooManyRedirects(
                f"{method} {_display(target)} was redirected more than {max_redirects} times; "
                "check for a redirect loop, or raise http.max_redirects.",
                url=_display(target),
            )
        redirects += 1
        url = urljoin(url, location)
        next_target = _parse_target(url)
        if _redirect_becomes_get(response.status, method):
            method, body = "GET", None
            for name in _BODY_HEADERS:
                request_headers.pop(name, None)
        if (next_target.scheme, next_target.host, next_target.port) != (
            target.scheme,
            target.host,
            target.port,
        ):
            # Credentials meant for one origin must not leak to another.
            for name in _CREDENTIAL_HEADERS:
                request_headers.pop(name, None)
        target = next_target

    level = logging.WARNING if response.status >= 400 else logging.DEBUG
    logger.log(level, "%s %s %s", response.status, method, _display(target))
    return response


def _redirect_becomes_get(status: int, method: str) -> bool:
    # What browsers do, and what RFC 9110 allows: a 303 names a resource to GET,
    # and a 301/302 answering a POST is treated the same way; the body is dropped.
    return (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST")


def _send(
    manager: _PoolManager,
    method: str,
    target: Url,
    headers: urllib3.HTTPHeaderDict,
    body: bytes | None,
    timeout: urllib3.Timeout,
) -> Response:
    shown = _display(target)
    try:
        raw = manager.urlopen(
            method,
            target.url,
            body=body,
            headers=headers,
            timeout=timeout,
            retries=False,  # failures raise at once, as urllib3's own exceptions
            redirect=False,  # kiln follows redirects itself, checking every hop
            preload_content=True,
        )
    except NameResolutionError:
        raise ConnectError(
            f"{target.host} does not resolve (DNS); check the host name in {shown}.", url=shown
        ) from None
    except NewConnectionError as exc:
        raise ConnectError(
            f"Cannot connect to {shown}: {_reason(exc)}. Check that the service is up.",
            url=shown,
        ) from exc
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        seconds = timeout.connect_timeout
        raise RequestTimeout(
            f"{method} {shown} got no answer within {seconds} s; pass a larger timeout= or "
            "raise http.timeout if the service is just slow.",
            url=shown,
        ) from exc
    except SSLError as exc:
        raise TLSError(
            f"TLS with {shown} failed: {_reason(exc)}. If the service uses a private CA, "
            "set http.ca_certs_file to its PEM file.",
            url=shown,
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise ProtocolError(f"{method} {shown} failed: {_reason(exc)}.", url=shown) from exc
    return Response(raw.status, raw.headers, raw.data)


def _reason(exc: BaseException) -> str:
    # urllib3 wraps the socket/ssl error; its innermost message is the useful one.
    while exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]
    return str(exc)


# --------------------------------------------------------------------------
# cache_control()
# --------------------------------------------------------------------------

#: Response directives of RFC 9111 section 5.2.2, RFC 8246 and RFC 5861.
CACHE_DIRECTIVES = frozenset(
    {
        "max-age",
        "must-revalidate",
        "must-understand",
        "no-cache",
        "no-store",
        "no-transform",
        "private",
        "proxy-revalidate",
        "public",
        "s-maxage",
        "immutable",
        "stale-while-revalidate",
        "stale-if-error",
    }
)
_SECONDS_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def cache_control(
    **directives: bool | int | str | None,
) -> Callable[[Callable[P, ResponseReturnValue]], Callable[P, flask.Response]]:
    """Set ``Cache-Control`` on the responses of a Flask view.

    Each keyword is a directive, ``_`` written as ``-``, in the order given:
    ``True`` gives the bare directive, ``False`` and ``None`` leave it out, a
    string gives ``name="value"`` and an integer ``name=value``. The header
    replaces one the view set; when every directive is left out, the view's
    header is kept. The view may return anything Flask accepts (``str``,
    ``dict``, a tuple, a :class:`flask.Response`).

    ::

        @app.route("/hello_cache", methods=["GET"])
        @http.cache_control(max_age=3600, public=True)
        def hello_cache():
            return "Hi!"                 # Cache-Control: max-age=3600, public

    :raises ValueError: at decoration time, for a directive that is not in
        :data:`CACHE_DIRECTIVES`, a seconds directive (``max_age``,
        ``s_maxage``, ``stale_while_revalidate``, ``stale_if_error``) without a
        non-negative integer, or a string holding CR, LF or NUL.
    :raises TypeError: at decoration time, for a value of another type.
    """
    header = ", ".join(
        part
        for name, value in directives.items()
        if (part := _directive(name.replace("_", "-").lower(), value))
    )

    def decorator(view: Callable[P, ResponseReturnValue]) -> Callable[P, flask.Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> flask.Response:
            rv = flask.make_response(view(*args, **kwargs))
            if header:
                rv.headers["Cache-Control"] = header
            return rv

        return wrapper

    return decorator


def _directive(name: str, value: object) -> str:
    if name not in CACHE_DIRECTIVES:
        raise ValueError(
            f"{name!r} is not a Cache-Control response directive; use one of "
            f"{', '.join(sorted(CACHE_DIRECTIVES))} (with _ for -)."
        )
    if value is None or value is False:
        return ""
    if name in _SECONDS_DIRECTIVES and (
        isinstance(value, bool) or not isinstance(value, int) or value < 0
    ):
        raise ValueError(
            f"{name} needs a number of seconds (a non-negative integer), got {value!r}; "
            f"write {name.replace('-', '_')}=3600."
        )
    if value is True:
        return name
    if isinstance(value, int):
        return f"{name}={value}"
    if isinstance(value, str):
        if _FORBIDDEN_IN_VALUE.search(value):
            raise ValueError(f"The {name} value {value!r} must not hold CR, LF or NUL.")
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{quoted}"'
    raise TypeError(
        f"{name} must be True, False, None, an integer or a string, got {type(value).__name__}."
    )
