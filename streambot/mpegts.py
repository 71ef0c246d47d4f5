"""H.264 in MPEG-TS over UDP or TCP, for OBS's Media Source and other players.

A ``PacedOutput``: one named daemon thread takes each new frame from the
``FrameSource`` as soon as it is published, encodes it with libx264 and sends it,
then sends ``flush_repeats`` skip frames right behind it; with no new frame it
sends the last one again once a frame interval. The thread only reads the frame
source, so a slow or missing receiver can never slow the frame loop. A lost
connection is retried with exponential backoff until ``stop()``.

Why the skip frames: a receiver built on FFmpeg (OBS's Media Source) holds
packets back before it shows a frame. Its H.264 parser keeps one (a frame ends
where the next begins) and its frame-threaded decoder keeps one per extra
decoding thread; FFmpeg starts min(CPUs + 1, 16) of them on a machine with more
than one CPU, so the receiver holds ``receiver_packets(cpus)`` packets: 3 on a
2-core machine, 16 on one with 15 cores or more. Sent at the frame rate alone,
each frame waits that many frame intervals inside the receiver; followed by that
many skip frames, it comes out at once (benchmarks/obs_latency.py). A skip frame
is a P-frame whose every macroblock copies the one before: about 20 bytes (one
188-byte TS packet on the wire), made here without the encoder, so repeats cost
no encode time. They are reference frames, so the ``frame_num`` of every x264
frame after them is renumbered (a fixed-width field in each slice header).

Timestamps follow the wall clock on MPEG-TS's own 90 kHz clock, the skip frames
one tick behind their frame, and with ``low_latency`` (the default) they run 10 %
slow. OBS plays a live stream on its timestamps, anchored at the first frame it
decoded, so whatever delay that frame had would stay for the whole session;
always a little behind schedule, it shows each frame as soon as it is decoded
(benchmarks/obs_latency.py: ``shipped`` against ``true-clock``). A player that
buffers by timestamps instead (VLC, ffplay) falls further behind the longer it
plays: turn ``low_latency`` off for it. x264's rate control follows the declared
frame rate, not the timestamps, so the bitrate stays what it is set to.

Settings follow what was measured with OBS 29 (docs in shared/obs-headless.md):
x264 ultrafast + zerolatency, a keyframe every second, packets flushed as soon as
they are muxed, and 1316-byte UDP datagrams (7 TS packets, fits any MTU).
"""

from __future__ import annotations

import logging
import os
import re
from fractions import Fraction
from urllib.parse import urlsplit

import av

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from engine import Frame, FrameSource

from .errors import OutputError
from .pacing import PacedOutput, add_h264_stream, close_quietly, encode

log = logging.getLogger(__name__)

UDP_PACKET_SIZE = 1316  # 7 x 188-byte TS packets
TCP_IO_TIMEOUT_US = 2_000_000  # a stuck TCP write gives up after 2 s, so stop() stays prompt
CLOCK_RATE = 90_000  # MPEG-TS timestamps count in 90 kHz
MAX_FLUSH_REPEATS = 16  # FFmpeg starts at most 16 decoding threads by itself (MAX_AUTO_THREADS)
SLOW_TIMESTAMPS = 1.1  # low_latency: a second of timestamps takes 1.1 s of wall clock
TS_PACKET_BITS = 188 * 8  # what one skip frame takes on the wire (plus UDP/IP headers)


def receiver_packets(cpus: int) -> int:
    """Packets an FFmpeg-based receiver (OBS's Media Source) holds before it outputs an
    H.264 frame, on a machine with ``cpus`` CPUs: one in the parser, plus threads - 1
    in the frame-threaded decoder, which FFmpeg runs with min(cpus + 1, 16) threads
    when it may pick (OBS lets it), and without frame threads on one CPU."""
    return min(cpus + 1, MAX_FLUSH_REPEATS) if cpus > 1 else 1


def default_flush_repeats() -> int:
    """As many skip frames as the receiver holds packets, counted for this machine's
    CPUs. For an OBS on another machine that is a guess: too few costs a frame
    interval each; too many cost OBS's media thread a picture each (16 on a 2-core
    OBS: 0.3-2 s behind, benchmarks/obs_latency.py ``shipped-r16``), so the guess
    stays small and ``outputs.mpegts.flush_repeats`` sets it for that machine."""
    return receiver_packets(os.cpu_count() or 1)


