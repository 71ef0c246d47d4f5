"""WHEP signalling, the shared H.264 encoder and the frame track, with real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Self

import aiohttp
import av
import numpy as np
import pytest
import torch
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from conftest import Publisher
from engine.frames import Frame, FrameSource
from streambot.webrtc import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, FrameTrack, PacketQueue, SharedEncoder, WhepServer

pytestmark = pytest.mark.timeout(60)

WIDTH, HEIGHT = 320, 180


def level_of(seq: int) -> int:
    """The brightness that encodes ``seq`` in the green channel; 12 apart, so a lossy
    codec cannot confuse neighbours."""
    return 24 + (seq * 12) % 204


def synthetic_frame(seq: int, published: float | None = None) -> Frame:
    planar = torch.empty((3, HEIGHT, WIDTH), dtype=torch.uint8)
    planar[0] = torch.linspace(0, 255, WIDTH).to(torch.uint8)  # red ramps left to right
    planar[1] = level_of(seq)
    planar[2] = torch.linspace(0, 255, HEIGHT).to(torch.uint8)[:, None]  # blue ramps top to bottom
    frame = Frame(seq=seq, tick=seq, planar=planar)
    if published is not None:
        frame.published = published
    return frame


class Levels:
    """Synthetic frames; remembers every brightness level it handed out."""

    def __init__(self) -> None:
        self.published_levels: set[int] = set()

    def __call__(self, seq: int) -> torch.Tensor:
        self.published_levels.add(level_of(seq))
        return synthetic_frame(seq).planar


class WhepTestServer:
    def __init__(self, whep: WhepServer) -> None:
        self.whep = whep
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.add_routes(self.whep.routes())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.whep.close()
        await self.runner.cleanup()


async def make_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())  # gathers candidates: no trickle in WHEP
    return pc, pc.localDescription.sdp


async def post_offer(http: aiohttp.ClientSession, url: str, sdp: str, content_type: str = "application/sdp"):
    async with http.post(url + "/whep", data=sdp.encode(), headers={"Content-Type": content_type}) as response:
        return response.status, await response.text(), response.headers.get("Location"), response.content_type


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_client_receives_live_frames_that_match_the_published_ones():
    frames = FrameSource()
    whep = WhepServer(frames)
    with Publisher(frames, Levels()) as publisher:
        async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
            pc, offer = await make_offer()
            track_ready: asyncio.Future = asyncio.get_running_loop().create_future()
            pc.on("track", lambda track: track_ready.done() or track_ready.set_result(track))
            try:
                status, answer, location, content_type = await post_offer(http, server.url, offer)
                assert status == 201, answer
                assert content_type == "application/sdp"
                assert location and location.startswith("/whep/")
                assert whep.session_count == 1
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                track = await asyncio.wait_for(track_ready, 10)

                decoded = []
                deadline = time.monotonic() + 20
                while len(decoded) < 40:
                    assert time.monotonic() < deadline, f"only {len(decoded)} frames decoded in 20 s"
                    video = await asyncio.wait_for(track.recv(), 10)
                    decoded.append(video.to_ndarray(format="rgb24"))
                assert pc.connectionState == "connected"
            finally:
                await pc.close()

            assert all(image.shape == (HEIGHT, WIDTH, 3) for image in decoded)
            levels = sorted(publisher.picture.published_levels)
            greens = [float(image[HEIGHT // 4 : -HEIGHT // 4, WIDTH // 4 : -WIDTH // 4, 1].mean()) for image in decoded]
            for green in greens:
                nearest = min(levels, key=lambda level: abs(level - green))
                assert abs(nearest - green) < 6, f"decoded green {green:.1f} matches no published level"
            distinct = {min(levels, key=lambda level: abs(level - green)) for green in greens}
            assert len(distinct) >= 10, f"the picture barely changed: {len(distinct)} distinct levels"
            last = decoded[-1].astype(np.float32)
            assert last[:, : WIDTH // 4, 0].mean() + 100 < last[:, -WIDTH // 4 :, 0].mean(), "red ramp lost"
            assert last[: HEIGHT // 4, :, 2].mean() + 100 < last[-HEIGHT // 4 :, :, 2].mean(), "blue ramp lost"

            # The client went away: its session is removed without a DELETE.
            await wait_until(lambda: whep.session_count == 0, 15, "the closed session to be removed")


@pytest.mark.asyncio
async def test_sessions_are_capped_and_delete_ends_them():
    frames = FrameSource()
    frames.publish(synthetic_frame(0))
    whep = WhepServer(frames, max_sessions=2)
    peers = []
    async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
        try:
            locations = []
            for _ in range(2):
                pc, offer = await make_offer()
                peers.append(pc)
                status, text, location, _ = await post_offer(http, server.url, offer)
                assert status == 201, text
                locations.append(location)
            assert len(set(locations)) == 2
            assert whep.session_count == 2

            pc, offer = await make_offer()
            peers.append(pc)
            status, text, location, _ = await post_offer(http, server.url, offer)
            assert status == 503, text
            assert location is None
            assert "slots" in text

            async with http.delete(server.url + locations[0]) as response:
                assert response.status in (200, 204)
            assert whep.session_count == 1
            async with http.delete(server.url + locations[0]) as response:
                assert response.status == 404
            async with http.delete(server.url + "/whep/no-such-session") as response:
                assert response.status == 404

            status, text, _, _ = await post_offer(http, server.url, offer)  # a slot is free again
            assert status == 201, text
            assert whep.session_count == 2
        finally:
            await asyncio.gather(*(pc.close() for pc in peers))


@pytest.mark.asyncio
async def test_bad_offers_get_a_one_line_reason():
    whep = WhepServer(FrameSource())
    async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
        status, text, _, _ = await post_offer(http, server.url, "hello")
        assert status == 400 and text.count("\n") == 1, text

        broken = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:oops\r\n"
        status, text, _, _ = await post_offer(http, server.url, broken)
        assert status == 400 and text.count("\n") == 1, text
        assert text.startswith("bad offer:")

        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        await pc.close()
        status, text, _, _ = await post_offer(http, server.url, pc.localDescription.sdp)
        assert status == 400 and "no video" in text, text

        status, text, _, _ = await post_offer(http, server.url, "v=0\r\n", content_type="text/plain")
        assert status == 415, text

        assert whep.session_count == 0


@pytest.mark.asyncio
async def test_slow_reader_gets_the_newest_frame_not_a_backlog():
    frames = FrameSource()
    track = FrameTrack(frames)
    start = time.monotonic()
    for seq in range(10):
        frames.publish(synthetic_frame(seq, published=start + seq / 30))
    first = await asyncio.wait_for(track.recv(), 2)
    assert track.last_seq == 9
    assert first.pts == 0 and first.time_base.denominator == VIDEO_CLOCK_RATE

    for seq in range(10, 40):  # the reader is busy while 30 frames go by
        frames.publish(synthetic_frame(seq, published=start + seq / 30))
    second = await asyncio.wait_for(track.recv(), 2)
    assert track.last_seq == 39
    # Timestamps follow publication time, not the number of frames sent.
    assert second.pts == round(30 / 30 * VIDEO_CLOCK_RATE)
    assert (second.width, second.height) == (WIDTH, HEIGHT)
    green = second.to_ndarray(format="rgb24")[..., 1].mean()
    assert abs(green - level_of(39)) < 3

    # recv waits for a newer frame rather than returning the same one again.
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)
    assert not pending.done()
    frames.publish(synthetic_frame(40, published=start + 40 / 30))
    third = await asyncio.wait_for(pending, 2)
    assert track.last_seq == 40 and third.pts > second.pts
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


@pytest.mark.asyncio
async def test_a_quiet_source_repeats_the_last_frame_with_fresh_timestamps():
    frames = FrameSource()
    track = FrameTrack(frames, repeat_after=0.2)
    frames.publish(synthetic_frame(5))
    first = await asyncio.wait_for(track.recv(), 2)
    began = time.monotonic()
    again = await asyncio.wait_for(track.recv(), 2)
    waited = time.monotonic() - began
    assert 0.15 < waited < 1.0, waited
    assert track.last_seq == 5
    assert again.pts - first.pts >= 0.15 * VIDEO_CLOCK_RATE
    track.stop()


# ---- the shared H.264 encoder ------------------------------------------------------------


def green_of(video) -> float:
    image = video.to_ndarray(format="rgb24")
    return float(image[HEIGHT // 4 : -HEIGHT // 4, WIDTH // 4 : -WIDTH // 4, 1].mean())


def nearest_level(green: float, levels: set[int]) -> int:
    return min(levels, key=lambda level: abs(level - green))


class Viewer:
    """A real aiortc client of the WHEP server that decodes what it gets.

    ``codec`` limits its offer to one codec ("video/VP8": a viewer without H.264).
    Once ``start_reading()`` is called it keeps (monotonic time, green level) for
    every decoded picture in ``received``; a viewer that never reads stands for one
    that stopped.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str, codec: str | None = None) -> None:
        self.http, self.url, self.codec = http, url, codec
        self.pc = RTCPeerConnection()
        self.answer = ""
        self.session_id = ""
        self.track = None
        self.connected_at: float | None = None
        self.received: list[tuple[float, float]] = []
        self._reader: asyncio.Task | None = None
        self._track_ready = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda track: self._track_ready.done() or self._track_ready.set_result(track))
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()

    async def post(self) -> tuple[int, str]:
        """Sends the offer; the HTTP status and the body (the answer on 201)."""
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if self.codec is not None:
            codecs = RTCRtpReceiver.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType in (self.codec, "video/rtx")])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, self.answer, location, _ = await post_offer(self.http, self.url, self.pc.localDescription.sdp)
        if location:
            self.session_id = location.rsplit("/", 1)[1]
        return status, self.answer

    async def connect(self) -> None:
        status, answer = await self.post()
        assert status == 201, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.track = await asyncio.wait_for(self._track_ready, 10)

    def start_reading(self) -> None:
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                video = await self.track.recv()
                self.received.append((time.monotonic(), green_of(video)))

    def frames_between(self, start: float, end: float) -> int:
        return sum(start <= at < end for at, _ in self.received)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.pc.close()


