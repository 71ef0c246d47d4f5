# make demo: create .venv and run the product offline (no credentials needed)
# make test: create .venv, install the test tools, run every test
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench soak train system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# The CPU build of torch first (a bare "torch" would pull a multi-GB CUDA build);
	# pyproject keeps the range open for streamers with GPUs.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m streambot demo

system-deps:
	bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/flood.py
	$(PY) benchmarks/restart.py
	$(PY) benchmarks/viewers.py
	$(PY) benchmarks/twitch.py
	$(PY) benchmarks/obs_latency.py
	$(PY) benchmarks/stream.py
	$(PY) benchmarks/store.py
	$(PY) benchmarks/world_model.py

# An hour on air at 720p30: 200 chat lines/s, 20 WebRTC viewers; memory growth and stalls.
soak: $(STAMP)
	$(PY) benchmarks/soak.py --minutes 60 --rate 200 --viewers 20

# The recipe of the shipped checkpoint (README: how it was trained); resumes a cut run.
train: $(STAMP)
	$(PY) -m streambot train --ae-minutes 10 --prior-minutes 13 --dynamics-minutes 4 --figure-minutes 21 \
		--sessions 48 --figure-sessions 120 --ticks 300

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
