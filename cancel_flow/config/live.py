"""The live configuration: the highest saved version, held validated in memory by every process.

On first start with no version, the offers file seeds version 1 (a mistake in it stops start-up, naming
the field); after that the file is not read. Each process asks the database for the live version's
number once a second (`follow`, run by `serve`'s workers) and loads a new version when there is one, so
a save reaches every worker and replica within about a second, with no query on a request's way.
A save made by this process is live here at once."""

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from cancel_flow.config.schema import Configuration, Offer
from cancel_flow.config.toml import read_toml_file
from cancel_flow.config.validate import plain, validate, validate_offer
from cancel_flow.errors import InvalidConfig, SettingsError
from cancel_flow.logs import log_event
from cancel_flow.store.config_versions import ConfigVersions, SavedVersion
from cancel_flow.store.logos import LogoStore

FOLLOW_EVERY = 1.0  # seconds between two looks at the live version's number


@dataclass(frozen=True)
class Origin:
    """Where the live configuration came from, for the dashboard."""

    version: int
    saved_at: datetime
    saved_by: str
    origin: str
    note: str | None


class LiveConfiguration:
    def __init__(self, versions: ConfigVersions, base: Path):
        self.versions, self.base = versions, base
        # whether an uploaded logo is in the database (`[brand] logo = "upload:…"`)
        self.logo_exists = LogoStore(versions.engine).exists if versions is not None else None
        self._current: Configuration | None = None
        self._version: int | None = None
        self._origin: Origin | None = None
        self._offer_history: tuple[int | None, dict[str, Offer]] = (None, {})
        self._seed: tuple[dict, Path] | None = None  # the file's document, while the database can't take it

    @classmethod
    def start(cls, versions: ConfigVersions, offers_file: Path) -> "LiveConfiguration":
        """Seed version 1 from `offers_file` when the database has none, then load the live version."""
        live = cls(versions, offers_file.resolve().parent)
        try:
            if versions.latest_number() is None:
                live._seed = (live._read_seed(offers_file), offers_file.resolve())
            if live.refresh():
                return live
        except sa.exc.SQLAlchemyError as error:
            if isinstance(error, (sa.exc.OperationalError, sa.exc.ProgrammingError)) and "config_version" in str(error):
                raise SettingsError("The database is not migrated to this version of cancel-flow: "
                                    "run `cancel-flow migrate` (serve does it on start).") from None
            # Unreachable, read-only or locked: serve the file's configuration meanwhile (/readyz says
            # what is wrong), and take the saved one as soon as the database answers.
            log_event("config.database_unavailable", level=30, error=type(error).__name__)
            document = live._seed[0] if live._seed else live._read_seed(offers_file)
            live._seed = live._seed or (document, offers_file.resolve())
            live._current = validate(document, live.base)
            return live
        raise SettingsError("no valid configuration is saved: see the log line config.invalid_version")

    def _read_seed(self, offers_file: Path) -> dict:
        document = read_toml_file(offers_file)
        try:
            validate(document, self.base, logos=self.logo_exists)
        except InvalidConfig as refused:
            raise refused.from_source(str(offers_file)) from None
        return document

    @classmethod
    def fixed(cls, configuration: Configuration) -> "LiveConfiguration":
        """A configuration held in memory only (tests of parts that don't save)."""
        live = cls(None, Path.cwd())
        live._current, live._version = configuration, 0
        return live

    def current(self) -> Configuration:
        """The live configuration, as this process last loaded it: no I/O."""
        return self._current

    @property
    def version(self) -> int | None:
        return self._version

    @property
    def origin(self) -> Origin | None:
        return self._origin

    def refresh(self) -> bool:
        """Load the live version if it is not the one held; False when no valid version could be loaded.

        A version that no longer validates (saved by an older release with other rules, say) is skipped,
        with a log line, for the newest one that does: the pages keep working."""
        if self.versions is None:
            return self._current is not None
        number = self.versions.latest_number()
        if number is None and self._seed is not None:
            document, source = self._seed
            if self.versions.seed(document, saved_by="cancel-flow", note=f"first start: from {source}"):
                log_event("config.seeded", file=str(source))
            number = self.versions.latest_number()
        if number is None:
            return self._current is not None
        self._seed = None
        if number == self._version:
            return True
        saved = self.versions.get(number)
        while saved is not None:
            try:
                configuration = validate(saved.document, self.base, check_files=False, logos=self.logo_exists)
            except InvalidConfig as refused:
                log_event("config.invalid_version", level=40, version=saved.version, field=refused.field,
                          error=refused.message)
                if self._version is not None and saved.version <= self._version:
                    return True
                saved = self.versions.get(saved.version - 1) if saved.version > 1 else None
                continue
            self._take(saved, configuration)
            return True
        return self._current is not None

    def _take(self, saved: SavedVersion, configuration: Configuration) -> None:
        self._current, self._version = configuration, saved.version
        self._origin = Origin(saved.version, saved.saved_at, saved.saved_by, saved.origin, saved.note)
        if saved.version is not None:
            log_event("config.loaded", version=saved.version)

    async def follow(self, every: float = FOLLOW_EVERY) -> None:
        """Look for a new live version every `every` seconds, for as long as the process serves."""
        while True:
            await asyncio.sleep(every)
            try:
                await run_in_threadpool(self.refresh)
            except Exception as error:  # the database may be away for a moment: the next look tries again
                log_event("config.refresh_failed", level=30, error=type(error).__name__)

    def document(self, version: int | None = None) -> SavedVersion | None:
        return self.versions.get(version)

    def save(self, document, *, base_version: int | None, saved_by: str, origin: str, note: str | None = None,
             address: str | None = None) -> int:
        """Validate and save `document` as a new version, live here at once (elsewhere within a second); the
        audit log gets what changed, who saved it and from where (`address`: the client's, for a request).

        InvalidConfig names the field and nothing is saved; StaleVersion when `base_version` is not live."""
        document = plain(document)
        validate(document, self.base, logos=self.logo_exists)
        before = self.versions.get(base_version) if base_version is not None else None
        number = self.versions.save(document, base_version=base_version, saved_by=saved_by, origin=origin, note=note)
        log_event("config.saved", version=number, origin=origin)
        self._audit(number, before, document, saved_by, origin, note, address)
        self.refresh()
        return number

    def _audit(self, number: int, before, document: dict, saved_by: str, origin: str, note: str | None,
               address: str | None) -> None:
        from cancel_flow.config.diff import changes
        from cancel_flow.store.audit import record_audit

        changed = changes(before.document, document) if before is not None else []
        detail = f"version {number} ({origin}){': ' + note if note else ''}"
        if changed:
            detail += " — " + "; ".join(changed)
        record_audit(self.versions.engine, "settings.restored" if origin == "restore" or (note or "").startswith(
            "restored version") else "settings.saved", detail, actor=saved_by, address=address)

    def check(self, document) -> Configuration:
        """`document` validated as a save would be, without saving it (a preview of unsaved edits)."""
        return validate(plain(document), self.base, logos=self.logo_exists)

    def offer(self, offer_id: str) -> Offer | None:
        """An offer by id from the live version, else from the newest version that had it (an offer removed
        since a subscriber accepted it still reads right on their done page and in the dashboard)."""
        found = self._current.find(offer_id) if self._current else None
        if found or self.versions is None:
            return found
        return self.offer_history().get(offer_id)

    def offer_history(self) -> dict[str, Offer]:
        """Every offer id ever saved → its newest form; read once per live version."""
        held_for, offers = self._offer_history
        if held_for == self._version:
            return offers
        offers = {}
        for _, document in self.versions.documents():
            for raw in document.get("offer", []) if isinstance(document, dict) else []:
                try:
                    offer = validate_offer(raw)
                    offers[offer.id] = offer
                except InvalidConfig:
                    continue
        offers.update({offer.id: offer for offer in self._current.offers})
        self._offer_history = (self._version, offers)
        return offers


def open_live(engine, settings) -> LiveConfiguration:
    """The live configuration for a command or a worker: seeded from the offers file on first start."""
    return LiveConfiguration.start(ConfigVersions(engine), settings.offers_path)


def read_live(settings) -> Configuration:
    """The live configuration as it is now, for a command that only reads it (seeded on first start)."""
    from cancel_flow.store import make_engine

    engine = make_engine(settings.database_url)
    try:
        return open_live(engine, settings).current()
    finally:
        engine.dispose()
