from django.contrib import admin
from django.urls import include, path

# Unknown URLs under /api/ (a conversation id that is no UUID) answer JSON like the API.
handler404 = "sessions_app.api.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("sessions_app.urls")),
    path("", include("demo.urls")),
]
