"""What the fixed-capacity fake tells about itself the way each upstream does: vLLM's and llama.cpp's
/metrics gauges, llama.cpp's /props and /slots, Ollama's /api/tags entries."""

from __future__ import annotations

import hashlib
from typing import Any

from ._server import rfc3339_now


def ollama_model(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    details = {"format": "gguf", "family": "llama", "parameter_size": "1.2B", "quantization_level": "Q8_0"}
    return {"name": name, "model": name, "modified_at": rfc3339_now(), "size": 1_300_000_000,
            "digest": digest, "details": details}  # fmt: skip


def vllm_metrics(model: str, running: int, waiting: int, slots: int) -> str:
    labels = f'{{engine="0",model_name="{model}"}}'
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{labels} {float(running)}\n"
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{labels} {float(waiting)}\n"
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{labels} {min(running / slots, 1.0)}\n"
    )


def llamacpp_metrics(processing: int, deferred: int) -> str:
    return (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        f"llamacpp:requests_processing {processing}\n"
        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
        "# TYPE llamacpp:requests_deferred gauge\n"
        f"llamacpp:requests_deferred {deferred}\n"
    )


def llamacpp_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error", 503: "unavailable_error"}.get(
        status, "server_error"
    )
    return {"error": {"code": status, "message": message, "type": kind}}


def llamacpp_props(model: str, slots: int) -> dict[str, Any]:
    return {
        "default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": -1}},
        "total_slots": slots,
        "model_alias": model,
        "model_path": f"/models/{model}.gguf",
        "build_info": "b6000-fake",
    }


def llamacpp_slots(slots: int, decoded: dict[int, int]) -> list[dict[str, Any]]:
    """One entry per slot; ``decoded`` maps busy slot ids to tokens generated so far."""
    count = max(slots, max(decoded, default=-1) + 1)  # a slot past a lowered limit still shows while busy
    return [
        {
            "id": i,
            "id_task": i + 1000 if i in decoded else -1,
            "n_ctx": 4096,
            "speculative": False,
            "is_processing": i in decoded,
            "next_token": {"has_next_token": i in decoded, "n_remain": -1, "n_decoded": decoded.get(i, 0)},
        }
        for i in range(count)
    ]
