"""E-mail by SMTP (stdlib smtplib): STARTTLS when configured, the password only from the environment."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from compiler.catalog import Channel
from publishers.notify.errors import DeliveryError
from publishers.notify.render import Message


def build_email(channel: Channel, recipients: Sequence[str], message: Message, key: str) -> EmailMessage:
    sender = str(channel.settings["from"])
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ", ".join(recipients)
    email["Subject"] = message.subject
    email["Date"] = formatdate(localtime=False, usegmt=True)
    # Stable per notification: a message re-sent after a lost acknowledgement carries the same id, so mail
    # systems and readers can tell it is the same message.
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tariff.invalid"
    email["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"
    email["Auto-Submitted"] = "auto-generated"
    email["X-Tariff-Idempotency-Key"] = key
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    return email


def send_email(
    channel: Channel,
    recipients: Sequence[str],
    message: Message,
    key: str,
    *,
    timeout: float,
    environ: Mapping[str, str],
) -> None:
    settings = channel.settings
    host, port = str(settings["host"]), int(settings.get("port", 587))
    where = f"SMTP {host}:{port}"
    username = settings.get("username")
    password_env = settings.get("password_env")
    password = environ.get(str(password_env)) if password_env else None
    if username and password_env and not password:
        raise DeliveryError(f"{where}: environment variable {password_env} (the SMTP password) is not set")
    email = build_email(channel, recipients, message, key)
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo()
            if settings.get("starttls", True):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if username:
                smtp.login(str(username), password or "")
            smtp.send_message(email)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(
            f"{addr} ({code} {reply.decode(errors='replace')})"
            for addr, (code, reply) in exc.recipients.items()
        )
        raise DeliveryError(f"{where}: recipient refused: {refused}", permanent=True) from exc
    except smtplib.SMTPResponseException as exc:
        reply = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        raise DeliveryError(f"{where}: {type(exc).__name__}: {exc.smtp_code} {reply}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{where}: {type(exc).__name__}: {exc or 'no answer'}") from exc
