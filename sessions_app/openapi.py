"""drf-spectacular additions: the error answers every client meets, added to each operation of
docs/openapi.yaml in one place instead of on every view, and the extensions that describe our
bearer scheme and the sign-out views (registered when this module is imported)."""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "additionalProperties": True,
}
VALIDATION = {"type": "object", "additionalProperties": True, "description": "field name -> list of problems"}

# (path, method) -> extra status codes beyond the ones every authenticated operation gets.
THROTTLED = {("/api/auth/token/", "post"), ("/api/auth/token/refresh/", "post"), ("/api/conversations/", "post")}
# Throttles that fail closed when they cannot be checked (Redis unreachable): 503 + Retry-After.
FAIL_CLOSED = {("/api/auth/token/", "post")}


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
            if (path, method) in FAIL_CLOSED:
                responses.setdefault("503", _error("the rate limit cannot be checked for a moment: retry after the "
                                                   "Retry-After header's seconds"))
            if path == "/api/auth/token/refresh/":
                responses.setdefault("401", _error("invalid, expired, already used or revoked refresh token, or a "
                                                   "sign-in past its maximum age"))
            if path == "/api/auth/token/":
                responses.setdefault("401", _error("no active account with these credentials"))
    return result




class StandingJWTScheme(SimpleJWTScheme):
    """The API's bearer scheme is SimpleJWT's, with revoked tokens refused (same header)."""

    target_class = "sessions_app.authentication.StandingJWTAuthentication"


class SignOutSchema(OpenApiViewExtension):
    target_class = "sessions_app.auth_api.SignOut"

    def view_replacement(self):
        class Fixed(self.target_class):
            @extend_schema(
                responses={200: inline_serializer("SignedOut", {
                    "signed_out": serializers.BooleanField(),
                    "sign_in_revoked": serializers.BooleanField(),
                })},
            )
            def post(self, request, *args, **kwargs):
                return super().post(request, *args, **kwargs)

        return Fixed


class SignOutEverywhereSchema(OpenApiViewExtension):
    target_class = "sessions_app.auth_api.SignOutEverywhere"

    def view_replacement(self):
        class Fixed(self.target_class):
            @extend_schema(
                request=None,
                responses={200: inline_serializer("SignedOutEverywhere", {
                    "signed_out": serializers.BooleanField(),
                    "refresh_tokens_revoked": serializers.IntegerField(),
                })},
            )
            def post(self, request, *args, **kwargs):
                return super().post(request, *args, **kwargs)

        return Fixed
