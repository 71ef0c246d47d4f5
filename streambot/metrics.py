"""Prometheus metrics, read from the live components at scrape time.

The engine keeps plain counters (``Engine.stats()``) so it needs no metrics
library; this collector turns them into Prometheus families when ``GET
/metrics`` is scraped, asks every output for its own, and costs the frame loop
nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class StreamCollector(Collector):
    def __init__(self, app: Any) -> None:
        self.app = app  # streambot.app.App: its engine, director, outputs
        self.chat_lines: Counter[str] = Counter()  # by ChatResult.status

    def collect(self) -> Iterator[Any]:
        app = self.app
        if not app.engine.running:
            return
        stats = app.engine.stats()
        yield GaugeMetricFamily("streambot_fps", "Frames published per second (last 2 s)", value=stats.fps)
        yield GaugeMetricFamily("streambot_target_fps", "Configured frame rate", value=stats.target_fps)
        yield CounterMetricFamily("streambot_frames", "Frames rendered and published", value=stats.frames)
        yield CounterMetricFamily("streambot_frames_dropped", "Ticks simulated without a render because the loop was late", value=stats.dropped)
        yield CounterMetricFamily("streambot_frames_late", "Frames published more than one interval late", value=stats.late)
        yield CounterMetricFamily("streambot_ticks", "Simulation ticks", value=stats.ticks)
        yield GaugeMetricFamily("streambot_render_every", "Ticks per rendered frame: above 1 the backend cannot keep "
                                "the frame rate and renders at target_fps / render_every", value=stats.render_every)
        yield GaugeMetricFamily("streambot_render_fps", "The backend's internal frame rate",
                                value=stats.target_fps / stats.render_every)
        yield CounterMetricFamily("streambot_frames_paced", "Ticks simulated without a render at the lower internal rate",
                                  value=stats.paced)
        yield GaugeMetricFamily("streambot_render_seconds", "Time the last frame took to render", value=stats.last_render_seconds)
        yield GaugeMetricFamily("streambot_world_tick", "The world's current tick", value=stats.world_tick)
        yield SummaryMetricFamily(
            "streambot_event_to_frame_seconds",
            "From an event's submission to the first frame that shows it",
            count_value=stats.latency_count, sum_value=stats.latency_sum,
        )
        quantiles = GaugeMetricFamily(
            "streambot_event_to_frame_recent_seconds", "Quantiles over the last 4096 events", labels=["quantile"]
        )
        recent = list(stats.latencies)
        for q in (0.5, 0.9, 0.99):
            quantiles.add_metric([str(q)], quantile(recent, q))
        yield quantiles
        events = CounterMetricFamily("streambot_events", "Direction events by outcome", labels=["outcome"])
        events.add_metric(["applied"], stats.applied)
        events.add_metric(["refused"], stats.refused)
        yield events
        depth = GaugeMetricFamily("streambot_queue_depth", "Items waiting in a queue", labels=["queue"])
        depth.add_metric(["engine_inbox"], stats.inbox_depth)
        depth.add_metric(["chat_pending"], app.chat_pending)
        yield depth
        lines = CounterMetricFamily("streambot_chat_lines", "Chat lines handled, by result", labels=["status"])
        for status, count in sorted(self.chat_lines.items()):
            lines.add_metric([status], count)
        yield lines
        yield GaugeMetricFamily("streambot_store_ok", "1 while the world store takes every write",
                                value=0 if stats.store_error else 1)
        bus = app.engine.bus
        yield CounterMetricFamily("streambot_stream_messages", "Messages published on the event stream", value=bus.published)
        for output in app.outputs:
            yield from output.metrics()


def make_registry(app: Any) -> tuple[CollectorRegistry, StreamCollector]:
    registry = CollectorRegistry()
    collector = StreamCollector(app)
    registry.register(collector)
    return registry, collector


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
