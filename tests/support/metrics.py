"""Scraping /metrics the way Prometheus does, parsed with prometheus_client's own parser."""

from __future__ import annotations

import httpx
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """One scrape: `value(name, **labels)` is the sample's value (0 when absent, as a counter
    that never moved is absent for a labelled metric)."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape_app(**headers: str) -> Samples:
    """GET /metrics of this process's Django app (in-process tests; from 127.0.0.1)."""
    response = await AsyncClient().get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return Samples(response.content.decode())


async def scrape_url(url: str, **headers: str) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(url, headers=headers)
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return Samples(response.text)
