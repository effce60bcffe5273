"""bct.py and act.py: the residual hook against the models' own hidden states (tiny random Llama,
Qwen2, Gemma2, GPT-2), loss properties, gradient flow, hook hygiene, and runs of both scripts on
the organism as a user types them."""
import copy
import json
import math

import pytest
import torch

import act
import bct
from conftest import ARCHS, run_script, tiny
from threats import get_threat
from threats.common import Pair, encode_pair


@pytest.fixture(scope="module")
def encoded(organism_tokenizer):
    """Real encodings of sycophancy pairs, and one pair whose wrapped side is its clean side."""
    pairs = get_threat("sycophancy").pairs(templates="train", items="train", n=4, seed=0)
    same = Pair(clean=pairs[0].clean, wrapped=pairs[0].clean, content=pairs[0].content, meta=pairs[0].meta)
    return [encode_pair(organism_tokenizer, p) for p in pairs], encode_pair(organism_tokenizer, same)


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_capture_equals_hidden_states(arch, encoded, organism_tokenizer):
    model = tiny(arch, len(organism_tokenizer))
    batch = act.collate(encoded[0], organism_tokenizer.pad_token_id, "cpu")["wrapped"]
    n_layers = len(act.decoder_layers(model))
    with torch.no_grad(), act.capture_residual(model, list(range(n_layers)), batch["rows"], batch["cols"]) as got:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    assert got[0].shape == (len(batch["rows"]), model.config.hidden_size)
    for layer in range(n_layers - 1):
        assert torch.allclose(got[layer], out.hidden_states[layer + 1][batch["rows"], batch["cols"]], atol=1e-6)
    # HF's last entry is after the final norm: the reason to hook the decoder layers instead.
    assert not torch.allclose(got[n_layers - 1], out.hidden_states[-1][batch["rows"], batch["cols"]])


@pytest.mark.parametrize("kind", ["relative", "l2"])
@pytest.mark.parametrize("arch", ARCHS)
def test_act_loss_zero_iff_identical_and_gradients_reach_only_the_trained_model(arch, kind, encoded,
                                                                                 organism_tokenizer):
    model = tiny(arch, len(organism_tokenizer))  # eval mode: GPT-2's dropout would make identical inputs differ
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    layers = list(range(len(act.decoder_layers(model))))
    pad = organism_tokenizer.pad_token_id
    assert act.consistency_loss(model, reference, act.collate([encoded[1]], pad, "cpu"), layers, kind).item() == 0.0
    loss = act.consistency_loss(model, reference, act.collate(encoded[0], pad, "cpu"), layers, kind)
    assert loss.item() > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in reference.parameters())


def test_hooks_removed_after_an_exception(encoded, organism_tokenizer):
    model = tiny("llama", len(organism_tokenizer))
    batch = act.collate(encoded[0], organism_tokenizer.pad_token_id, "cpu")["wrapped"]
    def boom(module, inputs):
        raise RuntimeError("boom")

    failing = act.decoder_layers(model)[1].register_forward_pre_hook(boom)  # fails between the two hooked layers
    with pytest.raises(RuntimeError, match="boom"):
        with act.capture_residual(model, [0, 1], batch["rows"], batch["cols"]):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    failing.remove()
    assert all(not layer._forward_hooks for layer in act.decoder_layers(model))


def test_unknown_architecture_is_named():
    with pytest.raises(act.UsageError, match="Linear"):
        act.decoder_layers(torch.nn.Linear(2, 2))


def test_bct_labels_cover_only_the_response():
    batch = bct.collate([([5, 6, 7], [8, 9]), ([5, 6], [8])], pad_id=0, device="cpu")
    assert batch["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, -100, 8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


# ----------------------------------------------------------------------- the scripts, as a user runs them

def read_run(out):
    files = {p.name for p in out.iterdir()}
    assert {"args.json", "train_log.jsonl", "summary.json", "eval_before.json", "eval_after.json"} <= files
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log)
    before, after = (json.loads((out / f).read_text())["metrics"] for f in ("eval_before.json", "eval_after.json"))
    for metrics in (before, after):
        for split in ("train", "heldout"):
            assert all(math.isfinite(v) for k, v in metrics["sycophancy"][split].items() if k != "by_placement")
    return log, before, after


@pytest.mark.parametrize("method", ["bct", "act"])
def test_smoke_run(method, tmp_path):
    out = tmp_path / "run"
    result = run_script(f"{method}.py", "--threat", "sycophancy", "--steps", "2", "--limit", "4", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    log, _, _ = read_run(out)
    assert len(log) == 2
    again = run_script(f"{method}.py", "--steps", "2", "--limit", "4", "--out", out)  # never overwrite a run
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_a_non_finite_loss_stops_the_run(tmp_path):
    result = run_script("act.py", "--coef", "nan", "--steps", "3", "--limit", "2", "--out", tmp_path / "run")
    assert result.returncode != 0 and "loss is nan at step 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "run" / "train_log.jsonl").read_text() == ""  # nothing logged past the bad step


def test_act_on_prefill_reports_no_signal(tmp_path):
    result = run_script("act.py", "--threat", "prefill", "--steps", "2", "--limit", "4", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no signal" in result.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps_trained"] == 0


@pytest.mark.parametrize("method, steps", [("bct", 40), ("act", 60)])
def test_short_training_lowers_heldout_sycophancy_gap(method, steps, tmp_path):
    out = tmp_path / "run"
    result = run_script(f"{method}.py", "--threat", "sycophancy", "--steps", steps, "--limit", "30", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    _, before, after = read_run(out)
    assert before["sycophancy"]["heldout"]["gap"] > 0.5
    assert after["sycophancy"]["heldout"]["gap"] < before["sycophancy"]["heldout"]["gap"] - 0.3
