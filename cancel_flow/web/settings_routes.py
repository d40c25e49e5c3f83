"""`/dashboard/settings…`: the coach steers the live configuration from the browser: brand and logo, offers,
experiments, billing emails, alerts, win-back, compliance, and the history of versions with restore.

Every save is the live document with one form applied, checked by the one validator and saved as a new
version made from the version the form was shown with (a hidden field): a refusal re-shows the form with
the validator's message beside the field it names (422, nothing saved); a save made meanwhile by someone
else is a 409 with the form kept. Forms work without JavaScript and carry the coach's CSRF token.
Who may change settings is decided in one place, `can_edit`."""

import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from babel import Locale
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.billing import schedule_lines
from cancel_flow.clock import utc_now
from cancel_flow.config import diff
from cancel_flow.config.schema import REFUND_MODES, TERMS, Configuration, Offer
from cancel_flow.config.validate import (EMAIL_INTERVALS, LEAST_WITHDRAWAL_DAYS, MAX_WINBACK_STEPS, UPLOAD_PREFIX,
                                         WINBACK_MAX_DAYS, color_problem, nearest_passing_color)
from cancel_flow.emails import compose
from cancel_flow.emails.kinds import KINDS as EMAIL_KINDS
from cancel_flow.errors import BadRequest, Forbidden, InvalidConfig, NotFound
from cancel_flow.experiments import is_running
from cancel_flow.flow import offer_promise
from cancel_flow.hooks import EVENTS
from cancel_flow.i18n import DEFAULT, LANGUAGES, gettext
from cancel_flow.money import format_percent_off
from cancel_flow.stripe_billing import Failure
from cancel_flow.outbox import queue
from cancel_flow.reasons import REASONS
from cancel_flow.store.config_versions import StaleVersion
from cancel_flow.store.logos import MAX_LOGO_BYTES, LogoRefused
from cancel_flow.store.offer_counts import offer_counts
from cancel_flow.targeting import INTERVALS
from cancel_flow.web import settings_forms as forms
from cancel_flow.web.access import EDITOR, allows
from cancel_flow.web.coach_auth import SignedInCoach, client_address, signed_in_coach, to_login
from cancel_flow.web.config_routes import restore
from cancel_flow.web.dashboard_routes import KIND_LABELS, local_clock
from cancel_flow.web.dates import whole_number
from cancel_flow.web.pages import csrf_token, read_form, render
from cancel_flow.web.preview_routes import Subject, preview, preview_context, sample_facts

LOGO_PATH = "/dashboard/settings/brand/logo"
# The upload's body may be larger than the logo it may hold, so a photo straight from a phone gets the page
# saying how large a logo may be rather than a bare 413.
MAX_LOGO_BODY = 4 * 1024 * 1024
HISTORY_PAGE = 50
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
OFFER_COUNT_DAYS = 90
ORIGINS = {"file": "read from the offers file at first start", "dashboard": "saved on these settings pages",
           "api": "saved through the JSON API (PUT /api/config)", "import": "imported with cancel-flow config import"}
EMAIL_LABELS = {"payment_failed": "Failed payment", "renewal_reminder": "Renewal reminder",
                "discount_ending": "Discount ending", "offer_accepted": "Confirmation: offer accepted",
                "cancellation_confirmed": "Confirmation: cancellation"}
SETTINGS_PAGES = (("/dashboard/settings", "Overview"), ("/dashboard/settings/brand", "Brand"),
                  ("/dashboard/settings/offers", "Offers"), ("/dashboard/settings/experiments", "Experiments"),
                  ("/dashboard/settings/emails", "Emails"), ("/dashboard/settings/alerts", "Alerts"),
                  ("/dashboard/settings/winback", "Win-back"), ("/dashboard/settings/compliance", "Compliance"),
                  ("/dashboard/settings/history", "History"))


def can_edit(coach: SignedInCoach | None) -> bool:
    """Whether this coach may change the settings (save, restore, upload, delete): editors and owners (the
    routes' guard refuses a viewer's POST before it gets here; this greys a viewer's fields out)."""
    return coach is not None and allows(coach.role, EDITOR)


@dataclass
class Refusal:
    """Why a save didn't happen, for the form: the summary at the top and the message beside its input."""

    message: str
    status: int
    inputs: dict[str, str]


def _csrf(request: Request, coach: SignedInCoach) -> str:
    return csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}")


def _page(request: Request, template: str, coach: SignedInCoach, status: int = 200, **context) -> Response:
    return render(request, template, status, coach=coach, csrf=_csrf(request, coach), can_edit=can_edit(coach),
                  settings_pages=SETTINGS_PAGES, saved=whole_number(request.query_params.get("saved", ""), 1, 2**31 - 1),
                  **context)


async def _editor(request: Request, max_fields: int = 50, max_files: int = 0) -> tuple[SignedInCoach | None, dict]:
    """The signed-in coach allowed to change settings, and the form they posted (CSRF checked); (None, {})
    when nobody is signed in. A coach who may not edit gets a 403 and nothing changes."""
    coach = await signed_in_coach(request)
    if coach is None:
        return None, {}
    if not can_edit(coach):
        raise Forbidden("Your account can see the settings but not change them.")
    return coach, await read_form(request, _csrf(request, coach), max_fields=max_fields, max_files=max_files)


