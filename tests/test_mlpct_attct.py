"""mlpct.py and attct.py: hooked captures against what the models compute themselves (tiny random
Llama, Qwen2 with grouped-query attention, Gemma2, GPT-2), loss properties, hook hygiene, and runs
of both scripts on the organism as a user types them."""
import copy
import json
import math

import pytest
import torch

import attct
import mlpct
from conftest import ARCHS, run_script, tiny
from threats import get_threat
from threats.common import Pair, encode_pair


@pytest.fixture(scope="module")
def examples(organism_tokenizer):
    """Real encodings: sycophancy pairs with the cue before (content signal) and after the question,
    and a pair whose wrapped side is the clean one."""
    pairs = get_threat("sycophancy").pairs(templates="train", items="train", n=4, seed=0)
    same = Pair(clean=pairs[0].clean, wrapped=pairs[0].clean, content=pairs[0].content, meta=pairs[0].meta)
    return [encode_pair(organism_tokenizer, p) for p in pairs], encode_pair(organism_tokenizer, same)


def batch_for(module, encoded, window, tokenizer):
    return module.collate(encoded, window, tokenizer.pad_token_id, "cpu")


# ----------------------------------------------------------------------- windows

def test_window_both_is_the_aligned_union(examples):
    for e in examples[0]:
        c, w = e.window("both")
        assert len(c) == len(w) == len(set(c)) and c == sorted(c)
        assert set(zip(c, w)) == set(zip(*e.content)) | set(zip(*e.suffix))
        assert [e.clean_ids[i] for i in c] == [e.wrapped_ids[i] for i in w]


# ----------------------------------------------------------------------- captures equal the models' own computation

@pytest.mark.parametrize("arch", ARCHS)
def test_mlp_capture_is_post_activation(arch, examples, organism_tokenizer):
    model = tiny(arch, len(organism_tokenizer))
    side = batch_for(mlpct, examples[0], "both", organism_tokenizer)["wrapped"]
    mlps = [block.mlp for block in (model.transformer.h if arch == "gpt2" else model.model.layers)]
    assert mlpct.mlp_out_projs(model) == [m.c_proj if arch == "gpt2" else m.down_proj for m in mlps]
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, l=l: inputs.__setitem__(l, args[0]))
               for l, m in enumerate(mlps)]
    with torch.no_grad(), mlpct.capture_mlp(model, [0, 1], side["rows"], side["cols"]) as captured:
        model(input_ids=side["input_ids"], attention_mask=side["attention_mask"])
    for h in handles:
        h.remove()
    for layer, mlp in enumerate(mlps):
        x = inputs[layer]  # (batch, seq, hidden): the MLP's input
        a = mlp.act(mlp.c_fc(x)) if arch == "gpt2" else mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
        torch.testing.assert_close(captured[layer], a[side["rows"], side["cols"]])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("heads", [None, [1, -1]])
def test_attention_capture_is_the_window_slice(arch, heads, examples, organism_tokenizer):
    model = tiny(arch, len(organism_tokenizer))
    batch = batch_for(attct, examples[0], "both", organism_tokenizer)
    side, key_mask = batch["wrapped"], batch["key_mask"]
    chosen = attct.select(4, heads, "heads")
    with torch.no_grad(), attct.capture_attention(model, [0, 1], torch.tensor(chosen), side["rows"], side["cols"],
                                                  side["keys"]) as captured:
        out = model(input_ids=side["input_ids"], attention_mask=side["attention_mask"], output_attentions=True)
    for layer in (0, 1):
        full = out.attentions[layer]  # (batch, heads, T, T)
        for n, (row, col) in enumerate(zip(side["rows"], side["cols"])):
            keys = side["keys"][n][key_mask[n]]
            expected = full[row, chosen][:, col][:, keys]  # (n_heads, window keys)
            torch.testing.assert_close(captured[layer][n][:, key_mask[n]], expected)
        assert (captured[layer][key_mask[:, None].expand_as(captured[layer])] >= 0).all()
        assert (captured[layer].masked_fill(~key_mask[:, None], 0).sum(-1) <= 1 + 1e-5).all()


def test_attention_capture_needs_eager(examples, organism_tokenizer):
    model = tiny("llama", len(organism_tokenizer), attn="sdpa")
    side = batch_for(attct, examples[0], "content", organism_tokenizer)["wrapped"]
    with pytest.raises(attct.UsageError, match="eager"):
        with attct.capture_attention(model, [0], torch.tensor([0]), side["rows"], side["cols"], side["keys"]):
            model(input_ids=side["input_ids"], attention_mask=side["attention_mask"])
    attct.use_eager_attention(model)
    assert model.config._attn_implementation == "eager"


# ----------------------------------------------------------------------- losses