async def watch(http, url: str, count: int, codec: str | None = None) -> list[Viewer]:
    viewers = [Viewer(http, url, codec) for _ in range(count)]
    await asyncio.gather(*(viewer.connect() for viewer in viewers))
    return viewers


def packet(keyframe: bool, at: float) -> av.Packet:
    """An encoded frame ``at`` seconds into the stream (its content never matters here)."""
    made = av.Packet(b"\x00\x00\x00\x01\x65" if keyframe else b"\x00\x00\x00\x01\x41")
    made.is_keyframe = keyframe
    made.pts = round(at * VIDEO_CLOCK_RATE)
    made.time_base = VIDEO_TIME_BASE
    return made


def test_a_viewer_queue_starts_at_a_keyframe_and_skips_to_the_next_when_behind():
    async def scenario() -> None:
        queue = PacketQueue(max_backlog=0.1)
        queue.put(packet(False, 0.0))  # before this viewer's first keyframe: never its loss
        first = packet(True, 0.1)
        queue.put(first)
        assert await queue.get() is first
        assert queue.dropped == 0

        for at in (0.2, 0.25, 0.3):  # the sender took none of these: up to 0.1 s behind is fine
            queue.put(packet(False, at))
        assert queue.dropped == 0
        queue.put(packet(False, 0.35))  # 0.15 s behind: skip to the next keyframe
        assert queue.dropped == 4
        queue.put(packet(False, 0.4))  # still waiting for a keyframe
        assert queue.dropped == 5
        second = packet(True, 0.45)
        queue.put(second)
        following = packet(False, 0.5)
        queue.put(following)
        assert await queue.get() is second and await queue.get() is following

        queue.put(packet(False, 0.55))
        third = packet(True, 0.6)
        queue.put(third)  # a keyframe makes the backlog before it useless
        assert queue.dropped == 6
        assert await queue.get() is third

        queue.close()
        with pytest.raises(MediaStreamError):
            await queue.get()

    asyncio.run(scenario())


