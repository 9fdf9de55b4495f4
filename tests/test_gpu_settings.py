"""GPU use when present (issue 16 item 6): the device choice and llama.cpp offload follow the build."""

from __future__ import annotations

import pytest
import torch

from rag.embedders.sentence_transformers import pick_device
from rag.llm import llama_cpp as llama_backend
from rag.settings import load_settings


def test_auto_device_follows_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    assert pick_device("cuda:1") == "cuda:1"  # an explicit choice is kept as given
    assert pick_device("cpu") == "cpu"


def test_settings_defaults_offload_everything() -> None:
    settings = load_settings()
    assert settings.embedder.device == "auto"
    assert settings.llm.gpu_layers == -1


def test_cpu_build_offloads_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On this CPU-only llama.cpp the generator asks for 0 GPU layers whatever the setting says."""
    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, **kwargs: object) -> None:
            seen.update(kwargs)
            raise RuntimeError("stop after recording the arguments")

    import rag.llm.kv_cache as kv_cache

    monkeypatch.setattr(kv_cache, "PrefixCachingLlama", Recorder)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert llama_backend._gpu_offload() is False
    with pytest.raises(RuntimeError, match="stop after"):
        llama_backend.LlamaCppGenerator(model, load_settings().llm)
    assert seen["n_gpu_layers"] == 0
    monkeypatch.setattr(llama_backend, "_gpu_offload", lambda: True)
    with pytest.raises(RuntimeError):
        llama_backend.LlamaCppGenerator(model, load_settings(overrides={"llm.gpu_layers": 12}).llm)
    assert seen["n_gpu_layers"] == 12
