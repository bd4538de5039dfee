"""REST side of tokens: sign-in, refresh and sign-out with explicit revocation.

SimpleJWT does the signing, rotation and blacklist; these classes add the standing checks of
sessions_app/tokens.py, so a revoked sign-in is refused on every path, not only on the
socket. Settings select the serializers (SIMPLE_JWT); authentication is in
sessions_app/authentication.py (DRF imports it while rest_framework.views is loading)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenBackendError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import Token

from sessions_app import tokens


class SignInSerializer(TokenObtainPairSerializer):
    """Login: every token pair starts a sign-in (`sid`) at the user's current generation."""

    @classmethod
    def get_token(cls, user: Any) -> Token:
        return tokens.stamp_new_sign_in(super().get_token(user), user)


class StandingRefreshSerializer(TokenRefreshSerializer):
    """Refresh (with rotation): refused once the token's sign-in or user was revoked."""

    # The docstring above is the schema's description (docs/openapi.yaml); the rotation itself
    # is the one token module's (sessions_app/tokens.py, shared with the socket).
    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            rotated = tokens.rotate(attrs["refresh"])
        except tokens.TokenRevoked as exc:
            raise InvalidToken(str(exc)) from None
        if rotated.refresh is None:
            return {"access": rotated.access}
        return {"access": rotated.access, "refresh": rotated.refresh}


class SignOutSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class SignOut(APIView):
    """`POST /api/auth/logout/ {"refresh"}`: ends this sign-in. Its refresh token is
    blacklisted, every token of its lineage is refused from now on, and its open sockets (in
    every tab sharing it) close with 4401 within REALTIME_RESYNC_INTERVAL. Signing out twice is
    not an error."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    serializer_class = SignOutSerializer

    def post(self, request: Request) -> Response:
        serializer = SignOutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            # A token already blacklisted (rotated, or signed out before) still names its
            # sign-in: check the signature, expiry and type, not the blacklist.
            claims = token_backend.decode(serializer.validated_data["refresh"], verify=True)
        except TokenBackendError as exc:
            raise InvalidToken(str(exc)) from None
        if claims.get(api_settings.TOKEN_TYPE_CLAIM) != "refresh":
            raise InvalidToken("not a refresh token")
        standing = tokens.standing_of(claims, claims.get(api_settings.USER_ID_CLAIM))
        with transaction.atomic():
            outstanding = OutstandingToken.objects.filter(jti=claims.get(api_settings.JTI_CLAIM)).first()
            if outstanding is not None:
                BlacklistedToken.objects.get_or_create(token=outstanding)
            if standing.sid is not None:
                tokens.revoke_sign_in(standing.user_id, standing.sid, "signed out")
        return Response({"signed_out": True, "sign_in_revoked": standing.sid is not None})


class SignOutEverywhere(APIView):
    """`POST /api/auth/logout-all/` (bearer access token): ends every session of the caller."""

    def post(self, request: Request) -> Response:
        done = tokens.revoke_user_sessions(request.user.pk, "signed out everywhere")
        return Response({"signed_out": True, "refresh_tokens_revoked": done.refresh_tokens_blacklisted})