@pytest.mark.asyncio
async def test_three_viewers_decode_one_shared_encode_of_each_frame():
    frames = FrameSource()
    whep = WhepServer(frames)
    with Publisher(frames, Levels()) as publisher:
        async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
            viewers = await watch(http, server.url, 3)
            try:
                assert whep.session_count == 3 and whep.own_encoder_count == 0
                for viewer in viewers:
                    viewer.start_reading()
                await wait_until(lambda: all(len(v.received) >= 5 for v in viewers), 10, "pictures at every viewer")
                assert whep.encoder.running and whep.encoder.subscribers == 3

                seq_before, encoded_before = frames.latest().seq, whep.encoder.frames_encoded
                start = time.monotonic()
                await asyncio.sleep(2.0)
                end = time.monotonic()
                published = frames.latest().seq - seq_before
                encoded = whep.encoder.frames_encoded - encoded_before
            finally:
                await asyncio.gather(*(viewer.close() for viewer in viewers))

            # Once per frame for all three, not once per viewer (frames published as the
            # window closed may still be on their way through the encoder).
            assert 0.8 * published <= encoded <= published + 2, (encoded, published)
            levels = publisher.picture.published_levels
            for viewer in viewers:
                greens = [green for at, green in viewer.received if start <= at < end]
                assert len(greens) >= 45, f"a viewer decoded {len(greens)} pictures in 2 s"
                assert all(abs(nearest_level(green, levels) - green) < 6 for green in greens)
                distinct = {nearest_level(green, levels) for green in greens}
                assert len(distinct) >= 10, f"the picture barely changed: {len(distinct)} distinct levels"

            await wait_until(lambda: whep.session_count == 0, 15, "the closed sessions to be removed")
            await wait_until(lambda: not whep.encoder.running, 5, "the encoder to stop without viewers")


