from __future__ import annotations

import smtplib
import socket
import ssl
import time

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln.config
from kiln import mail
from kiln.exceptions import ConfigError
from tests.smtp_server import SMTPServer

USERS = {"alice": "s3cret"}


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def server_context(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def start(**kwargs):
    server = SMTPServer(**kwargs)
    server.start()
    return server


@pytest.fixture(scope="module")
def plain_server():
    server = start()
    yield server
    server.stop()


@pytest.fixture
def plain(plain_server, monkeypatch):
    plain_server.messages.clear()
    use_smtp(monkeypatch, plain_server)
    return plain_server


@pytest.fixture
def starttls(server_context, ca_file, monkeypatch):
    server = start(security="starttls", server_context=server_context, users=USERS)
    use_smtp(monkeypatch, server, security="starttls", ca_file=ca_file, **login())
    yield server
    server.stop()


@pytest.fixture
def smtps(server_context, ca_file, monkeypatch):
    server = start(security="ssl", server_context=server_context)
    use_smtp(monkeypatch, server, security="ssl", ca_file=ca_file)
    yield server
    server.stop()


def login(user="alice"):
    return {"username": user, "password": USERS[user]}


def use_smtp(monkeypatch, server, **smtp):
    block = {"host": "127.0.0.1", "port": server.port, "from": "test@example.com", **smtp}
    monkeypatch.setattr(kiln.config.CONFIG, "config", {"smtp": block})


# --------------------------------------------------------------------------
# The manual's examples, verbatim
# --------------------------------------------------------------------------


def test_manual_simple_example_is_delivered(plain):
    mail.sendmail("user@example.com", "Not spam I promise!", "A simple example")

    (received,) = plain.messages
    assert received.mail_from == "test@example.com"
    assert received.rcpt_tos == ["user@example.com"]
    msg = received.message
    assert msg["To"] == "user@example.com"
    assert msg["From"] == "test@example.com"
    assert msg["Subject"] == "Not spam I promise!"
    assert msg.get_content_type() == "text/html"
    assert msg.get_content().strip() == "A simple example"


def test_manual_complex_example_is_delivered(plain):
    mail.sendmail('user@example.com', 'Definitely not spam', CC=[
    'otheruser@example.com',
    'somedude@otherexample.com'
    ], BCC='outbound@example.com', From='noreply@example.com', subtype='html',
    message='<marquee><blink>YOU OBVIOUSLY LOVE OWLS</blink></marquee>')  # fmt: skip

    (received,) = plain.messages
    assert received.mail_from == "noreply@example.com"
    assert received.rcpt_tos == [
        "user@example.com",
        "otheruser@example.com",
        "somedude@otherexample.com",
        "outbound@example.com",
    ]
    msg = received.message
    assert msg.get_all("To") == ["user@example.com"]
    assert msg.get_all("Cc") == ["otheruser@example.com, somedude@otherexample.com"]
    assert msg["From"] == "noreply@example.com"
    assert msg.get_content_type() == "text/html"
    assert "<marquee><blink>YOU OBVIOUSLY LOVE OWLS</blink></marquee>" in msg.get_content()


# --------------------------------------------------------------------------
# Headers and recipients
# --------------------------------------------------------------------------


def test_bcc_is_in_the_envelope_only(plain):
    mail.sendmail("a@example.com", "s", "m", BCC=["hidden@example.com", "Eve <eve@example.com>"])

    (received,) = plain.messages
    assert received.rcpt_tos == ["a@example.com", "hidden@example.com", "eve@example.com"]
    assert "Bcc" not in received.message
    assert b"hidden@example.com" not in received.raw
    assert b"eve@example.com" not in received.raw


def test_many_recipients_give_one_comma_joined_to_header(plain):
    mail.sendmail(
        ["a@example.com", "Bob <b@example.com>", "c@example.com, d@example.com"], "s", "m"
    )

    (received,) = plain.messages
    assert received.message.get_all("To") == [
        "a@example.com, Bob <b@example.com>, c@example.com, d@example.com"
    ]
    assert received.rcpt_tos == ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]


