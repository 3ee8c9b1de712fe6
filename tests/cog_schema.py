"""Cog's static schema generator, re-stated for the tests: the OpenAPI document ``cog build``
(0.23) writes for a runner, so that ``.cog/openapi_schema.json`` can be checked (and rewritten)
without Docker or the Go toolchain."""

from __future__ import annotations

import inspect
import types
import typing

import cog
from cog.input import FieldInfo

COG_VERSION = "0.23.1"
"""The Cog release the schema is written for (``info.version``; what ``cog build`` writes)."""


def run_inputs(runner_cls) -> list[tuple[str, typing.Any, FieldInfo]]:
    """(name, annotation, FieldInfo) of each run() input, in order."""
    hints = typing.get_type_hints(runner_cls.run)
    out = []
    for name, param in inspect.signature(runner_cls.run).parameters.items():
        if name == "self":
            continue
        assert isinstance(param.default, FieldInfo), f"{name}: every input should use Input()"
        out.append((name, hints[name], param.default))
    return out


def _primitive(tp) -> dict:
    if tp is cog.Path:
        return {"format": "uri", "type": "string"}
    return {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"}}[tp]


def _unwrap_optional(tp) -> tuple[typing.Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return tp, False


def _number(value):
    """A number as Go writes a float64 (cog keeps ge/le and float defaults as float64): 4.0 -> 4."""
    value = float(value)
    return int(value) if value.is_integer() else value


def _title(name: str) -> str:
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _output_schema(tp) -> dict:
    """The JSON schema cog 0.23's static generator writes for an output type (pkg/schema/schema_type.go):
    a primitive; list[X] -> array; dict[str, V] -> object with additionalProperties; a BaseModel
    -> object whose fields are titled, an Optional field nullable and not required."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return {"items": _output_schema(args[0]), "type": "array"}
    if origin is dict:
        return {"additionalProperties": _output_schema(args[1]), "type": "object"}
    if isinstance(tp, type) and issubclass(tp, cog.BaseModel):
        properties, required = {}, []
        for name, hint in typing.get_type_hints(tp).items():
            inner, nullable = _unwrap_optional(hint)
            prop = {**_output_schema(inner), "title": _title(name)}
            if nullable:
                prop["nullable"] = True
            else:
                required.append(name)
            properties[name] = dict(sorted(prop.items()))
        return {"properties": properties, "required": required, "type": "object"}
    return _primitive(tp)


def build_openapi_schema(runner_cls) -> dict:
    """The OpenAPI document cog 0.23's static generator writes for this runner
    (pkg/schema/openapi_spec.go: Input with x-order, choices as enum components, Optional ->
    nullable, Input(default=None) on an Optional -> "default": null, ge/le -> minimum/maximum)."""
    properties, required, enums = {}, [], {}
    for order, (name, annotation, info) in enumerate(run_inputs(runner_cls)):
        tp, nullable = _unwrap_optional(annotation)
        prop: dict = {"x-order": order}
        if info.choices:
            enums[name] = {
                "description": "An enumeration.", "enum": list(info.choices), "title": name,
                "type": _primitive(tp)["type"],
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(_primitive(tp))
        if info.default is not None or nullable:
            prop["default"] = _number(info.default) if isinstance(info.default, float) else info.default
        elif not nullable:
            required.append(name)
        if nullable:
            prop["nullable"] = True
        if info.description is not None:
            prop["description"] = info.description
        if info.ge is not None:
            prop["minimum"] = _number(info.ge)
        if info.le is not None:
            prop["maximum"] = _number(info.le)
        for key, value in (("minLength", info.min_length), ("maxLength", info.max_length),
                           ("pattern", info.regex), ("x-cog-accept", info.accept)):
            if value is not None:
                prop[key] = value
        if info.deprecated:
            prop["deprecated"] = True
        properties[name] = dict(sorted(prop.items()))
    input_schema = {"properties": properties, "title": "Input", "type": "object"}
    if required:
        input_schema["required"] = required
    returns = typing.get_type_hints(runner_cls.run)["return"]
    output_schema = dict(sorted({**_output_schema(returns), "title": "Output"}.items()))
    error_422 = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        "description": "Validation Error",
    }
    any_200 = {"content": {"application/json": {"schema": {}}}, "description": "Successful Response"}
    response = {
        "input": {"$ref": "#/components/schemas/Input"},
        "output": {"$ref": "#/components/schemas/Output"},
        "id": {"title": "Id", "type": "string"},
        "version": {"title": "Version", "type": "string"},
        "created_at": {"format": "date-time", "title": "Created At", "type": "string"},
        "started_at": {"format": "date-time", "title": "Started At", "type": "string"},
        "completed_at": {"format": "date-time", "title": "Completed At", "type": "string"},
        "status": {"title": "Status", "type": "string"},
        "error": {"title": "Error", "type": "string"},
        "logs": {"title": "Logs", "type": "string"},
        "metrics": {"title": "Metrics", "type": "object"},
    }
    schemas = {
        "Input": input_schema,
        "Output": output_schema,
        **enums,
        "PredictionRequest": {
            "properties": {"id": {"title": "Id", "type": "string"}, "input": {"$ref": "#/components/schemas/Input"}},
            "title": "PredictionRequest",
            "type": "object",
        },
        "PredictionResponse": {"properties": dict(sorted(response.items())), "title": "PredictionResponse",
                               "type": "object"},
        "Status": {
            "description": "An enumeration.", "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "title": "Status", "type": "string",
        },
        "HTTPValidationError": {
            "properties": {"detail": {"items": {"$ref": "#/components/schemas/ValidationError"}, "title": "Detail",
                                      "type": "array"}},
            "title": "HTTPValidationError",
            "type": "object",
        },
        "ValidationError": {
            "properties": {
                "loc": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "title": "Location",
                        "type": "array"},
                "msg": {"title": "Message", "type": "string"},
                "type": {"title": "Error Type", "type": "string"},
            },
            "required": ["loc", "msg", "type"],
            "title": "ValidationError",
            "type": "object",
        },
    }
    paths = {
        "/": {"get": {"operationId": "root__get", "responses": {"200": any_200}, "summary": "Root"}},
        "/health-check": {"get": {"operationId": "healthcheck_health_check_get", "responses": {"200": any_200},
                                  "summary": "Healthcheck"}},
        "/predictions": {"post": {
            "description": "Run a single prediction on the model",
            "operationId": "predict_predictions_post",
            "requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/PredictionRequest"}}}},
            "responses": {
                "200": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictionResponse"}}},
                    "description": "Successful Response"},
                "422": error_422,
            },
            "summary": "Predict",
        }},
        "/predictions/{prediction_id}/cancel": {"post": {
            "operationId": "cancel_predictions__prediction_id__cancel_post",
            "parameters": [{"in": "path", "name": "prediction_id", "required": True,
                            "schema": {"title": "Prediction Id", "type": "string"}}],
            "responses": {"200": any_200, "422": error_422},
            "summary": "Cancel",
        }},
    }
    return {
        "components": {"schemas": schemas},
        "info": {"title": "Cog", "version": COG_VERSION},
        "openapi": "3.0.2",
        "paths": paths,
    }
