from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from realtime.infra.exporter import metrics_view
from sessions_app import api, auth_api

urlpatterns = [
    path("api/auth/token/", api.ThrottledTokenObtainPairView.as_view(), name="token_obtain"),
    path("api/auth/token/refresh/", api.ThrottledTokenRefreshView.as_view(), name="token_refresh"),
    path("api/auth/logout/", auth_api.SignOut.as_view(), name="logout"),
    path("api/auth/logout-all/", auth_api.SignOutEverywhere.as_view(), name="logout_all"),
    path("api/conversations/", api.ConversationList.as_view(), name="conversations"),
    path("api/conversations/<uuid:conversation_id>/", api.ConversationDetail.as_view(), name="conversation"),
    path("api/conversations/<uuid:conversation_id>/messages/", api.MessageList.as_view(), name="messages"),
    path("api/conversations/<uuid:conversation_id>/events/", api.EventList.as_view(), name="events"),
    path("api/realtime/nodes/", api.NodeList.as_view(), name="nodes"),
    path("healthz", api.healthz, name="healthz"),
    path("readyz", api.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file (`?script`), so the page runs under
    # `script-src 'self'`; its inline style block is allowed by hash (project/csp.py).
    path("api/docs/", api.SwaggerUI.as_view(url_name="schema"), name="swagger-ui"),
]