def test_a_recipient_listed_twice_is_sent_once(plain):
    mail.sendmail("a@example.com", "s", "m", CC="a@example.com", BCC="a@example.com")

    assert plain.messages[0].rcpt_tos == ["a@example.com"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Reply_To": "help@example.com"},
        {"Reply-To": "help@example.com"},
        {"reply_to": "help@example.com"},
    ],
)
def test_reply_to_is_accepted_with_a_dash_or_an_underscore(plain, headers):
    mail.sendmail("a@example.com", "s", "m", **headers)

    assert plain.messages[0].message.get_all("Reply-To") == ["help@example.com"]


def test_address_header_names_are_case_insensitive_and_merge(plain):
    mail.sendmail(
        "a@example.com", "s", "m", CC="b@example.com", cc=["c@example.com"], To="d@example.com"
    )

    msg = plain.messages[0].message
    assert msg.get_all("Cc") == ["b@example.com, c@example.com"]
    assert msg.get_all("To") == ["a@example.com, d@example.com"]


def test_other_headers_are_passed_through_one_line_per_value(plain):
    mail.sendmail(
        "a@example.com", "s", "m", X_Tag=["one", "two"], X_Mailer="kiln", List_Id="<l.example.com>"
    )

    msg = plain.messages[0].message
    assert msg.get_all("X-Tag") == ["one", "two"]
    assert msg["X-Mailer"] == "kiln"
    assert msg["List-Id"] == "<l.example.com>"


def test_returns_the_message_id_that_was_sent(plain):
    message_id = mail.sendmail("a@example.com", "s", "m")

    assert plain.messages[0].message["Message-ID"] == message_id
    assert message_id.endswith("@example.com>")


def test_a_given_message_id_and_date_are_kept(plain):
    date = "Mon, 01 Jan 2024 10:00:00 +0000"
    rv = mail.sendmail("a@example.com", "s", "m", Message_ID="<fixed@example.com>", Date=date)

    assert rv == "<fixed@example.com>"
    assert plain.messages[0].message["Date"] == date


def test_non_ascii_subject_body_and_names_round_trip(plain):
    mail.sendmail("Zoë <z@example.com>", "Café ☕", "<p>naïve</p>", From="Rémi <r@example.com>")

    msg = plain.messages[0].message
    assert msg["Subject"] == "Café ☕"
    assert msg["To"].addresses[0].display_name == "Zoë"
    assert msg["From"].addresses[0].display_name == "Rémi"
    assert msg.get_content().strip() == "<p>naïve</p>"


@pytest.mark.parametrize(
    ("subtype", "charset"), [("plain", "utf-8"), ("plain", "iso-8859-1"), ("html", "utf-8")]
)
def test_subtype_and_charset_shape_the_body(plain, subtype, charset):
    mail.sendmail("a@example.com", "s", "déjà vu", subtype=subtype, charset=charset)

    msg = plain.messages[0].message
    assert msg.get_content_type() == f"text/{subtype}"
    assert msg.get_content_charset() == charset
    assert msg.get_content().strip() == "déjà vu"


def test_cc_only_recipients_are_enough(plain):
    mail.sendmail([], "s", "m", CC="c@example.com")

    (received,) = plain.messages
    assert "To" not in received.message
    assert received.rcpt_tos == ["c@example.com"]


def test_partially_refused_recipients_are_logged(plain, caplog):
    mail.sendmail(["a@example.com", "refuse@example.com"], "s", "m")

    assert plain.messages[0].rcpt_tos == ["a@example.com"]
    assert "refused for 1 recipient(s): refuse@example.com" in caplog.text


# --------------------------------------------------------------------------
# Attachments
# --------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00binary\xff"


