"""/openapi.json is a valid OpenAPI document that types every successful answer."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

FREE_FORM = {"outputs"}  # a prediction mirrors the model's own output structure
NATIVE = ("/models", "/health", "/ready", "/metrics")


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def _typed(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("type", "$ref", "anyOf", "allOf", "oneOf", "const", "enum"))


def test_the_schema_is_valid_openapi(client):
    validate(client.get("/openapi.json").json())


def test_every_success_of_the_native_api_has_a_typed_schema(client):
    spec = client.get("/openapi.json").json()
    checked = 0
    for path, item in spec["paths"].items():
        if not path.startswith(NATIVE):
            continue
        for method, operation in item.items():
            successes = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
            assert successes, f"{method.upper()} {path} documents no success"
            for code, answer in successes.items():
                content = answer.get("content")
                assert content, f"{method.upper()} {path} {code} has no content"
                for media_type, body in content.items():
                    schema = _resolve(spec, body.get("schema") or {})
                    where = f"{method.upper()} {path} {code} {media_type}"
                    assert _typed(schema), f"{where}: untyped body"
                    if media_type == "application/json":
                        properties = schema.get("properties")
                        assert schema.get("type") == "object" and properties, f"{where}: no fields"
                        loose = [n for n, p in properties.items() if not _typed(p) and n not in FREE_FORM]
                        assert not loose, f"{where}: untyped fields {loose}"
                    checked += 1
    assert checked >= 14


def test_model_info_fields_are_documented_with_their_types(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    version = schemas["VersionInfo"]["properties"]
    assert version["version"]["type"] == "integer"
    assert version["batching"]["$ref"].endswith("/BatchingInfo")
    assert schemas["BatchingInfo"]["properties"]["mode"]["enum"] == ["auto", "on", "off"]