class MpegTsOutput(PacedOutput):
    """Streams the newest frames as H.264 MPEG-TS to ``udp://host:port`` or ``tcp://host:port``.

    ``flush_repeats`` skip frames follow each new frame (None: ``default_flush_repeats``;
    0: none). ``low_latency`` runs the timestamps 10 % slow (for OBS; see above).
    ``bitrate_kbps`` is what the video takes on the wire, skip frames
    included: x264 gets the rest.

    Attributes for metrics (written by the output thread, read from anywhere):
    ``frames_sent`` (frames muxed since start, skip frames not counted),
    ``repeats_sent`` (skip frames), ``reconnects`` (connection attempts that failed
    or connections that dropped, each followed by a retry), ``last_error`` (one
    line, or None) and ``connected``.
    """

    def __init__(
        self,
        frames: FrameSource,
        url: str,
        fps: int,
        bitrate_kbps: int = 6000,
        gop: int | None = None,
        flush_repeats: int | None = None,
        low_latency: bool = True,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("udp", "tcp"):
            raise OutputError(f"MPEG-TS output needs a udp:// or tcp:// URL, got {url!r}")
        if fps <= 0 or bitrate_kbps <= 0:
            raise OutputError(f"MPEG-TS output needs fps > 0 and bitrate_kbps > 0, got {fps} and {bitrate_kbps}")
        repeats = default_flush_repeats() if flush_repeats is None else int(flush_repeats)
        if not 0 <= repeats <= MAX_FLUSH_REPEATS:
            raise OutputError(f"MPEG-TS flush_repeats must be 0-{MAX_FLUSH_REPEATS}, got {repeats}")
        repeat_kbps = repeats * fps * TS_PACKET_BITS / 1000
        if repeat_kbps > bitrate_kbps / 2:
            raise OutputError(f"MPEG-TS output: {repeats} skip frames per frame at {fps} fps take "
                              f"{repeat_kbps:.0f} of bitrate_kbps {bitrate_kbps}; raise the bitrate or lower flush_repeats")
        super().__init__(frames, fps, label=f"MPEG-TS output {url}", thread_name=f"mpegts-out {url}",
                         clock_rate=round(CLOCK_RATE / SLOW_TIMESTAMPS) if low_latency else CLOCK_RATE,
                         on_publish=True, flush_repeats=repeats)
        self.url = url
        self.bitrate_kbps = int(bitrate_kbps)
        self.video_kbps = int(bitrate_kbps - repeat_kbps)  # what x264 is given
        self.gop = int(gop) if gop else self.fps
        self._target = _with_protocol_options(url)

        self.frames_sent = 0
        self.repeats_sent = 0
        self.connected = False

        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._skips: SkipFrames | None = None

    @property
    def reconnects(self) -> int:
        return self.failures

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self.connected = False

    def metrics(self) -> list[Metric]:
        return [
            CounterMetricFamily("streambot_mpegts_frames", "Frames sent over MPEG-TS", value=self.frames_sent),
            CounterMetricFamily("streambot_mpegts_reconnects", "MPEG-TS reconnects", value=self.reconnects),
            GaugeMetricFamily("streambot_mpegts_connected", "1 while the MPEG-TS output is connected",
                              value=1 if self.connected else 0),
        ]

    # -- one connection (reopened without backoff when the frame size changes) ---------

    def _open(self, frame: Frame) -> None:
        self._container = av.open(
            self._target,
            mode="w",
            format="mpegts",
            container_options={"flush_packets": "1", "omit_video_pes_length": "0"},
        )
        self._stream = self._add_stream(frame)
        self._skips = SkipFrames()
        self._container.start_encoding()  # connects (TCP) and writes the header, so failures show up here
        if not self.connected:
            log.info("MPEG-TS output %s: connected", self.url)
        self.connected = True

    def _add_stream(self, frame: Frame) -> av.VideoStream:
        kbps = self.video_kbps
        return add_h264_stream(
            self._container,
            frame.width,
            frame.height,
            self.fps,
            bitrate_kbps=kbps,
            preset="ultrafast",
            gop=self.gop,
            time_base=Fraction(1, CLOCK_RATE),  # the muxer's own clock: pts go out unscaled
            options={
                "tune": "zerolatency",
                "maxrate": f"{kbps}k",
                "bufsize": f"{max(kbps // 2, 1)}k",  # half a second of VBV: low latency
            },
        )

    def _emit(self, frame: Frame, pts: int) -> None:
        for packet in encode(self._stream, frame, pts):
            self._container.mux(self._skips.renumber(packet, self._stream))
        self.frames_sent += 1

    def _repeat(self, pts: int) -> None:
        packet = self._skips.skip_frame(self._stream, pts)
        if packet is not None:  # None before the encoder's first packet: nothing to repeat yet
            self._container.mux(packet)
            self.repeats_sent += 1

    def _close(self) -> None:
        container, stream, skips = self._container, self._stream, self._skips
        self._container = self._stream = self._skips = None
        try:
            for packet in encode(stream, None):
                container.mux(skips.renumber(packet, stream))
        except (OSError, av.FFmpegError, ValueError):
            pass  # the receiver may already be gone; closing is all that is left
        close_quietly(container)

    def _abort(self) -> None:
        self.connected = False
        container, self._container, self._stream, self._skips = self._container, None, None, None
        close_quietly(container)


def _with_protocol_options(url: str) -> str:
    """Adds FFmpeg protocol options in the URL query (PyAV passes no protocol options
    to outputs): 1316-byte UDP datagrams, and a TCP I/O timeout so a receiver that
    stops reading cannot block the thread forever."""
    parts = urlsplit(url)
    keys = {item.split("=", 1)[0] for item in parts.query.split("&") if item}
    extra = []
    if parts.scheme == "udp" and "pkt_size" not in keys:
        extra.append(f"pkt_size={UDP_PACKET_SIZE}")
    if parts.scheme == "tcp" and "timeout" not in keys:
        extra.append(f"timeout={TCP_IO_TIMEOUT_US}")
    if not extra:
        return url
    return url + ("&" if parts.query else "?") + "&".join(extra)


# -- H.264 skip frames in x264's stream -----------------------------------------------------------

START_CODE = b"\x00\x00\x01"
NAL_SLICE, NAL_IDR, NAL_SPS, NAL_PPS = 1, 5, 7, 8
SKIP_NAL_REF_IDC = 2  # what x264 gives its P-frames
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}  # SPS with chroma/bit-depth fields
_EMULATION_PREVENTION = re.compile(b"\x00\x00(?=[\x00-\x03])")