@pytest.mark.parametrize(
    ("filename", "content", "mime_type", "payload"),
    [
        ("logo.png", PNG, "image/png", PNG),
        ("notes.txt", "héllo\n", "text/plain", "héllo\n".encode()),
        ("data.weird-ext", b"\x00\x01", "application/octet-stream", b"\x00\x01"),
        ("report", (b"%PDF-1.4", "application/pdf"), "application/pdf", b"%PDF-1.4"),
        ("été.csv", ("a,b\n", "text/csv"), "text/csv", b"a,b\n"),
        ("blob.bin", "é", "application/octet-stream", "é".encode()),
    ],
)
def test_attachments_of_any_type_make_a_mixed_message(plain, filename, content, mime_type, payload):
    mail.sendmail("a@example.com", "s", "<p>see attached</p>", attachments={filename: content})

    msg = plain.messages[0].message
    assert msg.get_content_type() == "multipart/mixed"
    body, attachment = msg.iter_parts()
    assert body.get_content_type() == "text/html"
    assert attachment.get_content_type() == mime_type
    assert attachment.get_filename() == filename
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_payload(decode=True) == payload


def test_text_attachments_given_as_str_carry_the_charset(plain):
    mail.sendmail("a@example.com", "s", "m", charset="iso-8859-1", attachments={"n.txt": "café"})

    (attachment,) = plain.messages[0].message.iter_attachments()
    assert attachment.get_content_charset() == "iso-8859-1"
    assert attachment.get_content() == "café"


def test_an_attachment_with_a_malformed_type_is_refused(nothing_sent):
    with pytest.raises(ValueError, match="not a MIME type"):
        mail.sendmail("a@example.com", "s", "m", attachments={"x": (b"x", "pdf")})


# --------------------------------------------------------------------------
# Refused input: nothing is sent, no connection is opened
# --------------------------------------------------------------------------


@pytest.fixture
def nothing_sent(plain):
    before = plain.connections
    yield
    assert plain.connections == before
    assert plain.messages == []


@pytest.mark.parametrize(
    "address",
    ["not-an-address", "a@", "@example.com", "a b@example.com", "", "   ", "a@example.com, junk",
     "foo@bar@baz", "a..b@example.com", "é@example.com", "a@example.com;b@example.com"],
)  # fmt: skip
@pytest.mark.parametrize("where", ["mailto", "CC", "BCC", "From", "Reply_To"])
def test_invalid_addresses_raise_before_connecting(nothing_sent, address, where):
    kwargs = {"mailto": "ok@example.com", "subject": "s", "message": "m", where: address}
    with pytest.raises(ValueError, match="not a valid address list"):
        mail.sendmail(**kwargs)


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"Subject": "x"}, "subject"),
        ({"Content_Type": "text/plain"}, "subtype"),
        ({"MIME-Version": "2.0"}, "kiln sets it"),
        ({"X Bad": "x"}, "not a valid header name"),
        ({"X:Bad": "x"}, "not a valid header name"),
        ({"X-Ünï": "x"}, "not a valid header name"),
        ({"From": ["a@example.com", "b@example.com"]}, "exactly one address"),
    ],
)
def test_reserved_or_malformed_headers_raise(nothing_sent, headers, match):
    with pytest.raises(ValueError, match=match):
        mail.sendmail("a@example.com", "s", "m", **headers)


@pytest.mark.parametrize("value", [3, ["ok", None], b"bytes"])
def test_header_values_must_be_strings(nothing_sent, value):
    with pytest.raises(TypeError, match="must be a string or a list of strings"):
        mail.sendmail("a@example.com", "s", "m", X_Tag=value)


def test_no_sender_raises(nothing_sent, monkeypatch, plain):
    use_smtp(monkeypatch, plain, **{"from": None})
    with pytest.raises(ValueError, match="No sender"):
        mail.sendmail("a@example.com", "s", "m")


def test_no_recipient_raises(nothing_sent):
    with pytest.raises(ValueError, match="No recipient"):
        mail.sendmail([], "s", "m")


