from django.contrib import admin
from django.urls import include, path

from sessions_app.admin_login import throttled

# Unknown URLs under /api/ (a conversation id that is no UUID) answer JSON like the API.
handler404 = "sessions_app.api.not_found"

urlpatterns = [
    # Before the admin's own: its sign-in form counts against the token endpoint's throttles.
    path("admin/login/", throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path("", include("sessions_app.urls")),
    path("", include("demo.urls")),
]