class SkipFrames:
    """Makes skip frames for one x264 stream and renumbers x264's frames around them.

    Every x264 packet goes through ``renumber`` (which also reads the SPS and PPS of
    each keyframe); ``skip_frame`` then makes a P-frame that repeats the last picture
    exactly. Both keep H.264's rule that each reference frame's ``frame_num`` is the
    last one + 1 (mod MaxFrameNum), restarting at 0 on each IDR.

    Only what x264 ultrafast + zerolatency writes is supported (CAVLC, no B-frames so
    picture order from frame_num, frames not fields, no weighted prediction); anything
    else raises ``OutputError`` rather than sending a stream a decoder might refuse.
    """

    def __init__(self) -> None:
        self._sps: dict[int, _Sps] = {}
        self._pps: dict[int, _Pps] = {}
        self._frame_num: int | None = None  # of the last reference frame sent; None until an IDR
        self._skip_slice: bytes | None = None  # header fields before frame_num and after it, cached
        self._layout: tuple[_Pps, _Sps] | None = None

    def renumber(self, packet: av.Packet, stream: av.VideoStream) -> av.Packet:
        """``packet`` as it goes on the wire: unchanged up to the first skip frame after
        each IDR, then with the ``frame_num`` of its slices moved on past the skips."""
        data = bytes(packet)
        nals = data.split(START_CODE)  # escaped NAL units never contain 00 00 01
        changed = False
        new_frame_num: int | None = None
        for i in range(1, len(nals)):
            nal = nals[i]
            kind = nal[0] & 0x1F
            if kind == NAL_SPS:
                sps = _Sps.parse(nal)
                self._sps[sps.id] = sps
            elif kind == NAL_PPS:
                pps = _Pps.parse(nal)
                self._pps[pps.id] = pps
            elif kind == NAL_IDR:
                self._frame_num = 0
                self._layout = self._check(nal)
            elif kind == NAL_SLICE:
                if self._frame_num is None:
                    raise OutputError("H.264 stream: a P-frame before the first IDR frame")
                if nal[0] >> 5 == 0:
                    raise OutputError("H.264 stream: non-reference frames (B-frames?) cannot carry skip frames")
                pps, sps = self._check(nal)
                if new_frame_num is None:
                    new_frame_num = (self._frame_num + 1) % sps.max_frame_num
                rewritten = _set_frame_num(nal, sps, new_frame_num)
                if rewritten != nal:
                    nals[i] = rewritten
                    changed = True
        if new_frame_num is not None:
            self._frame_num = new_frame_num
        if not changed:
            return packet
        out = av.Packet(START_CODE.join(nals))
        out.stream = stream
        out.time_base = packet.time_base
        out.pts, out.dts = packet.pts, packet.dts
        out.is_keyframe = packet.is_keyframe
        return out

    def skip_frame(self, stream: av.VideoStream, pts: int) -> av.Packet | None:
        """A P-frame at ``pts`` (in the stream's codec time base) that repeats the last
        picture; None until the first IDR frame went through ``renumber``."""
        if self._frame_num is None or self._layout is None:
            return None
        pps, sps = self._layout
        self._frame_num = (self._frame_num + 1) % sps.max_frame_num
        bits = _BitWriter()
        bits.ue(0)  # first_mb_in_slice
        bits.ue(5)  # slice_type: P, and so is every slice of this picture
        bits.ue(pps.id)
        bits.u(sps.log2_max_frame_num, self._frame_num)
        bits.u(1, 0)  # num_ref_idx_active_override_flag
        bits.u(1, 0)  # ref_pic_list_modification_flag_l0
        bits.u(1, 0)  # adaptive_ref_pic_marking_mode_flag: sliding window, like x264
        bits.se(0)  # slice_qp_delta
        if pps.deblocking_control:
            bits.ue(1)  # deblocking off: the copy is exact (no edges move anyway)
        bits.ue(sps.mbs)  # mb_skip_run: every macroblock copies the reference picture
        nal = bytes([SKIP_NAL_REF_IDC << 5 | NAL_SLICE]) + _escape(bits.rbsp())
        packet = av.Packet(b"\x00" + START_CODE + nal)
        packet.stream = stream
        packet.time_base = stream.codec_context.time_base
        packet.pts = packet.dts = pts
        return packet

    def _check(self, nal: bytes) -> tuple[_Pps, _Sps]:
        """The PPS and SPS a slice refers to; refuses a stream skip frames cannot join."""
        reader = _BitReader(_unescape(nal[1:16]))
        reader.ue()  # first_mb_in_slice
        reader.ue()  # slice_type
        pps = self._pps.get(reader.ue())
        sps = self._sps.get(pps.sps_id) if pps is not None else None
        if pps is None or sps is None:
            raise OutputError("H.264 stream: a slice before its SPS and PPS")
        problems = [why for bad, why in (
            (sps.poc_type != 2, f"picture order count type {sps.poc_type} (B-frames?)"),
            (not sps.frame_mbs_only, "interlaced coding"),
            (pps.cabac, "CABAC"),
            (pps.weighted_pred, "weighted prediction"),
            (pps.slice_groups != 1, "slice groups"),
            (pps.redundant_pic_cnt, "redundant pictures"),
        ) if bad]
        if problems:
            raise OutputError(f"H.264 stream: skip frames need another encoder setting ({', '.join(problems)})")
        return pps, sps


