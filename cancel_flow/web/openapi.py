"""The JSON API's one description: each `ApiRoute` names the models of its request and its answers
(cancel_flow/web/api_models.py); its requests are checked against them and `/api/openapi.json` is
generated from the same routes, so the document and the validation cannot disagree.

An endpoint is a handler `async def f(request, body=…, query=…, path=…) -> Answer` plus one `ApiRoute`
in a routes list that the app mounts, and its line in cancel_flow/web/access.py naming the key's scope
it needs. Every ApiRoute needs an API key (401) holding that scope (403), both checked by the route's
guard (access.py); it refuses a body or query its models reject (422 with a message naming the field),
and turns `ApiError` into the `Error` body.
"""

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cancel_flow.store.api_keys import SCOPES
from cancel_flow.web.api_models import Error, ErrorDetail

API_KEY = "cancel_flow.api_key"  # where the route's guard (access.py) leaves the key's holder

MAX_BODY = 4096
_REF = "#/components/schemas/{model}"


class ApiError(Exception):
    """A refusal a handler answers with; its status must be among its route's `errors`. `field` names the
    field refused, when there is one (a configuration's "offer.pause.max_payments")."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error(status: int, code: str, message: str, field: str | None = None) -> Response:
    body = Error(error=ErrorDetail(code=code, message=message, field=field))
    return Response(body.model_dump_json(by_alias=True, exclude_none=True), status_code=status,
                    media_type="application/json")


def _json(answer: BaseModel, status: int) -> Response:
    return Response(answer.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


@dataclass(frozen=True)
class Operation:
    method: str
    summary: str
    operation_id: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    path: type[BaseModel] | None
    status: int
    answer: type[BaseModel] | None
    description: str
    errors: dict[int, str] = field(default_factory=dict)
    scope: str | None = None

    def refusals(self) -> dict[int, str]:
        """Every error status of the operation, with what it means."""
        found = {401: "Missing or invalid API key"}
        if self.scope:
            found[403] = f"The API key lacks the '{self.scope}' scope"
        if self.body or self.query or self.path:
            found[422] = "Malformed body" if self.body else "Invalid query or path"
        return {**found, **self.errors}


class ApiRoute(Route):
    """A route of the JSON API: `body`, `query` and `path` models validate the request (the handler
    gets them as keyword arguments), `answer` describes the `status` response (None: no body),
    `errors` the refusals besides 401, 403 and 422. `scope` is what the key must be allowed
    (api_keys.SCOPES; None: any valid key); `max_body` the largest body taken, in bytes."""

    def __init__(self, path: str, handler: Callable[..., Awaitable[BaseModel | None]], *, method: str, summary: str,
                 operation_id: str, answer: type[BaseModel] | None, scope: str | None, status: int = 200,
                 description: str = "", body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
                 path_params: type[BaseModel] | None = None, errors: dict[int, str] | None = None,
                 max_body: int = MAX_BODY):
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.operation = Operation(method.lower(), summary, operation_id, body, query, path_params, status, answer,
                                   description or summary, errors or {}, scope)
        self.handler, self.max_body = handler, max_body
        super().__init__(path, self._answer, methods=[method])

    async def _answer(self, request: Request) -> Response:
        operation = self.operation
        holder = request.scope.get(API_KEY)  # the guard checked the key; a route without one answers nothing
        if holder is None:
            return error(401, "unauthorized", "Send a valid API key as 'Authorization: Bearer <key>' "
                                              "(cancel-flow api-key create NAME).")
        if operation.scope and operation.scope not in holder.scopes:
            return error(403, "forbidden", f"This API key may not use {request.url.path}: it lacks the "
                                           f"'{operation.scope}' scope (cancel-flow api-key create NAME --scope "
                                           f"{operation.scope}).")
        request.state.api_key = holder
        given = {}
        if operation.body:
            raw = await request.body()
            if len(raw) > self.max_body:
                return error(422, "invalid_body", f"The body must be at most {self.max_body} bytes.")
            try:
                given["body"] = operation.body.model_validate_json(raw)
            except ValidationError as refused:
                return error(422, "invalid_body", explain(refused, operation.body))
        for name, model, values in (("query", operation.query, request.query_params),
                                    ("path", operation.path, request.path_params)):
            if model:
                try:
                    given[name] = model.model_validate(dict(values))
                except ValidationError as refused:
                    return error(422, f"invalid_{name}", explain(refused, model))
        try:
            answer = await self.handler(request, **given)
        except ApiError as refusal:
            return error(refusal.status, refusal.code, refusal.message, refusal.field)
        return Response(status_code=operation.status) if answer is None else _json(answer, operation.status)


def explain(refused: ValidationError, model: type[BaseModel]) -> str:
    """The first problem of a refused request, in words, naming the field (never echoing a value)."""
    problem = refused.errors(include_url=False, include_input=False)[0]
    kind, where = problem["type"], ".".join(str(part) for part in problem["loc"])
    if kind == "json_invalid":
        too_deep = "recursion limit" in problem["msg"]
        return "The body is nested too deeply." if too_deep else "The body is not valid JSON."
    if not where:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return "The body must be a JSON object; see /api/openapi.json."
        return problem["msg"]
    names = [info.alias or name for name, info in model.model_fields.items()]
    if kind == "extra_forbidden":
        return f"Unknown field '{where[:40]}'; allowed: {', '.join(names)}."
    if kind == "missing":
        return f"'{where}' is required."
    if kind == "refused":  # our own rules (api_models.py) say what is wrong in full
        return f"'{where}' {problem['msg']}"
    described = {info.alias or name: info.description for name, info in model.model_fields.items()}
    if described.get(where):
        return f"'{where}' must be {described[where]}."
    return f"'{where}': {problem['msg']}"


class _Schema(GenerateJsonSchema):
    """JSON Schema as the document shows it: no per-field titles; an optional field's absent
    default (None) is left out rather than claimed as an allowed null."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema):
        generated = super().default_schema(schema)
        if generated.get("default", ...) is None and schema["schema"].get("type") != "nullable":
            generated.pop("default")
        return generated


