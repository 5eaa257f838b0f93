"""The multipart schema of a route's upload fields, shown in ``/openapi.json`` and Swagger UI.

A storage reads the body itself, so the route declares no ``File()`` parameter and FastAPI
documents no request body. ``install_openapi(app)`` fills the gap once per app: for each
route it builds a throwaway endpoint whose signature has the ``File()`` / ``Form()``
parameters the route's storages and ``FormModel`` dependencies stand for, lets FastAPI
render that, and copies the request body into the app's schema. The live route is never
touched, so its body still streams.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from .dependency import FormModel, Storage

FORM_CONTENT_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def install_openapi(app: FastAPI) -> None:
    """Document every upload route of ``app``: call once, after creating the app.

    Routes added later (``include_router`` included) are covered too, since the schema
    is built on the first request for it. A ``requestBody`` the route declares itself
    (``openapi_extra``) is kept as written. Two storages declaring one field on a route
    raise ``ValueError`` here (or, for routes added later, when the schema is built)
    rather than failing every request to that route.
    """
    check_upload_routes(app.routes)
    generate = app.openapi
    app.openapi_schema = None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            check_upload_routes(app.routes)
            add_upload_bodies(generate(), app.routes)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def add_upload_bodies(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """Add the upload fields of ``routes`` to an OpenAPI ``schema`` (in place; also returned).

    For a custom ``app.openapi`` that calls ``get_openapi`` itself.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for route in _api_routes(routes):
        if not route.include_in_schema:
            continue
        storages, forms = _declared_fields(route.dependant)
        if not storages and not forms:
            continue
        rendered = _render_body(route.unique_id, storages, forms)
        operation_rendered = rendered["paths"]["/"]["post"]
        for method in sorted(route.methods or ()):
            operation = schema.get("paths", {}).get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _merge_operation(operation, operation_rendered, components, rendered["components"]["schemas"])
    return schema


def check_upload_routes(routes: Iterable[BaseRoute]) -> None:
    """Raise ``ValueError`` naming the field and the route if two storages of one route
    declare the same field: only one of them could ever receive its files."""
    for route in _api_routes(routes):
        storages, _ = _declared_fields(route.dependant)
        seen: dict[str, Storage] = {}
        for storage in storages:
            other = seen.setdefault(storage.name, storage)
            if other is not storage:
                methods = ",".join(sorted(route.methods or ()))
                raise ValueError(
                    f"route {methods} {route.path_format}: {other!r} and {storage!r} both declare "
                    f"the field {storage.name!r}"
                )


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[Any]:
    """Each API route as FastAPI documents it: with the prefix and dependencies of the
    routers it was included through (``iter_route_contexts`` in newer FastAPI; older
    versions copy included routes into ``app.routes``)."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        yield from (route for route in routes if isinstance(route, APIRoute))
        return
    for context in iter_route_contexts(list(routes)):
        if isinstance(context.original_route, APIRoute):
            yield context


def _declared_fields(dependant: Dependant) -> tuple[list[Storage], list[FormModel[Any]]]:
    """The storages and form models anywhere in a route's dependency tree, once each, in
    the order FastAPI lists body params: depth first, route ``dependencies`` first."""
    storages: list[Storage] = []
    forms: list[FormModel[Any]] = []
    pending = list(reversed(dependant.dependencies))
    while pending:
        sub = pending.pop()
        call = sub.call
        if isinstance(call, Storage) and call not in storages:
            storages.append(call)
        elif isinstance(call, FormModel) and call not in forms:
            forms.append(call)
        pending.extend(reversed(sub.dependencies))
    return storages, forms


def _file_parameter(index: int, storage: Storage) -> inspect.Parameter:
    """What a FastAPI user would write for this field: ``UploadFile`` or ``list[UploadFile]``
    with ``File()``, an optional one as ``File(None)``: ``| None`` would wrap the schema in
    an ``anyOf`` that Swagger UI labels ``string | (string | null)``."""
    default = ... if storage.required else None
    if storage.count > 1:
        annotation: Any = list[UploadFile]
        param = File(default, alias=storage.name, max_length=storage.count)
    else:
        annotation = UploadFile
        param = File(default, alias=storage.name)
    return inspect.Parameter(
        f"file_{index}", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=param
    )


def _text_parameters(forms: list[FormModel[Any]]) -> Iterator[inspect.Parameter]:
    index = 0
    for form in forms:
        for name, field in form.model.model_fields.items():
            extra: dict[str, Any] = {"alias": field.alias or name}
            if field.title is not None:
                extra["title"] = field.title
            if field.description is not None:
                extra["description"] = field.description
            if field.examples is not None:
                extra["examples"] = field.examples
            if field.default_factory is not None:
                param = Form(default_factory=field.default_factory, **extra)
            else:
                param = Form(... if field.is_required() else field.default, **extra)
            annotation = field.rebuild_annotation()
            yield inspect.Parameter(
                f"text_{index}", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=param
            )
            index += 1


def _render_body(unique_id: str, storages: list[Storage], forms: list[FormModel[Any]]) -> dict[str, Any]:
    """FastAPI's own schema for an endpoint with the equivalent ``File()``/``Form()`` params."""
    parameters = [_file_parameter(index, storage) for index, storage in enumerate(storages)]
    parameters += _text_parameters(forms)

    async def endpoint(**fields: Any) -> None:
        """Never called: only its signature is rendered."""

    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    # operation_id makes FastAPI name the body component after the real route.
    route = APIRoute("/", endpoint, methods=["POST"], operation_id=unique_id)
    rendered = get_openapi(title="", version="", routes=[route])
    operation = rendered["paths"]["/"]["post"]
    # Text fields alone FastAPI would document as urlencoded; the body reader takes multipart only.
    (schema,) = operation["requestBody"]["content"].values()
    operation["requestBody"]["content"] = {"multipart/form-data": schema}
    body = rendered["components"]["schemas"][_body_component_name(operation)]
    for storage in storages:
        _mark_binary(body["properties"][storage.name])
    return rendered