class _Sps:
    """What skip frames need from a sequence parameter set."""

    def __init__(self, id: int, log2_max_frame_num: int, poc_type: int, mbs: int, frame_mbs_only: bool) -> None:
        self.id = id
        self.log2_max_frame_num = log2_max_frame_num
        self.max_frame_num = 1 << log2_max_frame_num
        self.poc_type = poc_type
        self.mbs = mbs  # macroblocks in a frame
        self.frame_mbs_only = frame_mbs_only

    @classmethod
    def parse(cls, nal: bytes) -> _Sps:
        r = _BitReader(_unescape(nal[1:64]))
        profile = r.u(8)
        r.u(16)  # constraint flags, level
        sps_id = r.ue()
        if profile in HIGH_PROFILES:
            if r.ue() == 3:  # chroma_format_idc
                r.u(1)
            r.ue()  # bit_depth_luma_minus8
            r.ue()  # bit_depth_chroma_minus8
            r.u(1)  # qpprime_y_zero_transform_bypass_flag
            if r.u(1):
                raise OutputError("H.264 stream: scaling matrices are not supported with skip frames")
        log2_max_frame_num = r.ue() + 4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()
        elif poc_type == 1:
            return cls(sps_id, log2_max_frame_num, poc_type, 0, True)  # refused by SkipFrames._check
        r.ue()  # max_num_ref_frames
        r.u(1)  # gaps_in_frame_num_value_allowed_flag
        width = r.ue() + 1
        height = r.ue() + 1
        frame_mbs_only = bool(r.u(1))
        return cls(sps_id, log2_max_frame_num, poc_type, width * height, frame_mbs_only)


