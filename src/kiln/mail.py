"""Send email through the SMTP server of the ``smtp`` settings.

:func:`sendmail` is Clay's ``clay.mail.sendmail`` with its bugs fixed: one
comma-joined ``To``/``Cc`` header, ``Bcc`` only in the envelope, STARTTLS
and SMTPS with verified certificates, attachments of any type, a timeout on
every connection, and a connection that is always closed.

Every argument is checked before a connection is opened: a CR, LF or NUL in
a header name or value, a malformed header name or an invalid address raises
:class:`ValueError` and nothing is sent. Settings are read at each call, so a
config reload applies to the next message.

Example::

    from kiln import mail

    mail.sendmail("user@example.com", "Not spam I promise!", "A simple example")
    mail.sendmail(
        "user@example.com",
        "Your report",
        "<p>Attached.</p>",
        CC=["boss@example.com"],
        BCC="archive@example.com",
        Reply_To="support@example.com",
        attachments={"report.pdf": pdf_bytes},
    )
"""

from __future__ import annotations

import logging
import mimetypes
import re
import smtplib
import ssl
import warnings
from collections.abc import Iterable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from typing import Any

from kiln import config
from kiln.config import SETTINGS, Setting, register_setting
from kiln.exceptions import ConfigError

__all__ = ["HeaderValue", "sendmail"]

logger = logging.getLogger("kiln.mail")

#: A header value: one string, or several (joined for address headers).
HeaderValue = str | Iterable[str]
#: An attachment: its content, or ``(content, "type/subtype")``.
Attachment = bytes | str | tuple[bytes | str, str]

_SECURITY_PORTS = {"none": 25, "starttls": 587, "ssl": 465}

for _setting in (
    Setting("smtp.host", (str,), "localhost", "SMTP server host name.", True),
    Setting(
        "smtp.port",
        (int, None),
        None,
        "SMTP server port. Default: 25, 587 with `starttls`, 465 with `ssl`.",
        True,
    ),
    Setting(
        "smtp.username",
        (str, None),
        None,
        "SMTP AUTH user name; kiln logs in only when username and password are both set.",
        True,
    ),
    Setting("smtp.password", (str, None), None, "SMTP AUTH password.", True),
    Setting(
        "smtp.from",
        (str, None),
        None,
        "Default `From` address of `kiln.mail.sendmail` (a `From=` argument overrides it).",
        True,
    ),
    Setting(
        "smtp.security",
        (str,),
        "none",
        "Transport security: `none`, `starttls` (upgrade a plain connection) or `ssl` (SMTPS).",
        True,
        ("none", "starttls", "ssl"),
    ),
    Setting(
        "smtp.timeout", (int, float), 10.0, "Seconds allowed to each SMTP socket operation.", True
    ),
    Setting(
        "smtp.ca_file",
        (str, None),
        None,
        "PEM file of the CAs trusted for the SMTP server's certificate. "
        "Default: the system's trust store.",
        True,
    ),
    Setting(
        "smtp.verify",
        (bool,),
        True,
        "Verify the SMTP server's TLS certificate and host name. `false` is logged as a "
        "warning at every connection.",
        True,
    ),
):
    register_setting(_setting)

_SMTP_KEYS = tuple(key.removeprefix("smtp.") for key in SETTINGS if key.startswith("smtp."))

#: Headers whose values are address lists: comma-joined into one header line.
_ADDRESS_HEADERS = {
    "to": "To",
    "cc": "Cc",
    "bcc": "Bcc",
    "from": "From",
    "reply-to": "Reply-To",
    "sender": "Sender",
}
#: Headers sendmail builds itself; a caller setting them would be ignored or clash.
_RESERVED_HEADERS = {
    "subject": "pass the subject as the `subject` argument",
    "content-type": "use `subtype=`, `charset=` and `attachments=`",
    "content-transfer-encoding": "kiln chooses the encoding",
    "content-disposition": "use `attachments=`",
    "mime-version": "kiln sets it",
}
#: RFC 5322 field names: printable US-ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_FORBIDDEN = re.compile(r"[\r\n\0]")