def _base_version(fields: dict) -> int:
    """The version the form was shown with (its hidden field)."""
    sent = fields.get("base_version")
    number = whole_number(sent, 1, 2**31 - 1) if isinstance(sent, str) else None
    if number is None:
        raise BadRequest("This form has no version to save from. Please reload the page and try again.")
    return number


def _note(fields: dict) -> str | None:
    note = fields.get("note")
    if not isinstance(note, str):
        return None
    return note.strip()[:500] or None


async def _live_document(request: Request):
    saved = await run_in_threadpool(request.app.state.config.document)
    if saved is None:
        raise BadRequest("No configuration is saved yet. Please try again in a moment.")
    return saved


async def _save(request: Request, coach: SignedInCoach, document: dict, base_version: int, note: str | None) -> int:
    live = request.app.state.config
    return await run_in_threadpool(lambda: live.save(document, base_version=base_version, saved_by=coach.email,
                                                     origin="dashboard", note=note, address=client_address(request)))


def _refusal(error: Exception, inputs: dict[str, str] | None = None) -> Refusal:
    if isinstance(error, StaleVersion):
        return Refusal(f"Someone saved the settings meanwhile (version {error.live} is live now), so nothing was "
                       f"saved and nothing was overwritten. Your changes are kept below: check them against the "
                       f"settings as they are now, then save again.", 409, {})
    return Refusal(error.message, 422, inputs or {})


def _saved(path: str, number: int, anchor: str = "") -> Response:
    return RedirectResponse(f"{path}?saved={number}{anchor}", status_code=303)


async def _save_or_refuse(request: Request, coach: SignedInCoach, document: dict, fields: dict,
                          input_for) -> int | Refusal:
    """Save the document; a Refusal (with the input the validator's field names) when it isn't saved."""
    try:
        return await _save(request, coach, document, _base_version(fields), _note(fields))
    except InvalidConfig as refused:
        name = input_for(refused.field)
        return _refusal(refused, {name: refused.message} if name else {})
    except StaleVersion as stale:
        return _refusal(stale)


def _version_after(refusal: Refusal, fields: dict, live_version: int) -> int:
    """The version a re-shown form saves from: the live one after a 409 (saving again applies the form on
    top of it), else the one it was made from."""
    return live_version if refusal.status == 409 else _base_version(fields)


# overview ----------------------------------------------------------------------------------------

