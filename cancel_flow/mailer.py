"""Sending email over SMTP (or printing it to the console in development), with headers that can't be broken.

Customer names, plan names and addresses come from Stripe, which takes line breaks in them. A header value
holding one would make Python refuse the message, or, written as it is, add headers of its own: so every
header value is put on one line (line breaks and other control characters become spaces), and the recipient
is the address the value starts with, or the message is refused as one no retry can send."""

import smtplib
import sys
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Callable
from urllib.parse import unquote, urlsplit

from cancel_flow.logs import log_event
from cancel_flow.settings import Settings


# Header lines up to RFC 5322's limit of 998 characters: a List-Unsubscribe link is longer than the usual 78,
# and folded at 78 Python writes it as encoded words, which mail clients don't read as a link.
POLICY = policy.default.clone(max_line_length=998)


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...] = ()  # more headers (List-Unsubscribe…), as (name, value)


class MailNotConfigured(Exception):
    pass


class MessageRefused(ValueError):
    """The message can't be written as it is (no usable recipient address): sending it again can't help."""


def one_line(value: str) -> str:
    """A header value on one line: line breaks and other control characters become spaces, runs of them one."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in value or "").split())


def recipient(value: str) -> str:
    """The address to write to: the one `value` starts with (whatever follows a line break is not an address)."""
    words = one_line(value).split(" ", 1)
    try:
        address = Address(addr_spec=words[0])
    except (ValueError, IndexError, HeaderParseError):
        address = None
    if address is None or not address.username or not address.domain:
        raise MessageRefused(f"{one_line(value)[:100]!r} is not an email address this can be sent to")
    return address.addr_spec


def compose(sender: str, message: Message) -> EmailMessage:
    """The message as it goes out; MessageRefused when no address can be read from `to`, or a header can't be written."""
    email = EmailMessage(policy=POLICY)
    try:
        email["From"], email["To"] = one_line(sender), recipient(message.to)
        email["Subject"] = one_line(message.subject)
        for name, value in message.headers:
            email[name] = one_line(value)
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
    except MessageRefused:
        raise
    except (ValueError, TypeError, HeaderParseError) as error:
        raise MessageRefused(f"the message can't be written: {error}"[:300]) from None
    return email


class Mailer:
    """`sender` is an address, or a function giving the current one (the brand's support email can change
    while the service runs)."""

    def __init__(self, settings: Settings, sender: str | Callable[[], str]):
        self.settings, self._sender = settings, sender

    @property
    def sender(self) -> str:
        return self._sender() if callable(self._sender) else self._sender

    @property
    def can_send(self) -> bool:
        return bool(self.settings.smtp_url) or self.settings.is_development

    def send(self, message: Message) -> None:
        if self.settings.smtp_url:
            self._smtp(compose(self.sender, message))
        elif self.settings.is_development:
            # Development only: the links carry tokens, so they go to the console, never to the logs.
            print(f"--- email to {one_line(message.to)}: {one_line(message.subject)}\n{message.text}\n---",
                  file=sys.stdout, flush=True)
        else:
            raise MailNotConfigured

    def _smtp(self, email: EmailMessage) -> None:
        url = urlsplit(self.settings.smtp_url)
        connect = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
        with connect(url.hostname or "localhost", url.port or (465 if url.scheme == "smtps" else 25), timeout=15) as server:
            if url.scheme == "smtp":
                server.ehlo()
                if server.has_extn("starttls"):
                    server.starttls()
                    server.ehlo()
            if url.username:
                server.login(unquote(url.username), unquote(url.password or ""))
            server.send_message(email, to_addrs=[str(email["To"])])  # the one cleaned address, never more
        log_event("mail.sent", kind="links")
