from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo page at `/`: plain HTML, CSS and JS on top of clients/js (no build step)."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"
