"""``python -m llama_cpp.server`` as Fluido's embedded-model supervisor runs it, answered by the paced fake.

It takes llama-cpp-python's command line (``--model``, ``--model_alias``, ``--host``, ``--port``, ...) and
serves the OpenAI-compatible API under the alias, so a test exercises the real supervisor (launch, health
check, restart after a crash) without llama.cpp, whose CPU build crashes on some machines and needs a core.
"""

from __future__ import annotations

import argparse

import uvloop

from tests.fakes.paced import PacedVLLM, serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--model_alias", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n_ctx")
    parser.add_argument("--n_threads")
    parser.add_argument("--verbose")
    parser.add_argument("--interrupt_requests")
    args = parser.parse_args()
    fake = PacedVLLM(tokens=8, interval=0.05)
    fake.models = [args.model_alias]
    uvloop.run(serve(args.port, fake, keepalive=5.0))


if __name__ == "__main__":
    main()