BAD = st.sampled_from(["\r", "\n", "\0", "\r\n"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=10)


def injected():
    return st.builds(lambda a, bad, b: a + bad + b, TEXT, BAD, TEXT)


hypothesis_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@hypothesis_settings
@given(subject=injected())
def test_cr_lf_nul_in_the_subject_raise(nothing_sent, subject):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        mail.sendmail("a@example.com", subject, "m")


@hypothesis_settings
@given(address=injected(), where=st.sampled_from(["mailto", "CC", "BCC", "From", "Reply_To"]))
def test_cr_lf_nul_in_addresses_raise(nothing_sent, address, where):
    kwargs = {"mailto": "ok@example.com", "subject": "s", "message": "m", where: [address]}
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        mail.sendmail(**kwargs)


@hypothesis_settings
@given(name=injected())
def test_cr_lf_nul_in_header_names_raise(nothing_sent, name):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        mail.sendmail("a@example.com", "s", "m", **{"X-" + name: "v"})


@hypothesis_settings
@given(value=injected(), name=st.sampled_from(["X-Tag", "Reply-To", "Date", "Message-ID"]))
def test_cr_lf_nul_in_header_values_raise(nothing_sent, value, name):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        mail.sendmail("a@example.com", "s", "m", **{name: value})


@hypothesis_settings
@given(filename=injected())
def test_cr_lf_nul_in_attachment_filenames_raise(nothing_sent, filename):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        mail.sendmail("a@example.com", "s", "m", attachments={filename: b"x"})


def test_cr_lf_in_the_configured_sender_raise(nothing_sent, monkeypatch, plain):
    use_smtp(monkeypatch, plain, **{"from": "a@example.com\r\nBcc: victim@example.com"})
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        mail.sendmail("a@example.com", "s", "m")


# --------------------------------------------------------------------------
# TLS, AUTH, timeouts
# --------------------------------------------------------------------------


def test_starttls_with_auth_delivers(starttls):
    mail.sendmail("a@example.com", "over tls", "m")

    assert starttls.recorder.logins == ["alice"]
    assert starttls.messages[0].message["Subject"] == "over tls"


def test_starttls_without_trusting_the_ca_fails_verification(starttls, monkeypatch):
    use_smtp(monkeypatch, starttls, security="starttls", **login())
    with pytest.raises(ssl.SSLCertVerificationError):
        mail.sendmail("a@example.com", "s", "m")
    assert starttls.messages == []


def test_verify_false_is_never_silent(starttls, monkeypatch, caplog):
    use_smtp(monkeypatch, starttls, security="starttls", verify=False, **login())
    mail.sendmail("a@example.com", "s", "m")

    assert len(starttls.messages) == 1
    assert "TLS certificate verification is OFF" in caplog.text


def test_wrong_password_raises_and_closes_the_connection(starttls, monkeypatch, ca_file):
    use_smtp(
        monkeypatch, starttls, security="starttls", ca_file=ca_file, username="alice", password="no"
    )
    with pytest.raises(smtplib.SMTPAuthenticationError):
        mail.sendmail("a@example.com", "s", "m")
    assert starttls.messages == []
    assert starttls.recorder.quits == 1


def test_server_requiring_starttls_refuses_a_plain_session(starttls, monkeypatch):
    use_smtp(monkeypatch, starttls)
    with pytest.raises(smtplib.SMTPException):
        mail.sendmail("a@example.com", "s", "m")
    assert starttls.messages == []


def test_use_starttls_is_deprecated_but_works(starttls, monkeypatch, ca_file):
    use_smtp(monkeypatch, starttls, ca_file=ca_file, **login())
    with pytest.warns(DeprecationWarning, match="smtp.security"):
        mail.sendmail("a@example.com", "s", "m", use_starttls=True)
    assert len(starttls.messages) == 1


def test_use_starttls_leaves_smtps_alone(smtps):
    with pytest.warns(DeprecationWarning, match="use_starttls"):
        mail.sendmail("a@example.com", "s", "m", use_starttls=True)
    assert len(smtps.messages) == 1


def test_smtps_delivers(smtps):
    mail.sendmail("a@example.com", "over ssl", "m")

    assert smtps.messages[0].message["Subject"] == "over ssl"


def test_smtps_checks_the_host_name(smtps, monkeypatch, ca_file):
    use_smtp(monkeypatch, smtps, host="localhost", security="ssl", ca_file=ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        mail.sendmail("a@example.com", "s", "m")


def test_a_silent_server_times_out(monkeypatch):
    # A listening socket that never answers: the greeting never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        smtp = {"host": "127.0.0.1", "port": silent.getsockname()[1], "from": "t@example.com"}
        monkeypatch.setattr(kiln.config.CONFIG, "config", {"smtp": {**smtp, "timeout": 0.2}})
        started = time.monotonic()
        # smtplib reports a read timeout as SMTPServerDisconnected (an OSError).
        with pytest.raises(OSError, match="timed out"):
            mail.sendmail("a@example.com", "s", "m")
        assert time.monotonic() - started < 2


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def test_smtpconfig_names_another_config_block(plain, monkeypatch):
    other = {"host": "127.0.0.1", "port": plain.port, "from": "otherfrom@example.com"}
    monkeypatch.setattr(
        kiln.config.CONFIG, "config", {"smtp": {"host": "nowhere.invalid"}, "othersmtp": other}
    )
    mail.sendmail("a@example.com", "s", "m", smtpconfig="othersmtp")

    assert plain.messages[0].mail_from == "otherfrom@example.com"


def test_smtpconfig_can_be_a_mapping(plain, monkeypatch):
    monkeypatch.setattr(kiln.config.CONFIG, "config", {})
    mail.sendmail(
        "a@example.com",
        "s",
        "m",
        smtpconfig={"host": "127.0.0.1", "port": plain.port, "from": "d@example.com"},
    )

    assert plain.messages[0].mail_from == "d@example.com"


def test_the_legacy_mail_block_is_read_when_smtp_is_absent(plain, monkeypatch):
    block = {"host": "127.0.0.1", "port": plain.port, "from": "legacy@example.com"}
    monkeypatch.setattr(kiln.config.CONFIG, "config", {"mail": block})
    mail.sendmail("a@example.com", "s", "m")

    assert plain.messages[0].mail_from == "legacy@example.com"


def test_settings_are_read_at_call_time(plain, monkeypatch):
    mail.sendmail("a@example.com", "s", "m")
    use_smtp(monkeypatch, plain, **{"from": "changed@example.com"})
    mail.sendmail("a@example.com", "s", "m")

    assert [m.mail_from for m in plain.messages] == ["test@example.com", "changed@example.com"]


@pytest.mark.parametrize(
    ("tree", "smtpconfig", "match"),
    [
        ({}, "othersmtp", "names no mapping"),
        ({"othersmtp": "x"}, "othersmtp", "names no mapping"),
        ({"smtp": ["x"]}, None, "must be a mapping"),
        ({"smtp": {"security": "tls"}}, None, "smtp.security must be one of"),
        ({"smtp": {"port": "25"}}, None, "smtp.port must be an integer"),
        ({"smtp": {"username": "u"}}, None, "must be set together"),
        ({}, {"password": "p"}, "smtpconfig.username and smtpconfig.password"),
    ],
)
def test_wrong_smtp_settings_raise_config_error(monkeypatch, tree, smtpconfig, match):
    monkeypatch.setattr(kiln.config.CONFIG, "config", tree)
    with pytest.raises(ConfigError, match=match):
        mail.sendmail("a@example.com", "s", "m", smtpconfig=smtpconfig)


@pytest.mark.parametrize(("security", "port"), [("none", 25), ("starttls", 587), ("ssl", 465)])
def test_the_port_defaults_by_security(security, port):
    assert mail._smtp_settings({"security": security})["port"] == port


def test_registered_settings_are_documented_and_reloadable():
    for key in (
        "host",
        "port",
        "username",
        "password",
        "from",
        "security",
        "timeout",
        "ca_file",
        "verify",
    ):
        setting = kiln.config.SETTINGS[f"smtp.{key}"]
        assert setting.reload is True
        assert setting.doc
    assert kiln.config.validate({"smtp": {"security": "starttls", "port": 587}}) == []
    assert kiln.config.validate({"smtp": {"security": "tls"}})