def mlpct_loss(model, reference, encoded, tokenizer):
    return mlpct.consistency_loss(model, reference, batch_for(mlpct, encoded, "both", tokenizer), [0, 1])


def attct_loss(model, reference, encoded, tokenizer):
    return attct.consistency_loss(model, reference, batch_for(attct, encoded, "both", tokenizer), [0, 1],
                                  torch.arange(4))


@pytest.mark.parametrize("loss_fn", [mlpct_loss, attct_loss], ids=["mlpct", "attct"])
def test_loss_zero_on_identical_positive_otherwise(loss_fn, examples, organism_tokenizer):
    model = tiny("qwen2", len(organism_tokenizer))
    reference = copy.deepcopy(model)
    with torch.no_grad():
        assert loss_fn(model, reference, [examples[1]], organism_tokenizer).abs() < 1e-6
        assert loss_fn(model, reference, examples[0], organism_tokenizer) > 1e-4


@pytest.mark.parametrize("loss_fn", [mlpct_loss, attct_loss], ids=["mlpct", "attct"])
def test_gradient_only_on_trained_branch(loss_fn, examples, organism_tokenizer):
    model = tiny("llama", len(organism_tokenizer)).train()
    reference = copy.deepcopy(model)  # left trainable on purpose: the method must stop its gradient
    loss_fn(model, reference, examples[0], organism_tokenizer).backward()
    assert all(p.grad is None for p in reference.parameters())
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0


def test_losses_treat_clean_as_constant():
    torch.manual_seed(0)
    wrapped_mlp, clean_mlp = torch.randn(5, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    rows = torch.rand(5, 2, 3)  # (n_queries, heads, n_keys), rows summing to < 1 like window slices
    wrapped_att, clean_att = (rows / 4).requires_grad_(), (rows.flip(0) / 4).requires_grad_()
    key_mask = torch.ones(5, 3, dtype=torch.bool)
    for loss in (mlpct.mlpct_loss({0: wrapped_mlp}, {0: clean_mlp}), attct.attct_loss({0: wrapped_att}, {0: clean_att},
                                                                                     key_mask)):
        assert loss > 0
        loss.backward()
    assert wrapped_mlp.grad is not None and wrapped_att.grad is not None
    assert clean_mlp.grad is None and clean_att.grad is None


# ----------------------------------------------------------------------- hook hygiene

def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", ["mlpct", "attct"])
def test_hooks_removed_after_exception(method, examples, organism_tokenizer):
    model = tiny("llama", len(organism_tokenizer))
    side = batch_for(attct, examples[0], "content", organism_tokenizer)["wrapped"]
    capture = (mlpct.capture_mlp(model, [0, 1], side["rows"], side["cols"]) if method == "mlpct" else
               attct.capture_attention(model, [0, 1], torch.arange(4), side["rows"], side["cols"], side["keys"]))

    def boom(*_):
        raise RuntimeError("boom")

    fail = model.model.norm.register_forward_hook(boom)  # runs after every layer's capture
    before = hook_count(model)
    with pytest.raises(RuntimeError, match="boom"), capture as captured:
        model(input_ids=side["input_ids"], attention_mask=side["attention_mask"])
    assert set(captured) == {0, 1}
    assert hook_count(model) == before
    fail.remove()
    assert hook_count(model) == 0


# ----------------------------------------------------------------------- the scripts, as a user runs them

RUN_FILES = ("args.json", "train_log.jsonl", "eval_before.json", "eval_after.json", "summary.json")


def heldout_gap(path) -> float:
    return json.loads(path.read_text())["metrics"]["sycophancy"]["heldout"]["gap"]


@pytest.mark.parametrize("script", ["mlpct.py", "attct.py"])
def test_smoke_run(script, tmp_path):
    proc = run_script(script, "--steps", "2", "--limit", "4", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((tmp_path / name).is_file() for name in RUN_FILES)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1] and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps_trained"] == 2 and summary["signal_pairs"] + summary["silent_pairs"] == 64
    for name in ("eval_before.json", "eval_after.json"):
        assert math.isfinite(heldout_gap(tmp_path / name))


def test_no_signal_trains_nothing(tmp_path):
    proc = run_script("mlpct.py", "--threat", "prefill", "--steps", "2", "--limit", "4", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no signal" in proc.stdout
    assert json.loads((tmp_path / "summary.json").read_text()) == {"signal_pairs": 0, "silent_pairs": 64,
                                                                    "steps_trained": 0}


@pytest.mark.parametrize("script", ["mlpct.py", "attct.py"])
def test_training_lowers_sycophancy_gap(script, tmp_path):
    """The default run (the paper's content window), on fewer eval pairs."""
    proc = run_script(script, "--limit", "30", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = heldout_gap(tmp_path / "eval_before.json"), heldout_gap(tmp_path / "eval_after.json")
    assert after < before - 0.2, (before, after)