def sendmail(
    mailto: HeaderValue,
    subject: str,
    message: str,
    subtype: str = "html",
    charset: str = "utf-8",
    smtpconfig: Mapping[str, Any] | str | None = None,
    attachments: Mapping[str, Attachment] | None = None,
    use_starttls: bool = False,
    **headers: HeaderValue,
) -> str:
    """Send ``message`` to ``mailto`` and return its ``Message-ID``.

    :param mailto: the ``To`` address, or a list of them (``"Name <a@b.c>"``
        forms are fine; a string may hold several comma-separated addresses).
    :param subject: the ``Subject`` header.
    :param message: the body, of type ``text/<subtype>`` in ``charset``.
    :param smtpconfig: the SMTP settings to use instead of the ``smtp``
        block: a mapping with the same keys, or the dotted name of another
        config block (``"othersmtp"``, as Clay's tests used).
    :param attachments: ``{filename: content}``; content is ``bytes``,
        ``str`` (encoded with ``charset``) or ``(content, "type/subtype")``.
        Without an explicit type it is guessed from the filename, else
        ``application/octet-stream``. The message becomes
        ``multipart/mixed``.
    :param use_starttls: deprecated (Clay's unreleased flag); set
        ``smtp.security: starttls`` instead.
    :param headers: more headers, a string or a list of strings each.
        Underscores become dashes (``Reply_To=`` is ``Reply-To``), so is
        ``**{"Reply-To": ...}``. ``To``, ``Cc``, ``Bcc``, ``From``,
        ``Reply-To`` and ``Sender`` are address headers, matched
        case-insensitively (``CC=``, ``cc=``) and written as one
        comma-joined line; ``Bcc`` goes only into the envelope. ``From``
        defaults to ``smtp.from``. Other headers with several values give
        one line per value.
    :raises ValueError: a header name or value holds CR, LF or NUL, a header
        name is malformed or reserved, an address is invalid, or there is no
        sender or no recipient. Nothing has been sent.
    :raises TypeError: a header value is neither a string nor a list of strings.
    :raises ConfigError: an SMTP setting has a wrong type or value.
    :raises OSError: the delivery failed (``smtplib.SMTPException``,
        ``ssl.SSLError`` and ``TimeoutError`` are ``OSError`` subclasses).
    """
    settings = _smtp_settings(smtpconfig)
    if use_starttls:
        warnings.warn(
            "sendmail(use_starttls=True) is deprecated; set smtp.security to 'starttls'.",
            DeprecationWarning,
            stacklevel=2,
        )
        if settings["security"] == "none":
            settings["security"] = "starttls"
    msg, sender, recipients = _build_message(
        mailto, subject, message, subtype, charset, attachments or {}, headers, settings["from"]
    )
    refused = _deliver(msg, sender, recipients, settings)
    if refused:
        logger.warning(
            "Email %s was refused for %d recipient(s): %s",
            msg["Message-ID"],
            len(refused),
            ", ".join(sorted(refused)),
        )
    logger.info(
        "Sent email %s to %d recipient(s) (Subject: %s)",
        msg["Message-ID"],
        len(recipients) - len(refused),
        subject,
    )
    return str(msg["Message-ID"])


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def _smtp_settings(smtpconfig: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if smtpconfig is None:
        # Clay's legacy block name ``mail`` still works when ``smtp`` is absent.
        where = "smtp" if config.get("smtp") is not None else "mail"
        block = config.get(where, {})
    elif isinstance(smtpconfig, str):
        where = smtpconfig
        block = config.get(smtpconfig)
        if not isinstance(block, Mapping):
            raise ConfigError(
                f"smtpconfig={smtpconfig!r} names no mapping in the config; "
                "add that block or pass the settings as a dict."
            )
    else:
        where, block = "smtpconfig", smtpconfig
    if not isinstance(block, Mapping):
        raise ConfigError(f"Config key {where!r} must be a mapping of SMTP settings.")
    settings: dict[str, Any] = {}
    for name in _SMTP_KEYS:
        setting = SETTINGS[f"smtp.{name}"]
        value = block.get(name, setting.default)
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"SMTP setting {where}.{name} {problem}.")
        settings[name] = value
    if (settings["username"] is None) != (settings["password"] is None):
        raise ConfigError(
            f"SMTP settings {where}.username and {where}.password must be set together "
            "(or both left unset to send without AUTH)."
        )
    if settings["port"] is None:
        settings["port"] = _SECURITY_PORTS[settings["security"]]
    return settings


# --------------------------------------------------------------------------
# Building the message (no I/O)
# --------------------------------------------------------------------------


def _check_text(what: str, text: str) -> None:
    if _FORBIDDEN.search(text):
        raise ValueError(
            f"{what} contains a CR, LF or NUL character ({text!r}); "
            "remove it, header injection is refused."
        )


def _values(name: str, value: HeaderValue) -> list[str]:
    values = [value] if isinstance(value, str | bytes) or not isinstance(value, Iterable) else value
    for item in values:
        if not isinstance(item, str):
            raise TypeError(f"Header {name!r} must be a string or a list of strings, got {item!r}.")
        _check_text(f"Header {name!r}", item)
    return list(values)


