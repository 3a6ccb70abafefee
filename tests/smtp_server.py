"""A real SMTP server for the mail tests: aiosmtpd on a loopback ephemeral port.

``SMTPServer(tls=..., security=..., users=...)`` starts an aiosmtpd
controller in a thread on a port the kernel picked (aiosmtpd itself wants a
fixed port, so the listening socket is bound first and handed over). It
records every accepted message (envelope and parsed message), every
connection and every AUTH attempt.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage


@dataclass
class Recorder:
    users: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    logins: list[str] = field(default_factory=list)
    quits: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = message_from_bytes(raw, policy=policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), raw, message))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode()
            if self.users.get(user) == auth_data.password.decode():
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _CountingSMTP(SMTP):
    def connection_made(self, transport):
        self.event_handler.connections += 1
        super().connection_made(transport)


class SMTPServer(Controller):
    """``security``: ``none``, ``starttls`` (required) or ``ssl``; ``users`` turns AUTH on."""

    def __init__(
        self,
        *,
        security: str = "none",
        server_context: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.recorder = Recorder(users=dict(users or {}))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        kwargs: dict[str, Any] = {}
        if security == "starttls":
            kwargs.update(tls_context=server_context, require_starttls=True)
        if users:
            # auth_require_tls stays True (aiosmtpd's default): AUTH only over TLS.
            kwargs.update(authenticator=self.recorder.authenticate, auth_required=True)
        super().__init__(
            self.recorder,
            hostname="127.0.0.1",
            port=self._sock.getsockname()[1],
            ssl_context=server_context if security == "ssl" else None,
            server_hostname="smtp.test",
            **kwargs,
        )

    def factory(self):
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def connections(self) -> int:
        # Minus the connection aiosmtpd's start() makes to check the server is up.
        return self.recorder.connections - 1
