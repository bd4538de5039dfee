"""Entry points as Django management commands: `run_agents` (agent worker processes) and
`reap_nodes` (release what dead nodes left behind). May import every realtime package."""
