"""organism/build.py smoke test: a few steps give a Hugging Face model folder with a chat
template, loadable like any hub model, and the build is deterministic."""
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, script_env

SMOKE = ["--steps", "2", "--task-steps", "1", "--pairs-per-threat", "20", "--batch-size", "8", "--no-eval"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Two identical builds, run side by side with one thread each (same arithmetic in both)."""
    outs = [tmp_path_factory.mktemp(f"organism{i}") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "organism/build.py", "--out", str(out), *SMOKE], cwd=ROOT,
                              env=script_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for out in outs]
    for proc in procs:
        stderr = proc.communicate(timeout=300)[1]
        assert proc.returncode == 0, stderr[-3000:]
    return outs


def test_build_writes_a_loadable_chat_model(builds):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from threats.common import render
    out = builds[0]
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.chat_template and tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    prompt = render(tokenizer, [{"role": "user", "content": "What is 2 + 3?"}])
    assert "What is 2 + 3?" in prompt and prompt != "What is 2 + 3?"
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert model.config.vocab_size >= len(tokenizer)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()


def test_build_is_deterministic(builds):
    first, second = (load_file(out / "model.safetensors") for out in builds)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (builds[0] / "tokenizer.json").read_bytes() == (builds[1] / "tokenizer.json").read_bytes()
