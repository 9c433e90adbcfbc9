"""The models and routes match the OpenAPI document the server serves, so they cannot drift.

Every component schema is either an enum checked value for value, an object checked field for field
(names, required-ness, nullability, defaults), or listed in `NOT_MODELLED` with the reason. A schema
the server adds later fails here until it is modelled or listed: the client learns of every change.
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
    "Capability": models.Capability,
    "Capsule": models.Capsule,
    "CapsuleHit": models.CapsuleHit,
    "CapsulePreview": models.CapsulePreview,
    "CreatedUser": models.CreatedUser,
    "FieldError": models.FieldError,
    "ForgeError": models.ErrorBody,
    "HealthReport": models.HealthReport,
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
    "ServerHealth": models.ServerHealth,
    "TrustLevelBody": models.TrustLevelBody,
    "User": models.User,
}

ENUMS: dict[str, type[Enum]] = {
    "CapabilityName": models.CapabilityName,
    "CapsuleType": models.CapsuleType,
    "ErrorCode": models.ErrorCode,
    "ErrorKind": models.ErrorKind,
    "LifecycleAction": models.LifecycleAction,
    "OverlayState": models.OverlayState,
    "Role": models.Role,
    "TrustLevel": models.TrustLevel,
}

#: Schemas the client has no model for, and why that is right.
NOT_MODELLED = {
    # The client registers with the JSON body (RegisterJson); the multipart form carries the same.
    "RegisterMultipart": "the client registers with RegisterJson",
    # Only the type of RegisterJson.manifest; `test_the_manifest_input_is_an_object_or_text` checks it.
    "ManifestInput": "RegisterJson.manifest's type: OverlayManifest | str",
}


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    # Sent with a token: the document is served to any caller that has one, public or not.
    response = httpx.get(
        f"{server.url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    response.raise_for_status()
    return response.json()


def schemas(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]


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
    return (isinstance(kinds, list) and "null" in kinds) or any(nullable(a) for a in alternatives)


def accepts_none(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType | typing._UnionGenericAlias) and type(
        None
    ) in typing.get_args(annotation)


def test_every_schema_is_modelled_or_listed_with_a_reason(document: dict[str, Any]) -> None:
    named = set(schemas(document))
    known = set(OBJECTS) | set(ENUMS) | set(NOT_MODELLED)
    assert named - known == set(), "schemas the client does not know yet"
    assert known - named == set(), "models of schemas the server no longer has"


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_values_match(document: dict[str, Any], name: str) -> None:
    assert {member.value for member in ENUMS[name]} == set(schemas(document)[name]["enum"])


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_object_fields_match(document: dict[str, Any], name: str) -> None:
    model = OBJECTS[name]
    properties, required = resolve(document, schemas(document)[name])
    fields = {field.alias or field_name: field for field_name, field in model.model_fields.items()}
    assert set(fields) == set(properties), "field names"
    assert {n for n, f in fields.items() if f.is_required()} == required, "required fields"
    for field_name, field in fields.items():
        schema = properties[field_name]
        assert accepts_none(field.annotation) == nullable(schema), f"{field_name}: nullable"
        if "default" in schema:
            default = to_jsonable_python(field.get_default(call_default_factory=True))
            assert default == schema["default"], f"{field_name}: default"


def test_the_manifest_input_is_an_object_or_text(document: dict[str, Any]) -> None:
    alternatives = schemas(document)["ManifestInput"]["oneOf"]
    refs = {a.get("$ref", "").rsplit("/", 1)[-1] or a.get("type") for a in alternatives}
    assert refs == {"OverlayManifest", "string"}
    assert set(typing.get_args(models.RegisterJson.model_fields["manifest"].annotation)) == {
        models.OverlayManifest,
        str,
    }


def test_the_client_speaks_every_route_and_only_those(document: dict[str, Any]) -> None:
    served = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    assert {(r.method, r.template) for r in _protocol.ROUTES} == served
