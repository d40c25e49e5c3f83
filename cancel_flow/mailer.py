"""Sending the shared page's email (SMTP), or printing it to the console in development."""

import smtplib
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Callable
from urllib.parse import unquote, urlsplit

from cancel_flow.logs import log_event
from cancel_flow.settings import Settings


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    text: str
    html: str


class MailNotConfigured(Exception):
    pass


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
            self._smtp(message)
        elif self.settings.is_development:
            # Development only: the links carry tokens, so they go to the console, never to the logs.
            print(f"--- email to {message.to}: {message.subject}\n{message.text}\n---", file=sys.stdout, flush=True)
        else:
            raise MailNotConfigured

    def _smtp(self, message: Message) -> None:
        url = urlsplit(self.settings.smtp_url)
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.sender, message.to, message.subject
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
        connect = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
        with connect(url.hostname or "localhost", url.port or (465 if url.scheme == "smtps" else 25), timeout=15) as server:
            if url.scheme == "smtp":
                server.ehlo()
                if server.has_extn("starttls"):
                    server.starttls()
                    server.ehlo()
            if url.username:
                server.login(unquote(url.username), unquote(url.password or ""))
            server.send_message(email)
        log_event("mail.sent", kind="links")
