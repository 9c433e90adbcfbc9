"""The models and routes match the OpenAPI document the server serves, so they cannot drift.

Every component schema is an enum checked value for value, an object checked field for field (names,
required-ness, nullability, defaults), an envelope (`Data_X`, `List_X`) checked with its item's
model, or listed in `NOT_MODELLED` with the reason. A schema the server adds later fails here until
it is modelled or listed: additions are never passed over silently.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, Server
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from forge_overlay_client import _protocol, models

#: Schema name -> the model that reads or writes it.
OBJECTS: dict[str, type[BaseModel]] = {
    "AuditEvent": models.AuditEvent,
    "BuildSpec": models.BuildSpec,
    "Capability": models.Capability,
    "Capsule": models.Capsule,
    "CapsuleHit": models.CapsuleHit,
    "CapsulePreview": models.CapsulePreview,
    "CreatedUser": models.CreatedUser,
    "ErrorBody": models.ErrorBody,
    "HealthReport": models.HealthReport,
    "LogEntry": models.LogEntry,
    "LogLine": models.LogLine,
    "Meta": models.Meta,
    "NewCapsule": models.NewCapsule,
    "NewUser": models.NewUser,
    "Overlay": models.Overlay,
    "OverlayHealth": models.OverlayHealth,
    "OverlayInvocation": models.OverlayInvocation,
    "OverlayManifest": models.OverlayManifest,
    "OverlayResult": models.OverlayResult,
    "ReasonBody": models.ReasonBody,
    "RegisterJson": models.RegisterJson,
    "RevokeBody": models.RevokeBody,
    "Revoked": models.Revoked,
    "RevokedTokens": models.RevokedTokens,
    "ServerHealth": models.ServerHealth,
    "TokenInfo": models.TokenInfo,
    "TrustLevelBody": models.TrustLevelBody,
    "User": models.User,
}

ENUMS: dict[str, type[Enum]] = {
    "AuditAction": models.AuditAction,
    "CapabilityName": models.CapabilityName,
    "CapsuleType": models.CapsuleType,
    "ErrorCode": models.ErrorCode,
    "ErrorKind": models.ErrorKind,
    "LifecycleAction": models.LifecycleAction,
    "LogLevel": models.LogLevel,
    "OverlayState": models.OverlayState,
    "Role": models.Role,
    "TrustLevel": models.TrustLevel,
}

#: Envelopes: `Data_X` is `models.Data[X]`, `List_X` is `models.Page[X]`, X a model above.
ENVELOPES = {"Data": models.Data, "List": models.Page}

#: Schemas the client has no model for, and why that is right.
NOT_MODELLED = {
    "RegisterMultipart": "the client registers with the JSON body, RegisterJson, which carries the same",
    "ManifestInput": "the type of RegisterJson.manifest; test_the_manifest_input_is_an_object_or_text",
}


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    # Sent with a token: the document is served to any caller that has one, public or not.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = httpx.get(f"{server.url}/api/v1/openapi.json", headers=headers)
    response.raise_for_status()
    return response.json()


def schemas(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]


def envelope(name: str) -> tuple[type[BaseModel], type[BaseModel]] | None:
    """`(envelope, item model)` of an envelope schema's name, or None."""
    kind, _, item = name.partition("_")
    if kind in ENVELOPES and item in OBJECTS:
        return ENVELOPES[kind], OBJECTS[item]
    return None


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """An object schema's properties and required names, through `$ref` and `allOf` (flattened fields)."""
    if ref := schema.get("$ref"):
        return resolve(document, schemas(document)[ref.rsplit("/", 1)[-1]])
    properties = dict(schema.get("properties", {}))
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        more, more_required = resolve(document, part)
        properties.update(more)
        required |= more_required
    return properties, required


def nullable(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    alternatives = schema.get("oneOf", []) + schema.get("anyOf", [])
    return (
        kinds == "null" or (isinstance(kinds, list) and "null" in kinds) or any(map(nullable, alternatives))
    )


def accepts_none(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


def assert_matches(document: dict[str, Any], schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The model has the schema's fields, each as required, as nullable and with its default."""
    properties, required = resolve(document, schema)
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    assert set(fields) == set(properties), f"{model.__name__}: field names"
    assert {n for n, f in fields.items() if f.is_required()} == required, f"{model.__name__}: required fields"
    for name, field in fields.items():
        assert accepts_none(field.annotation) == nullable(properties[name]), (
            f"{model.__name__}.{name}: nullable"
        )
        if "default" in properties[name]:
            default = to_jsonable_python(field.get_default(call_default_factory=True))
            assert default == properties[name]["default"], f"{model.__name__}.{name}: default"


def test_every_schema_is_modelled_or_listed_with_a_reason(document: dict[str, Any]) -> None:
    named = set(schemas(document))
    envelopes = {name for name in named if envelope(name)}
    known = set(OBJECTS) | set(ENUMS) | set(NOT_MODELLED)
    assert named - envelopes - known == set(), "schemas the client does not know yet"
    assert known - named == set(), "models of schemas the server no longer has"
    assert {name.partition("_")[0] for name in envelopes} == set(ENVELOPES)


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_values_match(document: dict[str, Any], name: str) -> None:
    assert {member.value for member in ENUMS[name]} == set(schemas(document)[name]["enum"])


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_object_fields_match(document: dict[str, Any], name: str) -> None:
    assert_matches(document, schemas(document)[name], OBJECTS[name])


def test_envelopes_and_the_items_they_inline_match(document: dict[str, Any]) -> None:
    checked = []
    for name, schema in schemas(document).items():
        if found := envelope(name):
            kind, item = found
            assert_matches(document, schema, kind)
            inlined = schema["properties"]["data"]
            assert_matches(document, inlined.get("items", inlined), item)
            checked.append(name)
    assert "Data_Overlay" in checked and "List_Overlay" in checked


def test_the_manifest_input_is_an_object_or_text(document: dict[str, Any]) -> None:
    # The document writes ManifestInput as a tagged union (`{"Object": {...}}` / `{"Text": "..."}`),
    # but the server reads the bare object or string (a `serde_json::Value`), which is what the
    # client sends; so each alternative is read through its one-property wrapper, if it has one.
    kinds = set()
    for alternative in schemas(document)["ManifestInput"]["oneOf"]:
        inner = next(iter(alternative["properties"].values())) if "properties" in alternative else alternative
        kinds.add(inner.get("$ref", "").rsplit("/", 1)[-1] or inner["type"])
    assert kinds == {"OverlayManifest", "string"}
    manifest = models.RegisterJson.model_fields["manifest"].annotation
    assert set(typing.get_args(manifest)) == {models.OverlayManifest, str}


def test_the_client_speaks_every_route_and_only_those(document: dict[str, Any]) -> None:
    served = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    assert {(route.method, route.template) for route in _protocol.ROUTES} == served
