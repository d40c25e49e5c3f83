"""`/api/config…`: the live configuration as JSON (the TOML document's tables), its versions, a save made
from a known version, and restoring an old one. Keys need the `config` scope."""

from datetime import datetime
from typing import Any

from pydantic import Field, RootModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from cancel_flow.errors import InvalidConfig
from cancel_flow.store.config_versions import StaleVersion
from cancel_flow.web.api_models import Answer, Body, Query
from cancel_flow.web.coach_auth import client_address
from cancel_flow.web.openapi import ApiError, ApiRoute

MAX_CONFIG_BODY = 64 * 1024


class LiveConfig(Answer):
    version: int = Field(description="the live version's number: send it back as base_version when saving")
    config: dict[str, Any] = Field(description="brand, rules, offer (a list), experiment (a list), emails, alerts: "
                                               "the offers.toml document as JSON")


class ConfigSave(Body):
    base_version: int = Field(ge=1, description="the version this change was made from (GET /api/config's version)")
    config: dict[str, Any] = Field(description="the whole configuration, as GET /api/config gives it")
    note: str | None = Field(default=None, max_length=500, description="what changed and why, for the history")


class SavedNumber(Answer):
    version: int = Field(description="the new live version")


class VersionInfo(Answer):
    version: int
    saved_at: datetime
    saved_by: str = Field(description="who saved it: a coach's email, an API key's name, or cancel-flow (first start)")
    note: str | None


class Versions(RootModel[list[VersionInfo]]):
    pass


class VersionPath(Query):
    number: int = Field(ge=1, le=2_000_000_000, description="a version number from GET /api/config/versions")


def _saved_by(request: Request) -> str:
    return f"API key '{request.state.api_key.name}'"


def _refused(refused: InvalidConfig) -> ApiError:
    return ApiError(422, "invalid_config", refused.message, refused.field)


def _stale(base: int | None, stale: StaleVersion) -> ApiError:
    return ApiError(409, "stale_version", f"Version {stale.live} was saved after version {base}, so nothing was "
                                          f"overwritten: read GET /api/config, make the change again, and send "
                                          f"base_version {stale.live}.")


async def read_config(request: Request) -> LiveConfig:
    saved = await run_in_threadpool(request.app.state.config.document)
    return LiveConfig(version=saved.version, config=saved.document)


async def save_config(request: Request, body: ConfigSave) -> SavedNumber:
    live = request.app.state.config
    try:
        number = await run_in_threadpool(lambda: live.save(body.config, base_version=body.base_version,
                                                           saved_by=_saved_by(request), origin="api", note=body.note,
                                                           address=client_address(request)))
    except InvalidConfig as refused:
        raise _refused(refused) from None
    except StaleVersion as stale:
        raise _stale(body.base_version, stale) from None
    return SavedNumber(version=number)


async def list_versions(request: Request) -> Versions:
    saved = await run_in_threadpool(request.app.state.config.versions.all)
    return Versions([VersionInfo(version=v.version, saved_at=v.saved_at, saved_by=v.saved_by, note=v.note) for v in saved])


def restore(live, number: int, saved_by: str, origin: str, address: str | None = None) -> int:
    """Save version `number`'s document as a new version (on top of whatever is live now)."""
    old = live.document(number)
    if old is None:
        raise LookupError(number)
    for _ in range(3):  # another save may land between reading the live number and saving
        base = live.versions.latest_number()
        try:
            return live.save(old.document, base_version=base, saved_by=saved_by, origin=origin,
                             note=f"restored version {number}", address=address)
        except StaleVersion:
            continue
    raise StaleVersion(live.versions.latest_number())


async def restore_version(request: Request, path: VersionPath) -> SavedNumber:
    try:
        number = await run_in_threadpool(restore, request.app.state.config, path.number, _saved_by(request), "api",
                                         client_address(request))
    except LookupError:
        raise ApiError(404, "not_found", f"There is no version {path.number}.") from None
    except InvalidConfig as refused:
        raise _refused(refused) from None
    except StaleVersion as stale:
        raise _stale(None, stale) from None
    return SavedNumber(version=number)


_INVALID = "The configuration was refused (invalid_config, naming the field); nothing was saved"
routes = [
    ApiRoute("/api/config", read_config, method="GET", answer=LiveConfig, scope="config",
             summary="The live configuration and its version", operation_id="getConfig"),
    ApiRoute("/api/config", save_config, method="PUT", body=ConfigSave, answer=SavedNumber, scope="config",
             max_body=MAX_CONFIG_BODY, summary="Save a new version, made from base_version", operation_id="putConfig",
             errors={409: "base_version is not the live version: somebody saved meanwhile; nothing was overwritten",
                     422: _INVALID}),
    ApiRoute("/api/config/versions", list_versions, method="GET", answer=Versions, scope="config",
             summary="Every saved version, newest first", operation_id="listConfigVersions"),
    ApiRoute("/api/config/versions/{number}/restore", restore_version, method="POST", path_params=VersionPath,
             answer=SavedNumber, scope="config", summary="Save an old version's content as the new live version",
             operation_id="restoreConfigVersion",
             errors={404: "No such version", 409: "Other saves kept landing; try again", 422: _INVALID}),
]