class _Pps:
    """What skip frames need from a picture parameter set."""

    def __init__(self, id: int, sps_id: int, cabac: bool, slice_groups: int, weighted_pred: bool,
                 deblocking_control: bool, redundant_pic_cnt: bool) -> None:
        self.id = id
        self.sps_id = sps_id
        self.cabac = cabac
        self.slice_groups = slice_groups
        self.weighted_pred = weighted_pred
        self.deblocking_control = deblocking_control
        self.redundant_pic_cnt = redundant_pic_cnt

    @classmethod
    def parse(cls, nal: bytes) -> _Pps:
        r = _BitReader(_unescape(nal[1:64]))
        pps_id, sps_id = r.ue(), r.ue()
        cabac = bool(r.u(1))
        r.u(1)  # bottom_field_pic_order_in_frame_present_flag
        slice_groups = r.ue() + 1
        if slice_groups != 1:
            return cls(pps_id, sps_id, cabac, slice_groups, False, False, False)  # refused by SkipFrames._check
        r.ue()  # num_ref_idx_l0_default_active_minus1
        r.ue()  # num_ref_idx_l1_default_active_minus1
        weighted_pred = bool(r.u(1))
        r.u(2)  # weighted_bipred_idc
        r.se()  # pic_init_qp_minus26
        r.se()  # pic_init_qs_minus26
        r.se()  # chroma_qp_index_offset
        deblocking_control = bool(r.u(1))
        r.u(1)  # constrained_intra_pred_flag
        redundant_pic_cnt = bool(r.u(1))
        return cls(pps_id, sps_id, cabac, slice_groups, weighted_pred, deblocking_control, redundant_pic_cnt)


def _set_frame_num(nal: bytes, sps: _Sps, frame_num: int) -> bytes:
    """The slice NAL unit with ``frame_num`` in its header: a fixed-width field after
    three Exp-Golomb ones, so only those bits change (and the escaping around them)."""
    rbsp = _unescape(nal[1:])
    head = rbsp[:16]
    reader = _BitReader(head)
    reader.ue(), reader.ue(), reader.ue()  # first_mb_in_slice, slice_type, pic_parameter_set_id
    if reader.u(sps.log2_max_frame_num) == frame_num:
        return nal
    shift = len(head) * 8 - reader.pos
    value = int.from_bytes(head, "big")
    mask = ((1 << sps.log2_max_frame_num) - 1) << shift
    value = (value & ~mask) | (frame_num << shift)
    return nal[:1] + _escape(value.to_bytes(len(head), "big") + rbsp[16:])


def _unescape(data: bytes) -> bytes:
    """NAL unit payload to RBSP: drops each emulation-prevention byte (00 00 03 -> 00 00)."""
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    """RBSP to NAL unit payload: 00 00 followed by 00-03 gets an emulation-prevention 03."""
    return _EMULATION_PREVENTION.sub(b"\x00\x00\x03", rbsp)


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self._size:
            raise OutputError("H.264 stream: a header ends early")
        self.pos += n
        return (self._value >> (self._size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise OutputError("H.264 stream: an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


class _BitWriter:
    def __init__(self) -> None:
        self._value = 0
        self._size = 0

    def u(self, n: int, value: int) -> None:
        self._value = (self._value << n) | value
        self._size += n

    def ue(self, value: int) -> None:
        value += 1
        self.u(value.bit_length() * 2 - 1, value)  # n - 1 zeros, then value's n bits

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        """The bits with rbsp_slice_trailing_bits: a stop bit, then zeros to a byte."""
        self.u(1, 1)
        self.u(-self._size % 8, 0)
        return self._value.to_bytes(self._size // 8, "big")
