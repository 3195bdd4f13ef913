"""Metrics of the store and of this server's convergence on it, read at scrape time.

A replica that lags shows as versions known (in the store, at its last sync) above versions
served, or as a growing ``scriptserve_store_last_sync_timestamp_seconds`` age.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.serving.convergence import StoreSync


class StoreCollector:
    """Builds the store families from a ``StoreSync`` at scrape time."""

    def __init__(self, sync: StoreSync) -> None:
        self.sync = sync

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats, registry = self.sync.stats, self.sync.registry
        yield CounterMetricFamily(
            "scriptserve_store_syncs", "Complete reconciles with the model store.", stats.syncs)
        yield CounterMetricFamily(
            "scriptserve_store_sync_errors", "Reconciles with the model store that failed.",
            stats.errors)
        yield GaugeMetricFamily(
            "scriptserve_store_last_sync_timestamp_seconds",
            "Unix time of the last complete reconcile (alert on time() minus this).",
            stats.last_ok)
        yield GaugeMetricFamily(
            "scriptserve_store_sync_duration_seconds", "How long the last reconcile took.",
            stats.last_seconds)
        known = GaugeMetricFamily(
            "scriptserve_store_versions_known",
            "Live versions of each model in the store at the last sync.", labels=["model"])
        served = GaugeMetricFamily(
            "scriptserve_store_versions_served",
            "Versions of each model this server serves.", labels=["model"])
        failed = GaugeMetricFamily(
            "scriptserve_store_versions_failed",
            "Versions in the store that failed to load on this server.", labels=["model"])
        failures: dict[str, int] = {}
        for key in registry.load_failures:
            failures[key.split("/")[0]] = failures.get(key.split("/")[0], 0) + 1
        for name in sorted(set(stats.known) | set(registry.names())):
            known.add_metric([name], stats.known.get(name, 0))
            served.add_metric([name], len(registry.versions(name)) if name in registry.names() else 0)
            failed.add_metric([name], failures.get(name, 0))
        yield from (known, served, failed)
