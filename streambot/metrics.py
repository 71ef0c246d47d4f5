"""Prometheus metrics, read from the live components at scrape time.

The frame loop keeps plain counters (``engine.loop.LoopStats``) so the engine
needs no metrics library; this collector turns them into Prometheus families
when ``GET /metrics`` is scraped, and costs the frame loop nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class StreamCollector(Collector):
    def __init__(self, app: Any) -> None:
        self.app = app  # streambot.app.App: its loop, director, outputs
        self.chat_lines: Counter[str] = Counter()  # by ChatResult.status

    def collect(self) -> Iterator[Any]:
        loop = self.app.loop
        stats = loop.stats
        now = time.monotonic()
        yield GaugeMetricFamily("streambot_fps", "Frames published per second (last 2 s)", value=stats.fps(now))
        yield GaugeMetricFamily("streambot_target_fps", "Configured frame rate", value=loop.fps)
        yield CounterMetricFamily("streambot_frames", "Frames rendered and published", value=stats.frames)
        yield CounterMetricFamily("streambot_frames_dropped", "Ticks simulated without a render because the loop was late", value=stats.dropped)
        yield CounterMetricFamily("streambot_frames_late", "Frames published more than one interval late", value=stats.late)
        yield CounterMetricFamily("streambot_ticks", "Simulation ticks", value=stats.ticks)
        yield GaugeMetricFamily("streambot_render_seconds", "Time the last frame took to render", value=stats.last_render_seconds)
        yield GaugeMetricFamily("streambot_world_tick", "The world's current tick", value=loop.world.tick)
        recent = list(stats.latencies)
        latency = SummaryMetricFamily(
            "streambot_event_to_frame_seconds",
            "From an event's submission to the first frame that shows it",
            count_value=stats.latency_count, sum_value=stats.latency_sum,
        )
        yield latency
        quantiles = GaugeMetricFamily(
            "streambot_event_to_frame_recent_seconds", "Quantiles over the last 4096 events", labels=["quantile"]
        )
        for q in (0.5, 0.9, 0.99):
            quantiles.add_metric([str(q)], _quantile(recent, q))
        yield quantiles
        events = CounterMetricFamily("streambot_events", "Direction events by outcome", labels=["outcome"])
        events.add_metric(["applied"], stats.applied)
        events.add_metric(["refused"], stats.refused)
        yield events
        depth = GaugeMetricFamily("streambot_queue_depth", "Items waiting in a queue", labels=["queue"])
        depth.add_metric(["engine_inbox"], stats.inbox_depth)
        depth.add_metric(["chat_pending"], self.app.chat_pending)
        yield depth
        lines = CounterMetricFamily("streambot_chat_lines", "Chat lines handled, by result", labels=["status"])
        for status, count in sorted(self.chat_lines.items()):
            lines.add_metric([status], count)
        yield lines
        if self.app.whep is not None:
            yield GaugeMetricFamily("streambot_webrtc_sessions", "Live WebRTC viewers", value=self.app.whep.session_count)
        if self.app.mpegts is not None:
            out = self.app.mpegts
            yield CounterMetricFamily("streambot_mpegts_frames", "Frames sent over MPEG-TS", value=out.frames_sent)
            yield CounterMetricFamily("streambot_mpegts_reconnects", "MPEG-TS reconnects", value=out.reconnects)
            yield GaugeMetricFamily("streambot_mpegts_connected", "1 while the MPEG-TS output is connected", value=1 if out.connected else 0)


def make_registry(app: Any) -> tuple[CollectorRegistry, StreamCollector]:
    registry = CollectorRegistry()
    collector = StreamCollector(app)
    registry.register(collector)
    return registry, collector


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
