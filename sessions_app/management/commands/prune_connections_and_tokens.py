from django.core.management.base import BaseCommand

from sessions_app import services


class Command(BaseCommand):
    help = (
        "Deletes connection rows closed more than REALTIME_RETENTION_CONNECTIONS_DAYS ago, expired refresh"
        " tokens (outstanding and blacklisted) and revoked sign-ins whose tokens have all expired."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--connection-days", type=float, default=None)

    def handle(self, *args, connection_days=None, **options) -> None:
        result = services.prune_connections_and_tokens(connection_days=connection_days)
        self.stdout.write(
            f"pruned {result.connections_deleted} closed connections, {result.tokens_deleted} expired refresh "
            f"tokens and {result.sign_ins_deleted} revoked sign-ins"
        )
