"""drf-spectacular post-processing: the error answers every client meets, added to each
operation of docs/openapi.yaml in one place instead of on every view."""

from __future__ import annotations

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "additionalProperties": True,
}
VALIDATION = {"type": "object", "additionalProperties": True, "description": "field name -> list of problems"}

# (path, method) -> extra status codes beyond the ones every authenticated operation gets.
THROTTLED = {("/api/auth/token/", "post"), ("/api/conversations/", "post")}


def _error(description: str, ref: str = "Error") -> dict:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def add_error_responses(result: dict, generator, request, public) -> dict:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR
    schemas["ValidationError"] = VALIDATION
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if operation.get("security") and any("jwtAuth" in s for s in operation["security"]):
                responses.setdefault("401", _error("missing, invalid or expired access token"))
            if "{conversation_id}" in path:
                responses.setdefault("404", _error("no such conversation, or another user's"))
            if operation.get("requestBody") or "/events/" in path:
                responses.setdefault("400", _error("invalid input", "ValidationError"))
            if (path, method) in THROTTLED:
                responses.setdefault("429", _error("throttled: retry after the Retry-After header's seconds"))
            if path == "/api/auth/token/":
                responses.setdefault("401", _error("no active account with these credentials"))
    return result
