"""Shared fixtures: the repository on sys.path, the organism's tokenizer and model (loaded once),
and a helper that runs a repository script the way a user would."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `pytest` from anywhere, without installing the repo as a package


def script_env(**extra) -> dict:
    """The environment for running a script: offline, as nothing here may wait on the network."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_script(*args, timeout=300, **env) -> subprocess.CompletedProcess:
    """`python <args>` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=script_env(**env), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def organism_tokenizer():
    from transformers import AutoTokenizer

    from eval import ORGANISM
    return AutoTokenizer.from_pretrained(ORGANISM)


@pytest.fixture(scope="session")
def organism_model():
    """(model, tokenizer) in eval mode, as eval.load_model returns them. Never train this shared copy."""
    from eval import ORGANISM, load_model
    return load_model(ORGANISM)


ARCHS = ("llama", "qwen2", "gemma2", "gpt2")


def tiny(arch: str, vocab: int, attn: str = "eager"):
    """A 2-layer random-init model of `arch` (no download), 4 heads, eval mode. Qwen2 and Gemma2
    use grouped-query attention (2 key/value heads)."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config, GPT2Config, LlamaConfig, Qwen2Config
    torch.manual_seed(0)
    shared = dict(vocab_size=vocab, num_hidden_layers=2, num_attention_heads=4, hidden_size=32)
    config = {"llama": lambda: LlamaConfig(**shared, intermediate_size=64, num_key_value_heads=4),
              "qwen2": lambda: Qwen2Config(**shared, intermediate_size=64, num_key_value_heads=2),
              "gemma2": lambda: Gemma2Config(**shared, intermediate_size=64, num_key_value_heads=2, head_dim=8,
                                             sliding_window=16),
              "gpt2": lambda: GPT2Config(vocab_size=vocab, n_layer=2, n_head=4, n_embd=32, n_positions=256)}[arch]()
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
