from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        # The REST API's CORS follows the socket's allowed origins (realtime/server/cors.py).
        from realtime.server import cors

        cors.connect()