def _addresses(name: str, values: list[str], parse_as: str | None = None) -> list[Address]:
    parsed: list[Address] = []
    for value in values:
        try:
            header = SMTP_POLICY.header_factory(parse_as or name, value)
            defects, found = header.defects, header.addresses
        except Exception:  # The parser raises IndexError on some malformed input ("a@").
            defects, found = ("unparsable",), ()
        if defects or not found or any(not a.username or not a.domain for a in found):
            raise ValueError(
                f"{name} {value!r} is not a valid address list; write each address as "
                "'local-part@domain' or 'Name <local-part@domain>', separated by commas."
            )
        parsed.extend(found)
    return parsed


def _header_name(raw: str) -> str:
    name = raw.replace("_", "-")
    _check_text("A header name", name)
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(
            f"{raw!r} is not a valid header name; use printable ASCII without spaces or colons."
        )
    lowered = name.lower()
    if lowered in _RESERVED_HEADERS:
        raise ValueError(f"Header {name!r} cannot be set: {_RESERVED_HEADERS[lowered]}.")
    return _ADDRESS_HEADERS.get(lowered, name)


def _build_message(
    mailto: HeaderValue,
    subject: str,
    message: str,
    subtype: str,
    charset: str,
    attachments: Mapping[str, Attachment],
    headers: Mapping[str, HeaderValue],
    default_from: str | None,
) -> tuple[EmailMessage, Address, list[str]]:
    _check_text("The subject", subject)
    addresses: dict[str, list[Address]] = {"To": _addresses("To", _values("To", mailto))}
    others: list[tuple[str, list[str]]] = []
    for raw_name, value in headers.items():
        name = _header_name(raw_name)
        values = _values(name, value)
        if name in _ADDRESS_HEADERS.values():
            addresses.setdefault(name, []).extend(_addresses(name, values))
        else:
            others.append((name, values))
    if "From" not in addresses:
        if not default_from:
            raise ValueError("No sender: pass From='you@example.com' or set smtp.from.")
        addresses["From"] = _addresses(
            "smtp.from", _values("smtp.from", default_from), parse_as="From"
        )
    if len(addresses["From"]) != 1:
        raise ValueError("From must be exactly one address; put the others in Reply-To.")
    sender = addresses["From"][0]
    if not any(addresses.get(name) for name in ("To", "Cc", "Bcc")):
        raise ValueError("No recipient: give at least one address in mailto, CC or BCC.")
    recipients = list(
        dict.fromkeys(
            address.addr_spec for name in ("To", "Cc", "Bcc") for address in addresses.get(name, [])
        )
    )

    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Subject"] = subject
    for name, values_ in addresses.items():
        if name != "Bcc" and values_:  # Bcc recipients are in the envelope only.
            msg[name] = values_
    for name, values in others:
        for value in values:
            msg[name] = value
    if "Date" not in msg:
        msg["Date"] = formatdate(localtime=True)
    if "Message-ID" not in msg:
        # The sender's domain, not socket.getfqdn(): no DNS lookup, and a
        # meaningful right-hand side.
        msg["Message-ID"] = make_msgid(domain=sender.domain)
    msg.set_content(message, subtype=subtype, charset=charset)
    for filename, attachment in attachments.items():
        _attach(msg, filename, attachment, charset)
    return msg, sender, recipients


def _attach(msg: EmailMessage, filename: str, attachment: Attachment, charset: str) -> None:
    _check_text("An attachment filename", filename)
    if isinstance(attachment, tuple):
        content, mime_type = attachment
    else:
        content, mime_type = attachment, None
    mime_type = mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    maintype, _, subtype = mime_type.partition("/")
    if not (_FIELD_NAME.fullmatch(maintype) and _FIELD_NAME.fullmatch(subtype)):
        raise ValueError(
            f"Attachment {filename!r}: {mime_type!r} is not a MIME type; "
            "write it as 'type/subtype'."
        )
    params = {}
    if isinstance(content, str):
        content = content.encode(charset)
        if maintype == "text":
            params["charset"] = charset
    msg.add_attachment(content, maintype, subtype, filename=filename, params=params)


# --------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------


def _tls_context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings["ca_file"])
    if not settings["verify"]:
        logger.warning(
            "TLS certificate verification is OFF for SMTP server %s:%s (smtp.verify: false); "
            "set smtp.ca_file to the server's CA instead.",
            settings["host"],
            settings["port"],
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _deliver(
    msg: EmailMessage, sender: Address, recipients: list[str], settings: Mapping[str, Any]
) -> dict[str, tuple[int, bytes]]:
    host, port, timeout = settings["host"], settings["port"], settings["timeout"]
    security = settings["security"]
    smtp: smtplib.SMTP
    if security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=_tls_context(settings))
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    # The context manager sends QUIT and closes the socket, even on error.
    with smtp:
        if security == "starttls":
            smtp.starttls(context=_tls_context(settings))
        if settings["username"] is not None:
            smtp.login(settings["username"], settings["password"])
        return smtp.send_message(msg, from_addr=sender.addr_spec, to_addrs=recipients)
