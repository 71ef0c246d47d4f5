"""WHEP signalling and the frame track, with a real aiortc peer over loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Self

import aiohttp
import numpy as np
import pytest
import torch
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from conftest import Publisher
from engine.frames import Frame, FrameSource
from streambot.webrtc import VIDEO_CLOCK_RATE, FrameTrack, WhepServer

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
