import asyncio
import signal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from project.keys import require_explicit_keys
from realtime.node.runtime import NodeRuntime


class Command(BaseCommand):
    help = "Runs agent work on this process (set REALTIME_RUN_AGENTS_IN_SERVER=0 on web nodes)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--grace", type=float, default=10.0, help="seconds for runs to finish on SIGTERM")
        parser.add_argument(
            "--metrics-port", type=int, default=settings.METRICS_WORKER_PORT,
            help="serve this worker's Prometheus metrics on this port (one port per worker; 0: none); "
            "bound to METRICS_WORKER_BIND, same access rule as /metrics",
        )

    def handle(self, *args, grace: float, metrics_port: int, **options) -> None:
        try:
            require_explicit_keys("manage.py run_agents")
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if metrics_port:
            from realtime.infra.exporter import serve_worker_metrics

            server = serve_worker_metrics(settings.METRICS_WORKER_BIND, metrics_port)
            self.stdout.write(f"metrics on http://{settings.METRICS_WORKER_BIND}:{server.server_port}/metrics")
        asyncio.run(self._run(grace))

    async def _run(self, grace: float) -> None:
        node = NodeRuntime(f"{settings.REALTIME_NODE_ID}-agents", run_agents=True, register=False)
        node.ensure_started()
        node.listen_for_kicks()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                raise SystemExit(1)  # a second signal forces the exit
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        self.stdout.write(f"agent worker {node.node_id} running")
        await stop.wait()
        await node.stop(grace=grace)
        self.stdout.write("agent worker stopped")
