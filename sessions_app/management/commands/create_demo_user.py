from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Creates (or resets) the demo user. Idempotent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")
        parser.add_argument("--port", type=int, default=8000, help="the port the printed curl command uses")

    def handle(self, *args, username: str, password: str, port: int, **options) -> None:
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.is_active = True
        user.save()
        self.stdout.write(f"{'created' if created else 'updated'} user {username!r}")
        self.stdout.write(
            "token: curl -s -X POST -H 'Content-Type: application/json' "
            f"-d '{{\"username\":\"{username}\",\"password\":\"{password}\"}}' http://127.0.0.1:{port}/api/auth/token/"
        )