async def overview(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    live = request.app.state.config
    config = live.current()
    local = local_clock(request.app.state.settings.timezone, request.app.state.settings.locale)
    today = utc_now().date()
    return _page(request, "settings_index.html", coach, config=config, origin=live.origin, origins=ORIGINS,
                 local=local, zone=request.app.state.settings.timezone,
                 running=[e for e in config.experiments if is_running(e, today)],
                 emails_on=[EMAIL_LABELS[kind] for kind in EMAIL_KINDS if config.emails.sends(kind)])


# brand -------------------------------------------------------------------------------------------

def _brand_input(field: str) -> str | None:
    tail = forms.field_tail(field, "brand")
    return tail if tail in ("name", "color", "support_email", "logo", "default_locale") else None


def language_names() -> dict[str, str]:
    """The shipped languages, named in English for the coach's pages ("pt_BR": "Portuguese (Brazil)")."""
    return {code: Locale.parse(code).get_display_name("en") for code in LANGUAGES}


def other_languages(config: Configuration) -> list[str]:
    """The languages an offer can be translated into: every shipped one but the one its own words are in."""
    return [code for code in LANGUAGES if code != config.brand.default_locale]


async def _brand_page(request: Request, coach: SignedInCoach, *, values: dict | None = None,
                      refusal: Refusal | None = None, base_version: int | None = None) -> Response:
    saved = await _live_document(request)
    brand = request.app.state.config.current().brand
    values = values or forms.brand_values(saved.document)
    suggestion = None
    color = values.get("color", "").strip()
    if refusal and "color" in refusal.inputs and _HEX_COLOR.match(color) and color_problem(color):
        suggestion = nearest_passing_color(color)
    logo = (saved.document.get("brand") or {}).get("logo")
    return _page(request, "settings_brand.html", coach, refusal.status if refusal else 200, values=values,
                 refusal=refusal, errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 suggestion=suggestion, brand_now=brand, logo_setting=logo, uploaded=bool(logo and logo.startswith(UPLOAD_PREFIX)),
                 max_logo_kb=MAX_LOGO_BYTES // 1024, language_names=language_names())


async def brand_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _brand_page(request, coach)


async def save_brand(request: Request) -> Response:
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.apply_brand(forms.new_document(saved.document), fields)
    result = await _save_or_refuse(request, coach, document, fields, _brand_input)
    if isinstance(result, Refusal):
        values = {name: forms.field_text(fields, name) for name in forms.BRAND_FIELDS}
        values["color"] = forms.field_text(fields, "use_color") or values["color"]
        return await _brand_page(request, coach, values=values, refusal=result,
                                 base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/brand", result)


async def save_logo(request: Request) -> Response:
    """Upload a logo (checked by its bytes, kept in the database) and name it in a new version; or remove it."""
    coach, fields = await _editor(request, max_fields=10, max_files=1)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    upload = fields.get("logo")
    try:
        if fields.get("remove"):
            logo = None
        else:
            if not isinstance(upload, UploadFile):
                raise LogoRefused("Choose an image file for the logo.")
            data = await upload.read(MAX_LOGO_BYTES + 1)
            sha = await run_in_threadpool(request.app.state.logos.save, data, coach.email)
            logo = UPLOAD_PREFIX + sha
    except LogoRefused as refused:
        refusal = Refusal(str(refused), 422, {"logo": str(refused)})
        return await _brand_page(request, coach, refusal=refusal, base_version=_base_version(fields))
    finally:
        if isinstance(upload, UploadFile):
            await upload.close()
    document = forms.set_logo(forms.new_document(saved.document), logo)
    result = await _save_or_refuse(request, coach, document, fields, _brand_input)
    if isinstance(result, Refusal):
        return await _brand_page(request, coach, refusal=result, base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/brand", result)


# offers ------------------------------------------------------------------------------------------

def offer_terms(offer) -> str:
    """What an offer gives, in words for its row in the list."""
    if offer.kind == "discount":
        return f"{offer.percent_off:g}% off the next {offer.payments} payment{'s' if offer.payments != 1 else ''}, whatever the billing period"
    if offer.kind == "pause":
        return f"skip 1 to {offer.max_payments} payment{'s' if offer.max_payments != 1 else ''}"
    if offer.kind == "switch":
        return f"move to the cheaper price {offer.price} from the next payment"
    if offer.kind == "free_period":
        return f"the next payment moves {offer.months} month{'s' if offer.months != 1 else ''} later"
    return f"talk to you first ({offer.url})"


def conditions_words(when) -> list[str]:
    """An offer's `when` conditions in words."""
    said = []
    if when.interval:
        said.append("billed every " + " or ".join(when.interval))
    if when.prices:
        said.append("price " + " or ".join(when.prices))
    if when.products:
        said.append("product " + " or ".join(when.products))
    if when.tenure_days_min is not None:
        said.append(f"subscribed at least {when.tenure_days_min} days")
    if when.tenure_days_max is not None:
        said.append(f"subscribed at most {when.tenure_days_max} days")
    if when.monthly_amount_min is not None:
        said.append(f"worth at least {when.monthly_amount_min} (smallest units) a month")
    if when.monthly_amount_max is not None:
        said.append(f"worth at most {when.monthly_amount_max} (smallest units) a month")
    if when.currency:
        said.append("currency " + " or ".join(c.upper() for c in when.currency))
    if when.country:
        said.append("country " + " or ".join(when.country))
    for key, value in when.metadata:
        said.append(f"metadata {key} = {value}")
    return said


async def _offers_page(request: Request, coach: SignedInCoach, *, refusal: Refusal | None = None,
                       rules_values: dict | None = None, base_version: int | None = None) -> Response:
    saved = await _live_document(request)
    config = request.app.state.config.current()
    counts = await run_in_threadpool(offer_counts, request.app.state.store.engine, OFFER_COUNT_DAYS)
    return _page(request, "settings_offers.html", coach, refusal.status if refusal else 200, config=config,
                 refusal=refusal, errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 counts=counts, days=OFFER_COUNT_DAYS, kind_labels=KIND_LABELS, terms=offer_terms,
                 conditions=conditions_words, rules=rules_values or forms.rules_values(saved.document),
                 kinds=list(TERMS), other_languages=other_languages(config), language_names=language_names())


async def offers_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _offers_page(request, coach)


async def save_rules(request: Request) -> Response:
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.apply_rules(forms.new_document(saved.document), fields)
    result = await _save_or_refuse(request, coach, document, fields, lambda f: forms.field_tail(f, "rules"))
    if isinstance(result, Refusal):
        return await _offers_page(request, coach, refusal=result, base_version=_version_after(result, fields, saved.version),
                                  rules_values={name: forms.field_text(fields, name) for name in forms.RULE_FIELDS})
    return _saved("/dashboard/settings/offers", result, "#rules")


OFFER_ACTIONS = ("move-up", "move-down", "duplicate", "turn-off", "turn-on", "delete")


async def offer_action(request: Request) -> Response:
    """Move up or down, duplicate, turn off or on, or delete one offer: a new version each time."""
    action, offer_id = request.path_params["action"], request.path_params["offer_id"]
    if action not in OFFER_ACTIONS:
        raise NotFound("There is nothing here.")
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.new_document(saved.document)
    offers = forms.offers_of(document)
    found = forms.find_offer(document, offer_id)
    if found is None:
        raise NotFound(f"There is no offer '{offer_id}' in the live settings (it may have been deleted meanwhile).")
    index, offer = found
    note = _note(fields)
    target = f"#offer-{offer_id}"
    if action in ("move-up", "move-down"):
        other = index - 1 if action == "move-up" else index + 1
        if 0 <= other < len(offers):
            offers[index], offers[other] = offers[other], offers[index]
        note = note or f"moved offer '{offer_id}' {'up' if action == 'move-up' else 'down'}"
    elif action == "duplicate":
        copy = dict(offer, id=forms.copy_id(offer_id, {o.get("id") for o in offers}),
                    title=f"{offer.get('title', offer_id)} (copy)", enabled=False)
        offers.insert(index + 1, copy)
        note, target = note or f"copied offer '{offer_id}' as '{copy['id']}' (turned off)", copy["id"]
    elif action in ("turn-off", "turn-on"):
        if action == "turn-off":
            offers[index] = dict(offer, enabled=False)
        else:
            offers[index] = {k: v for k, v in offer.items() if k != "enabled"}
        note = note or f"turned offer '{offer_id}' {'off' if action == 'turn-off' else 'on'}"
    else:
        offers.pop(index)
        note, target = note or f"deleted offer '{offer_id}'", ""
    document["offer"] = offers
    try:
        number = await _save(request, coach, document, _base_version(fields), note)
    except (InvalidConfig, StaleVersion) as error:
        return await _offers_page(request, coach, refusal=_refusal(error),
                                  base_version=_version_after(_refusal(error), fields, saved.version))
    if action == "duplicate":
        return RedirectResponse(f"/dashboard/settings/offers/edit/{target}?saved={number}", status_code=303)
    return _saved("/dashboard/settings/offers", number, target)


OFFER_HINTS = {
    "title": "The heading of the offer's card, as the client reads it.",
    "description": "Optional: a sentence under the heading.",
    "percent_off": "How much is taken off each discounted payment, in percent (above 0, at most 100).",
    "payments": "The next 3 payments, whatever the billing period: on a monthly plan 3 months, on a yearly plan "
                "3 yearly renewals (1 to 36). Stripe bills exactly what the card promises.",
    "max_payments": "The client chooses to skip 1 payment up to this many, whatever the billing period (1 to 12); "
                    "they keep their access meanwhile. Yearly plans are never paused.",
    "price": "The Stripe price id (price_…) of the cheaper plan: same currency and billing period. It applies "
             "from the next payment; the current period is not refunded.",
    "months": "The next payment moves this many calendar months later (1 to 12): on a monthly plan that many "
              "free payments, on a yearly plan that many free months.",
    "url": "Where the client goes to talk to you: an https:// booking page or a mailto: address. "
           "\"Continue to cancel\" stays on the page.",
    "reasons": "Shown to clients who give one of these reasons. None ticked: every reason.",
    "enabled": "Untick to turn the offer off: it stays in the list, but no client is shown or offered it.",
    "comeback_only": "Tick to keep this discount for win-back: it is never shown to a client who is cancelling, only "
                     "in the comeback emails of the steps that name it (on the Win-back settings page).",
    "when": "Who is offered it: every condition you fill in must hold. Leave one empty to not check it.",
    "when_interval": "Only plans billed every … (none ticked: any billing period).",
    "when_prices": "Only these Stripe prices (price_…), separated by commas.",
    "when_products": "Only these Stripe products (prod_…), separated by commas.",
    "when_tenure_days_min": "Only clients subscribed for at least this many days.",
    "when_tenure_days_max": "Only clients subscribed for at most this many days.",
    "when_monthly_amount_min": "Only plans worth at least this much a month, in the currency's smallest unit: "
                               "4900 is $49.00 (a yearly plan counts a twelfth of its price).",
    "when_monthly_amount_max": "Only plans worth at most this much a month, in the currency's smallest unit.",
    "when_currency": "Only plans in these currencies: three letters each, such as usd, eur.",
    "when_country": "Only clients whose address in Stripe is in these countries: two letters each, such as US, DE.",
    "when_metadata": "Only clients whose Stripe customer or subscription metadata has these values: one "
                     "key = value per line.",
}


async def _offer_form(request: Request, coach: SignedInCoach, *, offer_id: str | None, kind: str, values: dict,
                      position: int, refusal: Refusal | None = None, base_version: int | None = None,
                      preview_of=None, subject: Subject | None = None) -> Response:
    saved = await _live_document(request)
    config = request.app.state.config.current()
    return _page(request, "settings_offer.html", coach, refusal.status if refusal else 200, offer_id=offer_id,
                 other_languages=other_languages(config), language_names=language_names(),
                 default_language=config.brand.default_locale,
                 kind=kind, kind_labels=KIND_LABELS, values=values, refusal=refusal,
                 errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 hints=OFFER_HINTS, terms=sorted(TERMS[kind]), intervals=INTERVALS, position=position,
                 preview=preview_of, subject=subject or Subject(), **preview_context())


async def new_offer_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    kind = request.query_params.get("kind") or ""
    if kind not in TERMS:
        raise BadRequest(f"Choose what kind of offer to add: {', '.join(TERMS)}.")
    saved = await _live_document(request)
    return await _offer_form(request, coach, offer_id=None, kind=kind, values={"kind": kind, "enabled": "on"},
                             position=len(forms.offers_of(saved.document)) + 1)


async def edit_offer_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    offer_id = request.path_params["offer_id"]
    saved = await _live_document(request)
    found = forms.find_offer(saved.document, offer_id)
    if found is None:
        raise NotFound(f"There is no offer '{offer_id}'.")
    index, offer = found
    return await _offer_form(request, coach, offer_id=offer_id, kind=offer.get("kind"), values=forms.offer_values(offer),
                             position=index + 1)


async def save_offer(request: Request) -> Response:
    """Create or change one offer (or, with the Preview button, show what clients would see with the
    change, without saving it)."""
    offer_id = request.path_params.get("offer_id")
    coach, fields = await _editor(request, max_fields=80)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.new_document(saved.document)
    offers = forms.offers_of(document)
    if offer_id is None:
        kind = forms.field_text(fields, "kind")
        if kind not in TERMS:
            raise BadRequest(f"Choose what kind of offer to add: {', '.join(TERMS)}.")
        new_id, original, position = forms.field_text(fields, "id"), None, len(offers) + 1
        offers.append(forms.offer_from_form(fields, new_id, kind))
    else:
        found = forms.find_offer(document, offer_id)
        if found is None:
            raise NotFound(f"There is no offer '{offer_id}' in the live settings (it may have been deleted meanwhile).")
        index, original = found
        kind, new_id, position = original.get("kind"), offer_id, index + 1
        offers[index] = forms.offer_from_form(fields, offer_id, kind, original)
    document["offer"] = offers
    values = {**{k: v for k, v in fields.items() if isinstance(v, str)}, "kind": kind}
    input_for = lambda field: forms.offer_input(field, new_id, position)  # noqa: E731
    if forms.field_text(fields, "action") == "preview":
        subject = Subject.read(fields, prefix="preview_")
        try:
            draft = await run_in_threadpool(request.app.state.config.check, document)
        except InvalidConfig as refused:
            name = input_for(refused.field)
            return await _offer_form(request, coach, offer_id=offer_id, kind=kind, values=values, position=position,
                                     refusal=_refusal(refused, {name: refused.message} if name else {}),
                                     base_version=_base_version(fields), subject=subject)
        result = await preview(request, draft, subject)
        return await _offer_form(request, coach, offer_id=offer_id, kind=kind, values=values, position=position,
                                 base_version=_base_version(fields), preview_of=result, subject=subject)
    if offer_id is None and not _note(fields):
        fields = {**fields, "note": f"added offer '{new_id}'"}
    result = await _save_or_refuse(request, coach, document, fields, input_for)
    if isinstance(result, Refusal):
        return await _offer_form(request, coach, offer_id=offer_id, kind=kind, values=values, position=position,
                                 refusal=result, base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/offers", result, f"#offer-{new_id}")


# experiments -------------------------------------------------------------------------------------

async def _experiments_page(request: Request, coach: SignedInCoach, *, refusal: Refusal | None = None,
                            values: dict | None = None, base_version: int | None = None) -> Response:
    saved = await _live_document(request)
    config = request.app.state.config.current()
    today = utc_now().date()
    return _page(request, "settings_experiments.html", coach, refusal.status if refusal else 200, config=config,
                 refusal=refusal, errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 values=values or {"start": today.isoformat(), "optimise": "revenue", "arm1_name": "offers",
                                   "arm1_weight": "50", "arm2_name": "holdout", "arm2_weight": "50"},
                 today=today, is_running=is_running, arm_count=forms.ARMS)


async def experiments_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _experiments_page(request, coach)


async def create_experiment(request: Request) -> Response:
    coach, fields = await _editor(request, max_fields=200)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.new_document(saved.document)
    offer_ids = [offer.get("id") for offer in forms.offers_of(document)]
    experiment = forms.experiment_from_form(fields, offer_ids, utc_now().date())
    experiments = forms.experiments_of(document)
    experiments.append(experiment)
    document["experiment"] = experiments
    rows = forms.arm_rows(fields, offer_ids)
    if not _note(fields):
        fields = {**fields, "note": f"started experiment '{experiment['id']}'"}
    result = await _save_or_refuse(request, coach, document, fields,
                                   lambda field: forms.experiment_input(field, experiment, len(experiments), rows))
    if isinstance(result, Refusal):
        values = {k: v for k, v in fields.items() if isinstance(v, str) and k != "note"}
        return await _experiments_page(request, coach, refusal=result, values=values,
                                       base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/experiments", result, f"#experiment-{experiment['id']}")


async def end_experiment(request: Request) -> Response:
    """End an experiment today (`end` = today, UTC); one that hasn't started yet is removed instead."""
    experiment_id = request.path_params["experiment_id"]
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.new_document(saved.document)
    experiments = forms.experiments_of(document)
    index = next((i for i, e in enumerate(experiments) if e.get("id") == experiment_id), None)
    if index is None:
        raise NotFound(f"There is no experiment '{experiment_id}'.")
    today = utc_now().date()
    if str(experiments[index].get("start", "")) > today.isoformat():
        experiments.pop(index)
        note = f"removed experiment '{experiment_id}' before it started"
    else:
        experiments[index] = dict(experiments[index], end=today.isoformat())
        note = f"ended experiment '{experiment_id}' on {today.isoformat()}"
    document["experiment"] = experiments
    try:
        number = await _save(request, coach, document, _base_version(fields), _note(fields) or note)
    except (InvalidConfig, StaleVersion) as error:
        refusal = _refusal(error)
        return await _experiments_page(request, coach, refusal=refusal,
                                       base_version=_version_after(refusal, fields, saved.version))
    return _saved("/dashboard/settings/experiments", number, f"#experiment-{experiment_id}")


# emails ------------------------------------------------------------------------------------------

def sample_emails(config: Configuration, base_url: str, timezone: str, language: str = DEFAULT) -> dict[str, compose.Rendered]:
    """Each billing email as a sample client would get it now, with the brand (the compose functions' words), in
    `language`."""
    style = compose.Style(brand=config.brand, base_url=base_url, timezone=timezone)
    now = utc_now()
    facts = sample_facts(Subject(), now)
    who = {"to": "casey@example.com", "name": "Casey Client", "language": language}
    plan, link = "Coaching Plan", f"{base_url}/"
    promise = next((p for offer in config.offers if offer.enabled and offer.kind in ("discount", "pause", "free_period")
                    for p in [offer_promise(offer, facts, now, language=language)] if p is not None), None) \
        or offer_promise(_SAMPLE_DISCOUNT, facts, now, language=language)
    declined = Failure(code="card_declined", card_brand="visa", card_last4="4242")
    emails = {
        "payment_failed": compose.payment_failed(
            style, **who, step=0, amount=4900, currency="usd", plan=plan, failed_at=now - timedelta(hours=2),
            card=declined.card_in(language),
            reason="the card was declined" if language == DEFAULT else declined.words_in(language), update_url=link),
        "renewal_reminder": compose.renewal_reminder(
            style, **who, plan=plan, amount=49000, currency="usd", interval="year", interval_count=1,
            renews_at=now + timedelta(days=config.emails.renewal_reminder_days_before or 30), cancel_url=link,
            unsubscribe_url=link),
        "discount_ending": compose.discount_ending(
            style, **who, plan=plan, discount=gettext(language, "%(off)s off", off=format_percent_off(50, language)),
            ends_at=now + timedelta(days=config.emails.discount_ending_days_before or 7),
            next_payment_at=now + timedelta(days=(config.emails.discount_ending_days_before or 7) + 1), amount=4900,
            currency="usd", interval="month", interval_count=1, cancel_url=link, unsubscribe_url=link),
        "offer_accepted": compose.offer_accepted(
            style, **who, plan=plan, promise=promise.text,
            payments=schedule_lines(promise.schedule(), "usd", language), billing_url=link, unsubscribe_url=link),
        "cancellation_confirmed": compose.cancellation_confirmed(
            style, **who, plan=plan, access_until=now + timedelta(days=20), keep_url=link, unsubscribe_url=link),
    }
    return {kind: compose.render(email, style) for kind, email in emails.items()}


_SAMPLE_DISCOUNT = Offer(id="sample", kind="discount", title="Stay for half price", percent_off=50, payments=3)


async def _emails_page(request: Request, coach: SignedInCoach, *, refusal: Refusal | None = None,
                       values: dict | None = None, base_version: int | None = None) -> Response:
    saved = await _live_document(request)
    config = request.app.state.config.current()
    settings = request.app.state.settings
    samples = sample_emails(config, settings.base_url, settings.timezone)
    return _page(request, "settings_emails.html", coach, refusal.status if refusal else 200, config=config,
                 refusal=refusal, errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 values=values or forms.emails_values(saved.document), samples=samples, labels=EMAIL_LABELS,
                 intervals=EMAIL_INTERVALS, language_names=language_names())


async def emails_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _emails_page(request, coach)


async def save_emails(request: Request) -> Response:
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.apply_emails(forms.new_document(saved.document), fields)
    result = await _save_or_refuse(request, coach, document, fields, lambda f: forms.field_tail(f, "emails"))
    if isinstance(result, Refusal):
        values = {k: v for k, v in fields.items() if isinstance(v, str) and k != "note"}
        return await _emails_page(request, coach, refusal=result, values=values,
                                  base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/emails", result)


async def email_html(request: Request) -> Response:
    """A sample email's HTML on its own page (its inline styles allowed, nothing that runs)."""
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    kind = request.path_params["kind"]
    if kind not in EMAIL_LABELS:
        raise NotFound("There is no such email.")
    settings = request.app.state.settings
    language = request.query_params.get("language") or DEFAULT
    if language not in LANGUAGES:
        raise NotFound("There is no such language.")
    rendered = sample_emails(request.app.state.config.current(), settings.base_url, settings.timezone, language)[kind]
    return Response(rendered.html, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https: http:; "
                                   "frame-ancestors 'none'", "Cache-Control": "no-store"})


# alerts ------------------------------------------------------------------------------------------

async def _alerts_page(request: Request, coach: SignedInCoach, *, refusal: Refusal | None = None,
                       values: dict | None = None, base_version: int | None = None, status: int | None = None,
                       message: str | None = None) -> Response:
    saved = await _live_document(request)
    return _page(request, "settings_alerts.html", coach, status or (refusal.status if refusal else 200),
                 config=request.app.state.config.current(), refusal=refusal, errors=refusal.inputs if refusal else {},
                 base_version=base_version or saved.version, values=values or forms.alerts_values(saved.document),
                 events=EVENTS, message=message, tested=request.query_params.get("tested"))


async def alerts_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _alerts_page(request, coach)


async def save_alerts(request: Request) -> Response:
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.apply_alerts(forms.new_document(saved.document), fields)
    result = await _save_or_refuse(request, coach, document, fields, lambda f: forms.field_tail(f, "alerts"))
    if isinstance(result, Refusal):
        values = {k: v for k, v in fields.items() if isinstance(v, str) and k != "note"}
        return await _alerts_page(request, coach, refusal=result, values=values,
                                  base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/alerts", result)


def _queue_test_alert(engine, alerts) -> str | None:
    with engine.begin() as connection:
        return queue.enqueue_test_alert(connection, alerts)


async def test_alert(request: Request) -> Response:
    """Send a sample alert to the saved Slack URL and email, through the outbox like every alert."""
    coach, _ = await _editor(request)
    if coach is None:
        return to_login()
    alerts = request.app.state.config.current().alerts
    event_id = await run_in_threadpool(_queue_test_alert, request.app.state.store.engine, alerts)
    if event_id is None:
        return await _alerts_page(request, coach, status=422, message="There is nowhere to send a test alert yet: "
                                  "add a Slack URL or an email above, save, then send the test.")
    return RedirectResponse("/dashboard/settings/alerts?tested=1", status_code=303)


# win-back ----------------------------------------------------------------------------------------

def step_words(step, config: Configuration) -> str:
    """What one comeback step sends, and to whom, in words for the summary."""
    who = ("clients who answered " + " or ".join(f"“{REASONS.get(r, r)}”" for r in step.reasons)
           if step.reasons else "every client who left")
    offer = config.find(step.offer) if step.offer else None
    given = f"“{offer.title}”, {offer_terms(offer)}" if offer else "no offer: they come back at the usual price"
    return f"{step.days_after} day{'s' if step.days_after != 1 else ''} after the end, to {who}: {given}"


async def _winback_page(request: Request, coach: SignedInCoach, *, refusal: Refusal | None = None,
                        values: dict | None = None, base_version: int | None = None) -> Response:
    saved = await _live_document(request)
    config = request.app.state.config.current()
    values = values or forms.winback_values(saved.document)
    shown_rows = [row for row in range(1, forms.STEP_ROWS + 1) if values.get(f"step{row}_shown")]
    new_row = max(shown_rows, default=0) + 1
    return _page(request, "settings_winback.html", coach, refusal.status if refusal else 200, config=config,
                 refusal=refusal, errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 values=values, rows=shown_rows, new_row=new_row if len(shown_rows) < MAX_WINBACK_STEPS else None,
                 discounts=[offer for offer in config.offers if offer.kind == "discount"], terms=offer_terms,
                 step_words=lambda step: step_words(step, config), longest=WINBACK_MAX_DAYS,
                 most_steps=MAX_WINBACK_STEPS)


async def winback_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _winback_page(request, coach)


async def save_winback(request: Request) -> Response:
    coach, fields = await _editor(request, max_fields=400)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.apply_winback(forms.new_document(saved.document), fields)
    rows = forms.winback_rows(fields)
    result = await _save_or_refuse(request, coach, document, fields, lambda f: forms.winback_input(f, rows))
    if isinstance(result, Refusal):
        values = {k: v for k, v in fields.items() if isinstance(v, str)}
        return await _winback_page(request, coach, refusal=result, values=values,
                                   base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/winback", result)


# compliance --------------------------------------------------------------------------------------

REFUND_WORDS = {
    "full": ("Everything they paid", "Every payment since the subscription started is refunded through Stripe. "
             "Always lawful; the default."),
    "prorated": ("What they paid, less the time already used",
                 "Each payment less the share of its period served until the withdrawal. Lawful only where the client "
                 "expressly asked, at sign-up, for the service to start during the withdrawal period: use it only if "
                 "your sign-up asks for that and keeps their answer."),
    "manual": ("Nothing automatically: I decide",
               "Nothing is refunded automatically; your alert says the refund is yours to decide. The law still "
               "asks for the money back within 14 days."),
}


async def _compliance_page(request: Request, coach: SignedInCoach, *, refusal: Refusal | None = None,
                           values: dict | None = None, base_version: int | None = None) -> Response:
    saved = await _live_document(request)
    config = request.app.state.config.current()
    # the cancel button's default follows the Stripe account's country: read (at most hourly) only when it applies
    automatic = config.compliance.cancel_button is None
    account_country = await request.app.state.gateway.account_country() if automatic else None
    return _page(request, "settings_compliance.html", coach, refusal.status if refusal else 200, config=config,
                 refusal=refusal, errors=refusal.inputs if refusal else {}, base_version=base_version or saved.version,
                 values=values or forms.compliance_values(saved.document), account_country=account_country,
                 button_on=config.compliance.cancel_button_on(account_country), least_days=LEAST_WITHDRAWAL_DAYS,
                 refunds=[(mode, *REFUND_WORDS[mode]) for mode in REFUND_MODES])


async def compliance_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _compliance_page(request, coach)


async def save_compliance(request: Request) -> Response:
    coach, fields = await _editor(request)
    if coach is None:
        return to_login()
    saved = await _live_document(request)
    document = forms.apply_compliance(forms.new_document(saved.document), fields)
    result = await _save_or_refuse(request, coach, document, fields, lambda f: forms.field_tail(f, "compliance"))
    if isinstance(result, Refusal):
        values = {k: v for k, v in fields.items() if isinstance(v, str)}
        return await _compliance_page(request, coach, refusal=result, values=values,
                                      base_version=_version_after(result, fields, saved.version))
    return _saved("/dashboard/settings/compliance", result)


# history -----------------------------------------------------------------------------------------

def _compare(versions, numbers: dict, first: int | None, second: int | None) -> tuple[int | None, int | None]:
    if not versions:
        return None, None
    live = versions[0].version
    second = second if second in numbers else live
    first = first if first in numbers else max((n for n in numbers if n < second), default=None)
    return first, second


async def _history_page(request: Request, coach: SignedInCoach, *, message: str | None = None,
                        status: int = 200) -> Response:
    live = request.app.state.config
    versions = await run_in_threadpool(live.versions.all)
    numbers = {v.version: v for v in versions}
    query = request.query_params
    first, second = _compare(versions, numbers, whole_number(query.get("from", ""), 1, 2**31 - 1),
                             whole_number(query.get("to", ""), 1, 2**31 - 1))
    changes = None
    if second is not None and first is not None:
        old, new = await run_in_threadpool(live.document, first), await run_in_threadpool(live.document, second)
        changes = diff.changes(old.document, new.document)
    page = whole_number(query.get("page", "1"), 1, 100_000) or 1
    pages = max(1, -(-len(versions) // HISTORY_PAGE))
    shown = versions[(page - 1) * HISTORY_PAGE: page * HISTORY_PAGE]
    return _page(request, "settings_history.html", coach, status, versions=shown, all_versions=versions,
                 live_version=versions[0].version if versions else None, first=first, second=second, changes=changes,
                 origins=ORIGINS, local=local_clock(request.app.state.settings.timezone, request.app.state.settings.locale),
                 zone=request.app.state.settings.timezone, page=page, pages=pages, message=message,
                 restored=whole_number(query.get("restored", ""), 1, 2**31 - 1),
                 query=lambda **changes_: urlencode({**{k: v for k, v in query.items()}, **changes_}))


async def history_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    return await _history_page(request, coach)


async def restore_version(request: Request) -> Response:
    coach, _ = await _editor(request)
    if coach is None:
        return to_login()
    number = whole_number(str(request.path_params["number"]), 1, 2**31 - 1)
    if number is None:
        raise NotFound("There is no such version.")
    live = request.app.state.config
    try:
        new = await run_in_threadpool(restore, live, number, coach.email, "dashboard", client_address(request))
    except LookupError:
        raise NotFound(f"There is no version {number}.") from None
    except InvalidConfig as refused:
        return await _history_page(request, coach, status=422, message=f"Version {number} can't be restored as it "
                                   f"is: {refused.message}. Nothing was saved.")
    except StaleVersion:
        return await _history_page(request, coach, status=409, message="Other saves kept landing while restoring; "
                                   "nothing was restored. Please try again.")
    return RedirectResponse(f"/dashboard/settings/history?restored={number}&saved={new}", status_code=303)


routes = [
    Route("/dashboard/settings", overview, methods=["GET"]),
    Route("/dashboard/settings/brand", brand_page, methods=["GET"]),
    Route("/dashboard/settings/brand", save_brand, methods=["POST"]),
    Route(LOGO_PATH, save_logo, methods=["POST"]),
    Route("/dashboard/settings/offers", offers_page, methods=["GET"]),
    Route("/dashboard/settings/offers/rules", save_rules, methods=["POST"]),
    Route("/dashboard/settings/offers/new", new_offer_page, methods=["GET"]),
    Route("/dashboard/settings/offers/new", save_offer, methods=["POST"]),
    Route("/dashboard/settings/offers/edit/{offer_id}", edit_offer_page, methods=["GET"]),
    Route("/dashboard/settings/offers/edit/{offer_id}", save_offer, methods=["POST"]),
    Route("/dashboard/settings/offers/{action}/{offer_id}", offer_action, methods=["POST"]),
    Route("/dashboard/settings/experiments", experiments_page, methods=["GET"]),
    Route("/dashboard/settings/experiments", create_experiment, methods=["POST"]),
    Route("/dashboard/settings/experiments/{experiment_id}/end", end_experiment, methods=["POST"]),
    Route("/dashboard/settings/emails", emails_page, methods=["GET"]),
    Route("/dashboard/settings/emails", save_emails, methods=["POST"]),
    Route("/dashboard/settings/emails/preview/{kind}", email_html, methods=["GET"]),
    Route("/dashboard/settings/alerts", alerts_page, methods=["GET"]),
    Route("/dashboard/settings/alerts", save_alerts, methods=["POST"]),
    Route("/dashboard/settings/alerts/test", test_alert, methods=["POST"]),
    Route("/dashboard/settings/winback", winback_page, methods=["GET"]),
    Route("/dashboard/settings/winback", save_winback, methods=["POST"]),
    Route("/dashboard/settings/compliance", compliance_page, methods=["GET"]),
    Route("/dashboard/settings/compliance", save_compliance, methods=["POST"]),
    Route("/dashboard/settings/history", history_page, methods=["GET"]),
    Route("/dashboard/settings/history/{number}/restore", restore_version, methods=["POST"]),
]
