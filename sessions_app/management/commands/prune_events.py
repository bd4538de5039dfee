from django.core.management.base import BaseCommand

from sessions_app import services


class Command(BaseCommand):
    help = (
        "Deletes acknowledged events past the acked window and any event past the unacked window,"
        " only ever a prefix of each conversation's log (never a hole)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--acked-days", type=float, default=None)
        parser.add_argument("--unacked-days", type=float, default=None)

    def handle(self, *args, acked_days=None, unacked_days=None, **options) -> None:
        result = services.prune_events(acked_days=acked_days, unacked_days=unacked_days)
        self.stdout.write(
            f"pruned {result.acked_deleted} acknowledged and {result.unacked_deleted} unacknowledged events"
        )