@pytest.mark.asyncio
async def test_a_viewer_that_stops_reading_slows_nobody_else():
    frames = FrameSource()
    whep = WhepServer(frames)
    with Publisher(frames, Levels()):
        async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
            steady, stalled = (viewers := await watch(http, server.url, 3))[:2], viewers[2]
            try:
                for viewer in steady:
                    viewer.start_reading()
                await wait_until(lambda: all(len(v.received) >= 5 for v in steady), 10, "pictures")
                # The stalled viewer's client never reads, and on the server its sender stops
                # taking packets (detached from its track, as a stuck transport would leave it).
                sender = whep._sessions[stalled.session_id].pc.getSenders()[0]
                track = sender.track
                sender.replaceTrack(None)
                start = time.monotonic()
                await asyncio.sleep(2.0)
                end = time.monotonic()
                for viewer in steady:
                    rate = viewer.frames_between(start, end) / (end - start)
                    assert rate >= 25, f"a steady viewer got {rate:.1f} fps while another one stalled"
                stalled_session, *steady_sessions = (
                    whep._sessions[v.session_id] for v in (stalled, *steady)
                )
                assert stalled_session.track.dropped > 0
                assert all(session.track.dropped == 0 for session in steady_sessions)

                # Back to reading, it picks up again at the next keyframe.
                sender.replaceTrack(track)
                stalled.start_reading()
                resumed = time.monotonic()
                await wait_until(lambda: stalled.frames_between(resumed, float("inf")) >= 10, 5,
                                 "the stalled viewer to get pictures again")
            finally:
                await asyncio.gather(*(viewer.close() for viewer in viewers))


@pytest.mark.asyncio
async def test_a_joining_viewer_gets_a_picture_within_a_second():
    frames = FrameSource()
    whep = WhepServer(frames)
    whep.encoder.keyframe_interval = 60.0  # only the keyframe the join asks for can serve it
    with Publisher(frames, Levels()):
        async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
            (first,) = await watch(http, server.url, 1)
            viewers = [first]
            try:
                first.start_reading()
                await wait_until(lambda: len(first.received) >= 30, 10, "the first viewer's pictures")
                keyframes = whep.encoder.keyframes

                (joining,) = await watch(http, server.url, 1)
                viewers.append(joining)
                joining.start_reading()
                await wait_until(lambda: joining.received, 5, "the joining viewer's first picture")
                waited = joining.received[0][0] - joining.connected_at
                assert waited < 1.0, f"the first picture came {waited:.2f} s after connecting"
                assert whep.encoder.keyframes == keyframes + 1
            finally:
                await asyncio.gather(*(viewer.close() for viewer in viewers))


@pytest.mark.asyncio
async def test_viewers_joining_together_share_forced_keyframes():
    frames = FrameSource()
    encoder = SharedEncoder(frames, keyframe_interval=60.0, min_keyframe_gap=0.5)
    firsts: list[av.Packet] = []

    async def first_packet(queue: PacketQueue) -> None:
        firsts.append(await queue.get())
        while True:  # keep reading, as a sender would
            await queue.get()

    with Publisher(frames, Levels()):
        readers = [asyncio.ensure_future(first_packet(encoder.subscribe())) for _ in range(5)]
        await asyncio.sleep(0.2)  # these five are served by the stream's first keyframe
        readers += [asyncio.ensure_future(first_packet(encoder.subscribe())) for _ in range(5)]
        await asyncio.sleep(1.0)  # and these by one forced keyframe, 0.5 s after the first
        try:
            assert encoder.keyframes == 2
            assert len(firsts) == 10 and all(packet.is_keyframe for packet in firsts)
        finally:
            await encoder.close()
            await asyncio.gather(*readers, return_exceptions=True)
    assert not encoder.running


@pytest.mark.asyncio
async def test_a_viewer_without_h264_gets_an_encoder_of_its_own():
    frames = FrameSource()
    whep = WhepServer(frames, max_own_encoders=1)
    with Publisher(frames, Levels()) as publisher:
        async with WhepTestServer(whep) as server, aiohttp.ClientSession() as http:
            (vp8,) = await watch(http, server.url, 1, codec="video/VP8")
            (h264,) = await watch(http, server.url, 1)
            refused = Viewer(http, server.url, codec="video/VP8")
            viewers = [vp8, h264, refused]
            try:
                assert "VP8/90000" in vp8.answer and "H264" not in vp8.answer
                assert "H264/90000" in h264.answer and "VP8" not in h264.answer
                assert whep.own_encoder_count == 1 and whep.session_count == 2
                status, text = await refused.post()
                assert status == 503 and "without H.264" in text, text

                for viewer in (vp8, h264):
                    viewer.start_reading()
                await wait_until(lambda: len(vp8.received) >= 20 and len(h264.received) >= 20, 10, "pictures")
                assert whep.encoder.subscribers == 1  # the VP8 viewer is not on the shared stream
            finally:
                await asyncio.gather(*(viewer.close() for viewer in viewers))
            levels = publisher.picture.published_levels
            for viewer in (vp8, h264):
                assert all(abs(nearest_level(green, levels) - green) < 6 for _, green in viewer.received)
