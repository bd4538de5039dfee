import asyncio

from django.core.management.base import BaseCommand

from realtime.node.liveness import reap_dead_nodes


class Command(BaseCommand):
    help = "Closes connections and releases runs and slots of nodes that stopped heartbeating."

    def handle(self, *args, **options) -> None:
        result = asyncio.run(reap_dead_nodes())
        self.stdout.write(
            f"dead nodes: {', '.join(result.dead_nodes) or 'none'}; "
            f"connections closed: {result.connections_closed}; runs released: {result.runs_released}; "
            f"connection slots released: {result.slots_released}"
        )
