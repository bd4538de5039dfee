import pytest

from tests.support.daphne_nodes import DaphneNode


@pytest.fixture
def daphne_cluster(request):
    """Factory of real daphne nodes; every node is killed at teardown, its log shown on failure."""
    nodes: list[DaphneNode] = []

    def start(node_id: str, **env: str) -> DaphneNode:
        node = DaphneNode(node_id, {k: str(v) for k, v in env.items()})
        nodes.append(node)
        return node.start()

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for node in nodes:
        if failed:
            print(f"--- log of {node.node_id} ---\n{node.tail()}")
        node.kill()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
