"""A real OBS Studio as a test peer: headless, under its own Xvfb, with software GL.

    reason = obs_available()
    if reason:
        pytest.skip(reason)
    with ObsStudio(tmp_path, password="secret") as obs:
        client = obs.request()
        client.get_version()
        image = screenshot(client, "Media")

Each ``ObsStudio`` has its own config folder (``XDG_CONFIG_HOME``, written fresh: OBS
saves the scene collection on every change), its own Xvfb display (picked by Xvfb
itself with ``-displayfd``, so parallel runs never collide) and its own websocket port.
OBS and Xvfb are children of this process and are always waited for (no zombies).
Measured facts and quirks of Debian's OBS 29 / obs-websocket 5.1: /work/shared/obs-headless.md.
"""

from __future__ import annotations

import atexit
import base64
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# At INFO obsws-python logs its connection parameters, password included.
logging.getLogger("obsws_python").setLevel(logging.WARNING)

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
INSTALL_HINT = "run scripts/system-deps.sh as root"

_live: set[subprocess.Popen] = set()  # children still running, killed at interpreter exit


def obs_available() -> str | None:
    """Why a real OBS cannot run here (a reason for ``pytest.skip``), or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"headless OBS under Xvfb needs Linux, not {sys.platform}"
    missing = [name for name in ("obs", "Xvfb") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed ({INSTALL_HINT})"
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (TCP by default; ``socket.SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot(client, source_name: str, width: int = 320, height: int = 180, mode: str | None = "RGB"):
    """The current picture of ``source_name`` as a PIL image (``mode=None`` keeps OBS's RGBA)."""
    from PIL import Image

    data = client.send(
        "GetSourceScreenshot",
        {"sourceName": source_name, "imageFormat": "png", "imageWidth": width, "imageHeight": height},
        raw=True,
    )["imageData"]
    image = Image.open(io.BytesIO(base64.b64decode(data.partition(",")[2])))
    image.load()
    return image.convert(mode) if mode else image


class ObsStartError(RuntimeError):
    """OBS did not come up (or died); the message ends with the tail of its log."""


class ObsStudio:
    """OBS Studio with obs-websocket on ``host:port``, as a context manager.

    ``kill()`` simulates a crash, ``restart()`` starts OBS again on the same port, config
    folder and display, ``stop()`` shuts it down cleanly; leaving the ``with`` block stops
    OBS and Xvfb.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        tmp_path: str | os.PathLike,
        password: str = "streambot-test",
        port: int = 0,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if not password:
            raise ValueError("obs-websocket 5.1 listens on all interfaces: always set a password")
        self.root = Path(tmp_path)
        self.password = password
        self.port = port or free_port()
        self.width, self.height, self.fps = width, height, fps
        self.ready_timeout = ready_timeout
        self.config_home = self.root / "obs-config"
        self.log_path = self.root / "obs.log"
        self.xvfb_log_path = self.root / "xvfb.log"
        self.display: str | None = None
        self.process: subprocess.Popen | None = None
        self.xvfb: subprocess.Popen | None = None
        self.ready_seconds: float | None = None  # launch to websocket answering, last start
        self._clients: list = []

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> "ObsStudio":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "ObsStudio":
        """Write a fresh config, start Xvfb and OBS, and wait for the websocket."""
        reason = obs_available()
        if reason:
            raise ObsStartError(reason)
        self._write_config()
        self._start_xvfb()
        self._launch()
        return self

    def restart(self) -> float:
        """Start OBS again (stopping it first if it runs) on the same port, config folder
        and display; returns the seconds from launch until the websocket answered."""
        self.stop()  # also reaps an OBS that died on its own
        self._start_xvfb()  # a no-op while the display lives
        self._launch()
        return self.ready_seconds

    def kill(self) -> None:
        """SIGKILL OBS, as a crash would end it (its clients are left as they are)."""
        if self.process is not None:
            _end(self.process, signal.SIGKILL, STOP_TIMEOUT)
            self.process = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Disconnect this harness's clients (OBS takes ~5 s to quit with clients
        connected), SIGINT, and SIGKILL after ``timeout``. Returns OBS's exit code, which
        callers should not assert: OBS 29 sometimes crashes while shutting down."""
        self._disconnect_clients()
        if self.process is None:
            return None
        code = _end(self.process, signal.SIGINT, timeout)
        self.process = None
        return code

    def close(self) -> None:
        """Stop OBS, then Xvfb."""
        try:
            self.stop()
        finally:
            if self.xvfb is not None:
                _end(self.xvfb, signal.SIGTERM, STOP_TIMEOUT)
                self.xvfb = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    # -- clients ----------------------------------------------------------------------

    def request(self, timeout: float = 10.0):
        """A new, connected ``obsws_python.ReqClient`` (one per thread: it never checks
        request ids); disconnected by ``stop()``."""
        import obsws_python

        client = obsws_python.ReqClient(host=self.host, port=self.port, password=self.password, timeout=timeout)
        self._clients.append(client)
        return client

    def events(self, subs: int | None = None, timeout: float = 10.0):
        """A new ``obsws_python.EventClient`` (all events but the high-volume ones by
        default); disconnected by ``stop()``."""
        import obsws_python

        kwargs = {} if subs is None else {"subs": subs}
        client = obsws_python.EventClient(
            host=self.host, port=self.port, password=self.password, timeout=timeout, **kwargs
        )
        self._clients.append(client)
        return client

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no OBS log)"
        return "\n".join(text.splitlines()[-lines:])

    def _disconnect_clients(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.disconnect()
            except Exception:
                pass  # already gone with OBS

    # -- internals --------------------------------------------------------------------

    def _write_config(self) -> None:
        if self.config_home.exists():
            shutil.rmtree(self.config_home)
        obs_dir = self.config_home / "obs-studio"
        profile = obs_dir / "basic" / "profiles" / "test"
        scenes = obs_dir / "basic" / "scenes"
        profile.mkdir(parents=True)
        scenes.mkdir(parents=True)
        # FirstRun=true means "the first run already happened": no auto-config wizard.
        (obs_dir / "global.ini").write_text(
            "[General]\n"
            "FirstRun=true\n"
            "LastVersion=486539266\n"
            "EnableAutoUpdates=false\n"
            "ConfirmOnExit=false\n"
            "Pre19Defaults=false\n"
            "Pre21Defaults=false\n"
            "Pre23Defaults=false\n"
            "Pre24.1Defaults=false\n"
            "[BasicWindow]\n"
            "PreviewEnabled=false\n"
            "[Basic]\n"
            "Profile=test\n"
            "ProfileDir=test\n"
            "SceneCollection=test\n"
            "SceneCollectionFile=test\n"
            "[OBSWebSocket]\n"
            "FirstLoad=false\n"
            "ServerEnabled=true\n"
            f"ServerPort={self.port}\n"
            "AlertsEnabled=false\n"
            "AuthRequired=true\n"
            f"ServerPassword={self.password}\n"
        )
        (profile / "basic.ini").write_text(
            "[General]\n"
            "Name=test\n"
            "[Video]\n"
            f"BaseCX={self.width}\n"
            f"BaseCY={self.height}\n"
            f"OutputCX={self.width}\n"
            f"OutputCY={self.height}\n"
            "FPSType=0\n"
            f"FPSCommon={self.fps}\n"
        )
        # No scenes/test.json: OBS starts the collection empty with one scene, "Scene".
        runtime = self.root / "obs-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)

    def _start_xvfb(self) -> None:
        if self.xvfb is not None and self.xvfb.poll() is None:
            return
        read_fd, write_fd = os.pipe()
        try:
            with open(self.xvfb_log_path, "ab") as log:
                self.xvfb = subprocess.Popen(
                    ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
                     "-nolisten", "tcp"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,),
                    start_new_session=True,  # a Ctrl-C meant for pytest does not reach it
                )
            _live.add(self.xvfb)
            os.close(write_fd)
            write_fd = -1
            number = b""
            with os.fdopen(read_fd, "rb") as pipe:
                read_fd = -1
                number = pipe.readline().strip()  # "N\n" once it accepts connections; EOF if it died
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
        if not number.isdigit():
            code = _end(self.xvfb, signal.SIGTERM, STOP_TIMEOUT)
            self.xvfb = None
            log = self.xvfb_log_path.read_text(errors="replace")[-2000:]
            raise ObsStartError(f"Xvfb did not start (exit {code}):\n{log}")
        self.display = f":{number.decode()}"

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if key not in ("WAYLAND_DISPLAY", "XAUTHORITY", "SESSION_MANAGER")}
        env.update(
            DISPLAY=self.display,
            XDG_CONFIG_HOME=str(self.config_home),
            XDG_RUNTIME_DIR=str(self.root / "obs-runtime"),
            LIBGL_ALWAYS_SOFTWARE="1",
            QT_QPA_PLATFORM="xcb",
        )
        return env

    def _launch(self) -> None:
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== obs launched on {self.display}, websocket port {self.port} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                ["obs", "--multi", "--minimize-to-tray", "--disable-missing-files-check"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._environment(),
                cwd=self.root, start_new_session=True,
            )
        _live.add(self.process)
        try:
            self._wait_ready(started)
        except BaseException:
            self.kill()
            raise
        self.ready_seconds = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        import obsws_python

        deadline = started + self.ready_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ObsStartError(f"OBS exited with {code} before its websocket answered:\n{self.log_tail()}")
            # A plain connect first: obsws-python logs a traceback for every refused connection.
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
            except OSError as error:
                last_error = error
                time.sleep(0.1)
                continue
            try:
                timeout = min(5.0, max(0.5, deadline - time.monotonic()))
                client = obsws_python.ReqClient(host=self.host, port=self.port, password=self.password,
                                                timeout=timeout)
                try:
                    client.get_version()
                finally:
                    client.disconnect()
                return
            except Exception as error:  # half-started server: closed sockets, timeouts
                last_error = error
                time.sleep(0.2)
        raise ObsStartError(
            f"OBS websocket on {self.host}:{self.port} did not answer within {self.ready_timeout:.0f} s "
            f"(last error: {last_error!r}):\n{self.log_tail()}"
        )


def _end(process: subprocess.Popen, sig: int, timeout: float) -> int:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL; always reaps the child."""
    try:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()
    finally:
        _live.discard(process)


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_live):
        if process.poll() is None:
            process.kill()
        process.wait()
