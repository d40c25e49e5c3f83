"""Errors that reach the subscriber, the coach or an API client.

CancelFlowError            every domain error; carries the HTTP status and a message for people
├── InvalidLink            400 "This link is not valid"
├── ExpiredLink            410 the link is too old; offers a fresh one
├── BadRequest             400 a form or body the flow cannot accept
├── Forbidden              403 the signed-in coach may not make this change
├── NotFound               404
├── Conflict               409 another decision for this subscription came first, or is being applied
├── StripeUnavailable      503 Stripe failed or timed out; nothing was changed
└── RecordPending          503 Stripe applied the choice, our record of it failed; reconciled later
SettingsError              a missing or invalid setting; stops start-up with one line
└── InvalidConfig          the configuration (file, form or API) refused, naming the field; nothing saved

A domain error's title and message are written in English with `%(name)s` placeholders and marked for the
catalogs where they are raised (N_); a client's page shows them in the client's language (`title_in`,
`message_in`), the API and the logs in English (`title`, `message`). A value may be a function of the language
(an offer's title as the coach wrote it per language).
"""

from cancel_flow.i18n import DEFAULT, N_, gettext
from cancel_flow.money import format_number


class CancelFlowError(Exception):
    status_code = 400
    title = N_("Something went wrong")

    def __init__(self, message: str, *, title: str | None = None, **values):
        self.template, self.values = message, values
        if title:
            self.title = title
        self.message = self.message_in(DEFAULT)
        super().__init__(self.message)

    def title_in(self, language: str) -> str:
        return gettext(language, self.title)

    def message_in(self, language: str) -> str:
        if not self.values:
            return gettext(language, self.template)
        return gettext(language, self.template, **{name: _value(value, language) for name, value in self.values.items()})


def _value(value, language: str):
    if callable(value):
        return value(language)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value, language)
    return value


class InvalidLink(CancelFlowError):
    status_code = 400
    title = N_("This link is not valid")


class ExpiredLink(CancelFlowError):
    status_code = 410
    title = N_("This link has expired")


class BadRequest(CancelFlowError):
    status_code = 400
    title = N_("We couldn't use that")


class Forbidden(CancelFlowError):
    status_code = 403
    title = "Not allowed"


class NotFound(CancelFlowError):
    status_code = 404
    title = N_("Not found")


class Conflict(CancelFlowError):
    status_code = 409
    title = N_("Already decided")


class StripeUnavailable(CancelFlowError):
    status_code = 503
    title = N_("We couldn't do that just now")
    maybe_applied = False  # a write that timed out may still have happened at Stripe
    in_flight = False  # no answer came at all: the request may still be running at Stripe


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line naming it."""


class RecordPending(CancelFlowError):
    status_code = 503
    title = N_("Almost done")


class PortalRefused(StripeUnavailable):
    """Stripe refused to open a portal session (e.g. the subscription is already set to cancel)."""


class InvalidConfig(SettingsError):
    """A configuration refused by the one validator (cancel_flow/config/validate.py).

    `field` is a dotted path ("brand.color", "offer.pause.max_payments"); `message` names the place and
    the problem in words; `source` (a file) prefixes the one line that stops start-up."""

    def __init__(self, field: str, message: str, source: str | None = None):
        super().__init__(f"{source}: {message}" if source else message)
        self.field, self.message, self.source = field, message, source

    def from_source(self, source: str) -> "InvalidConfig":
        return InvalidConfig(self.field, self.message, source)
class PortalNotConfigured(PortalRefused):
    """Stripe has no portal configuration to open a session with (test mode: none saved in the Dashboard) and the
    setting naming ours is unset: the page says which setting to add."""

    title = N_("Billing isn't set up yet")