def _body_component_name(operation: dict[str, Any]) -> str:
    ref: str = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def _mark_binary(schema: dict[str, Any]) -> None:
    """Add ``format: binary`` to a file's ``type: string``.

    FastAPI for OpenAPI 3.1 writes only ``contentMediaType``, which Swagger UI 5 turns
    into a file picker for a single file but not for the items of an array; ``format:
    binary`` (what FastAPI wrote for OpenAPI 3.0) is understood by every version.
    """
    target = schema.get("items", {}) if schema.get("type") == "array" else schema
    if target.get("type") == "string":
        target.setdefault("format", "binary")


def _merge_operation(
    operation: dict[str, Any],
    rendered: dict[str, Any],
    components: dict[str, Any],
    rendered_components: dict[str, Any],
) -> None:
    body = rendered["requestBody"]
    body_name = _body_component_name(rendered)
    existing = operation.get("requestBody")
    if existing is None:
        # Rebuilt to keep FastAPI's key order: requestBody before responses.
        items = list(operation.items())
        at = next((i for i, (key, _) in enumerate(items) if key == "responses"), len(items))
        operation.clear()
        operation.update([*items[:at], ("requestBody", body), *items[at:]])
    elif not _merge_into_form_body(existing, body_name, components, rendered_components[body_name]):
        return
    for name, component in rendered_components.items():
        if name != body_name:
            components.setdefault(name, component)
    components.setdefault(body_name, rendered_components[body_name])
    responses = operation.setdefault("responses", {})
    if "422" in rendered["responses"]:
        responses.setdefault("422", rendered["responses"]["422"])


def _merge_into_form_body(
    existing: dict[str, Any], body_name: str, components: dict[str, Any], rendered: dict[str, Any]
) -> bool:
    """A route that also has FastAPI ``Form()``/``File()`` params already has a body
    component of the same name: add the upload fields to it. Any other body is the
    route's own declaration and is left alone (returns False)."""
    content = existing.get("content", {})
    media_type = next((m for m in FORM_CONTENT_TYPES if m in content), None)
    if (
        media_type is None
        or content[media_type].get("schema", {}).get("$ref", "").rsplit("/", 1)[-1] != body_name
    ):
        return False
    component = components.get(body_name)
    if component is None:
        return False
    component.setdefault("properties", {}).update(rendered.get("properties", {}))
    required = [*component.get("required", []), *rendered.get("required", [])]
    if required:
        component["required"] = list(dict.fromkeys(required))
    existing["content"] = {"multipart/form-data": content[media_type]}
    existing["required"] = existing.get("required", False) or bool(required)
    return True
