"""Which llama.cpp build is loaded, and how fast it reads a prompt here (`citeqa models list`).

Prefill is the wait before the first answer token on a CPU, and a build for this CPU
(GGML_NATIVE=ON: AVX-512 where the CPU has it) reads prompts ~1.6x faster than the portable one,
so the build kind is worth showing next to a measured figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

# A fixed probe, Chinese and English like the documents: the same tokens every run.
PROBE = (
    "公司2023年实现营业收入52.4亿元，同比增长12.5%，主要来自光伏组件业务。"
    "In fiscal 2023 the company reported revenue of $52.4 million, up 12.5% from the prior year. "
)
PROBE_REPEAT = 6


def llama_build() -> dict[str, Any]:
    """Version, build kind (native / portable / unknown: not installed by scripts/install_llama.sh)
    and the CPU features the loaded library was compiled with."""
    try:
        import llama_cpp
    except ImportError:
        return {"installed": False}
    info: dict[str, Any] = {"installed": True, "version": llama_cpp.__version__, "build": "unknown"}
    marker = Path(sys.prefix) / "citeqa-llama-build.json"
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = {}
        if recorded.get("version") == llama_cpp.__version__:  # a later pip install replaced it otherwise
            info["build"] = recorded.get("build", "unknown")
    system = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    # "CPU : SSE3 = 1 | AVX = 1 | ..." -> ["SSE3", "AVX", ...]
    info["cpu_features"] = [
        part.split("=")[0].split(":")[-1].strip() for part in system.split("|") if part.strip().endswith("= 1")
    ]
    return info


def prefill_probe(generator: Any) -> dict[str, float] | None:
    """Prompt tokens per second of an in-process llama.cpp model on the fixed probe (None otherwise)."""
    llm = getattr(generator, "_llm", None)
    if llm is None or not hasattr(llm, "eval"):
        return None
    tokens = llm.tokenize((PROBE * PROBE_REPEAT).encode("utf-8"), add_bos=False, special=False)
    with generator.lock:
        llm.reset()
        llm.eval(tokens[:8])  # first-call allocations are not prefill speed
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        seconds = time.perf_counter() - start
        llm.reset()
    return {
        "probe_tokens": float(len(tokens)),
        "seconds": round(seconds, 3),
        "tokens_per_s": round(len(tokens) / seconds, 1),
    }