def _parameters(model: type[BaseModel], where: str) -> list[dict]:
    generated = model.model_json_schema(by_alias=True, ref_template=_REF, schema_generator=_Schema)
    required = set(generated.get("required", []))
    parameters = []
    for name, schema in generated.get("properties", {}).items():
        schema = dict(schema)
        described = schema.pop("description", None)
        parameters.append({"name": name, "in": where, "required": where == "path" or name in required, "schema": schema,
                           **({"description": described} if described else {})})
    return parameters


def _content(reference: dict) -> dict:
    return {"application/json": {"schema": reference}}


def openapi_document(base_url: str, routes: Iterable[BaseRoute]) -> dict:
    """The OpenAPI 3.1 document of the `ApiRoute`s among `routes`."""
    api = [route for route in routes if isinstance(route, ApiRoute)]
    wanted = {(Error, "serialization")}
    for route in api:
        if route.operation.body:
            wanted.add((route.operation.body, "validation"))
        if route.operation.answer:
            wanted.add((route.operation.answer, "serialization"))
    ordered = sorted(wanted, key=lambda key: (key[0].__name__, key[1]))
    references, schemas = models_json_schema(ordered, ref_template=_REF, schema_generator=_Schema, by_alias=True)
    paths: dict[str, dict] = {}
    for route in api:
        operation = route.operation
        responses = {str(operation.status): {"description": operation.description}}
        if operation.answer:
            responses[str(operation.status)]["content"] = _content(references[(operation.answer, "serialization")])
        for status, meaning in sorted(operation.refusals().items()):
            responses[str(status)] = {"description": meaning, "content": _content(references[(Error, "serialization")])}
        entry: dict = {"summary": operation.summary, "operationId": operation.operation_id, "responses": responses}
        parameters = [*(_parameters(operation.path, "path") if operation.path else []),
                      *(_parameters(operation.query, "query") if operation.query else [])]
        if parameters:
            entry["parameters"] = parameters
        if operation.body:
            entry["requestBody"] = {"required": True, "content": _content(references[(operation.body, "validation")])}
        paths.setdefault(re.sub(r"{(\w+):\w+}", r"{\1}", route.path), {})[operation.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "cancel-flow API", "version": "1.0.0",
                 "description": "Mint cancel and billing links; read the retention numbers."},
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "cancel-flow api-key create NAME"}},
            "schemas": schemas.get("$defs", {}),
        },
    }
