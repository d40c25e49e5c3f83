"""The client's language: which one a request is served in, and its gettext catalog.

Chosen in this order: the language the client picked with the page's switch (kept for that link),
the Stripe customer's `preferred_locales` (the first one we ship), the browser's Accept-Language
(pages only), then the brand's `default_locale`. Catalogs are `locales/<lang>/LC_MESSAGES/messages.po`,
compiled to `.mo` by `make install` and the image's build (pybabel compile); each is read once per process.
English is the source language: its words are the messages themselves."""

from functools import lru_cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path

from babel.support import Translations
from jinja2 import nodes
from jinja2.ext import InternationalizationExtension

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
DEFAULT = "en"
# The languages shipped, in the switch's order, each named in itself.
LANGUAGES = {"en": "English", "es": "Español", "fr": "Français", "de": "Deutsch", "pt_BR": "Português (Brasil)"}
# Stripe's `locale` for portal and checkout sessions (https://docs.stripe.com/api/customer_portal/sessions/create#create_portal_session-locale).
STRIPE_LOCALES = {"en": "en", "es": "es", "fr": "fr", "de": "de", "pt_BR": "pt-BR"}
# A language tag's first part → the language we ship for it ("pt-PT" is served Brazilian Portuguese, the nearest).
_BY_LANGUAGE = {"en": "en", "es": "es", "fr": "fr", "de": "de", "pt": "pt_BR"}
MAX_ACCEPT_LANGUAGE = 400
# Each language's catalog, loaded on first use and kept for the life of the process.
_catalogs: dict[str, NullTranslations] = {}


def shipped(tag: str | None) -> str | None:
    """The shipped language for a tag such as "es-MX", "pt_BR", "DE" or "en"; None when we ship none."""
    if not tag or not isinstance(tag, str) or len(tag) > 35:
        return None
    return _BY_LANGUAGE.get(tag.replace("_", "-").split("-")[0].strip().lower())


def from_accept_language(header: str | None) -> list[str]:
    """The shipped languages an Accept-Language header asks for, most wanted first (q=0 means "not this")."""
    return list(_accepted(header[:MAX_ACCEPT_LANGUAGE])) if header else []


@lru_cache(maxsize=512)  # browsers send a handful of different headers: each is read once
def _accepted(header: str) -> tuple[str, ...]:
    weighted = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = shipped(tag)
        if language and quality > 0:
            weighted.append((-quality, position, language))
    return tuple(dict.fromkeys(language for _, _, language in sorted(weighted)))


def choose(*, picked: str | None = None, preferred_locales=(), accept_language: str | None = None,
           default: str | None = None) -> str:
    """The language to serve, in the order the module docstring gives."""
    if picked in LANGUAGES:
        return picked
    for tag in preferred_locales or ():
        if language := shipped(tag):
            return language
    if accept_language:
        for language in _accepted(accept_language[:MAX_ACCEPT_LANGUAGE]):
            return language
    return default if default in LANGUAGES else DEFAULT


def translations(language: str) -> NullTranslations:
    """The catalog of `language` (English, the source, has none: its messages are its words)."""
    catalog = _catalogs.get(language)
    if catalog is None:
        catalog = _catalogs[language] = _load(language)
    return catalog


def _load(language: str) -> NullTranslations:
    """The compiled catalog; when the `.mo` is missing or older than its `.po` (sources changed since the
    last `make install`), the `.po` compiled in memory, so a page is never silently left in English."""
    if language == DEFAULT:
        return NullTranslations()
    folder = LOCALES_DIR / language / "LC_MESSAGES"
    compiled, source = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    if compiled.is_file() and (not source.is_file() or compiled.stat().st_mtime >= source.stat().st_mtime):
        with compiled.open("rb") as file:
            return Translations(file, DOMAIN)
    if source.is_file():
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        with source.open("rb") as file:
            catalog = read_po(file, locale=language, domain=DOMAIN)
        buffer = BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        return Translations(buffer, DOMAIN)
    return NullTranslations()


def html_lang(language: str) -> str:
    """The `<html lang>` value: BCP 47, "pt-BR"."""
    return language.replace("_", "-")


def lang_query(language: str, joint: str = "?") -> str:
    """What a link to one of the client's pages adds so that it opens in `language` (English needs nothing: it is
    where every choice ends when nothing else is known)."""
    return "" if language == DEFAULT else f"{joint}lang={language}"


def gettext(language: str, message: str, **values) -> str:
    """`message` in `language` (Python's side of the catalogs), with `%(name)s` values filled in."""
    text = translations(language).gettext(message)
    return text % values if values else text


def ngettext(language: str, singular: str, plural: str, count: int, **values) -> str:
    """The form of `singular`/`plural` for `count` in `language`; `%(num)s` is the count."""
    text = translations(language).ngettext(singular, plural, count)
    return text % {"num": count, **values}


def N_(message: str) -> str:
    """Marks a message for the catalogs where it is defined; it is translated where it is shown."""
    return message


class OneLanguageI18n(InternationalizationExtension):
    """Jinja's i18n extension (`jinja2.ext.i18n`) for an environment that speaks one language: a `{% trans %}` block
    with no values and no plural is compiled as its translation, the text gettext would give at every render
    (`gettext(message) % {}`, marked safe as newstyle gettext marks it). Blocks with values or a plural, and `_()`,
    are translated when rendered, as before. Each environment holds one language's catalog, set before its first
    template is compiled (`install`)."""

    catalog: NullTranslations | None = None

    def _make_node(self, singular, plural, context, variables, plural_expr, vars_referenced, num_called_num):
        if self.catalog is not None and self.environment.newstyle_gettext and plural_expr is None \
                and context is None and not variables:
            try:
                return nodes.Output([nodes.TemplateData(self.catalog.gettext(singular) % {})])
            except (KeyError, TypeError, ValueError):
                pass  # a stray placeholder: raised at render time, as before
        return super()._make_node(singular, plural, context, variables, plural_expr, vars_referenced, num_called_num)


_EXTENSION = f"{OneLanguageI18n.__module__}.{OneLanguageI18n.__qualname__}"


def install(environment, language: str = DEFAULT) -> None:
    """Give a Jinja environment `{% trans %}`, `_()`, `gettext()` and `ngettext()` in `language` (its one language:
    the blocks without values are translated once, when a template is compiled)."""
    if _EXTENSION not in environment.extensions:
        environment.add_extension(OneLanguageI18n)
    environment.policies["ext.i18n.trimmed"] = True  # as babel.cfg extracts them: a block's lines joined by one space
    catalog = translations(language)
    environment.install_gettext_translations(catalog, newstyle=True)
    environment.extensions[_EXTENSION].catalog = catalog


class PerLanguage:
    """One Jinja environment per language, made by `make(language)` on first use and kept: choosing the
    environment of a request costs one dictionary look-up, and each keeps its compiled templates."""

    def __init__(self, make):
        self.make, self.made = make, {}

    def __getitem__(self, language: str):
        environment = self.made.get(language)
        if environment is None:
            environment = self.made[language] = self.make(language)
        return environment
