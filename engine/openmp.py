"""Imported before torch: idle OpenMP threads sleep instead of spinning.

torch's CPU kernels run on an OpenMP thread pool whose threads, by default, spin
for a while after each parallel region waiting for more work. Between two renders
that kept both cores of a small machine busy and starved the video encoders and
the engine process's frame pump: at 720p30 with the MPEG-TS encoder running,
render went from 5.5 to 2.1 ms and frame lateness p99 from 67 to 9 ms once they
sleep. OpenMP reads the setting when the runtime loads, so it must be in the
environment before ``import torch``; the engine process inherits it. A streamer
who sets ``OMP_WAIT_POLICY`` keeps their own value.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
