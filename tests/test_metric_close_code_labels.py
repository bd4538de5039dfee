"""A client chooses its own close code (3000-4999 are open to it), and each value used to become
a label of tether_connection_closes_total: unbounded series, a memory leak in the node and in
Prometheus (issue 24, item 7). Codes outside the WebSocket protocol's own and the server's close
table are counted as `other`."""

import pytest

from realtime.core import closes
from tests.support.metrics import scrape_app
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_client_chosen_close_codes_are_counted_as_other(cluster, token):
    _, app = cluster("labels-node")
    before = await scrape_app()
    for code in (3917, 4777, 4999):
        client = WSClient(app)
        await client.connect(token)
        await client.drop(code)
    after = await scrape_app()
    for code in ("3917", "4777", "4999"):
        assert not any(labels and dict(labels).get("code") == code for _, labels in after.samples), code
    moved = (after.value("tether_connection_closes_total", code="other", reason="connection_lost")
             - before.value("tether_connection_closes_total", code="other", reason="connection_lost"))
    assert moved == 3


@pytest.mark.pure
def test_known_codes_keep_their_label():
    from realtime.core.metrics import close_code_label

    assert [close_code_label(c) for c in (1000, 1006, 1011, 4012, 4401, 4429, None, 4402, 2999)] == [
        "1000", "1006", "1011", "4012", "4401", "4429", "none", "other", "other"]
    assert {close_code_label(r.close_code) for r in vars(closes).values() if isinstance(r, closes.CloseReason)} \
        <= {"4012", "4400", "4401", "4403", "4404", "4408", "4409", "4413", "4429"}
