from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Conversations and connections"

    def ready(self) -> None:
        from sessions_app import signals

        signals.connect()
