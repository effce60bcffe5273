"""AttCT: Attention Consistency Training.

The model reads the wrapped prompt; a frozen copy of the starting model reads the clean prompt.
For every position of the content window (the clean request's tokens, found inside both prompts
and aligned token by token) taken as a query, every chosen head h and decoder layer l, AttCT pulls
the wrapped attention row A_lh[q, K], restricted to the window's keys K, toward the clean one:

    L = coef * mean_{l, h, q} JS(A_lh(wrapped)[q, K], sg(A_lh(clean)[q, K]))
    JS(p, r) = 1/2 sum_k p_k log(p_k / m_k) + 1/2 sum_k r_k log(r_k / m_k),   m = (p + r) / 2

The rows are not renormalized (their mass outside the window is part of the signal; the sum stays
non-negative and is 0 only when the rows agree). The model runs eager attention, the only kind
that returns the weights. `--window suffix` uses ACT's shared-suffix window instead (for queries
and keys); `--window both` their union. `both` is this implementation's ablation, not the paper's:
the content window leaves out the assistant turn's opening tokens, where the answer is decided.
Pairs whose window gives no signal (every position sees the same tokens in both prompts: prefill,
and frustration, where the request opens both conversations) are counted and skipped.

Paper: "Consistency training along the transformer stack" (AttCT), reimplemented here.
Run:  python attct.py --threat sycophancy
"""
import argparse
import copy
import json
import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from eval import ORGANISM, UsageError, evaluate, format_comparison, load_model, save_results
from threats import THREATS, get_threat
from threats.common import WINDOWS, ContractError, encode_pair

METHOD = "attct"


# ======================================================================= shared: args (same in all four methods)
def shared_args(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threat", default="sycophancy", choices=THREATS, help="threat to train against")
    p.add_argument("--model", default=ORGANISM, help="local folder or hub id (default: the embedded organism)")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed for pairs, sampling and torch")
    p.add_argument("--eval-threats", nargs="+", default=None, choices=("all",) + THREATS, metavar="THREAT",
                   help="threats to evaluate before and after: 'all' or names (default: the trained one)")
    p.add_argument("--limit", type=int, default=60, help="eval pairs per threat and template split")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<threat>__<method>__<seed>)")
    p.add_argument("--save-model", action="store_true", help="save the trained model into <out>/model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, ...")
    return p
# ======================================================================= end shared


def parse_args(argv=None):
    p = shared_args(__doc__)
    # method-specific
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="decoder layer indices to match, negatives from the end (default: all)")
    p.add_argument("--heads", type=int, nargs="+", default=None,
                   help="attention head indices to match, negatives from the end (default: all)")
    p.add_argument("--coef", type=float, default=1.0, help="loss coefficient")
    p.add_argument("--window", default="content", choices=WINDOWS,
                   help="content: the clean request's tokens (the paper's, default); suffix: ACT's shared suffix; "
                        "both: their union (our ablation, not the paper's)")
    # Tuned on the organism (sycophancy): the held-out gap falls early, while clean task accuracy
    # erodes at lr 3e-4 past ~75 steps. Real models need their own tuning.
    p.set_defaults(steps=75, lr=3e-4)
    return p, p.parse_args(argv)


# ----------------------------------------------------------------------- hook site: attention weights (eager)
# Under eager attention each layer's attention module returns (output, weights), weights of shape
# (batch, heads, T, T), after softmax. Paths: the decoder layers, then the attention inside one layer.
HOOK_SITES = {"llama/qwen2/gemma2/mistral": ("model.layers", "self_attn"), "gpt2": ("transformer.h", "attn"),
              "gpt-neox": ("gpt_neox.layers", "attention")}


def _get(module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def attention_modules(model) -> list[torch.nn.Module]:
    for layers_path, site in HOOK_SITES.values():
        layers = _get(model, layers_path)
        if isinstance(layers, torch.nn.ModuleList) and all(isinstance(_get(b, site), torch.nn.Module) for b in layers):
            return [_get(b, site) for b in layers]
    raise UsageError(f"cannot find the attention modules of {type(model).__name__}: looked for "
                     f"{', '.join('.'.join(s) for s in HOOK_SITES.values())} (add its paths to HOOK_SITES)")


def use_eager_attention(model) -> None:
    try:
        model.set_attn_implementation("eager")
    except (ValueError, ImportError) as e:
        raise UsageError(f"{type(model).__name__} cannot run eager attention, which AttCT needs to read the "
                         f"attention weights: {str(e).splitlines()[0]}") from None
    if model.config._attn_implementation != "eager":
        raise UsageError(f"{type(model).__name__} cannot switch to eager attention, which AttCT needs to read the "
                         "attention weights")


def select(n: int, indices: list[int] | None, what: str) -> list[int]:
    if indices is None:
        return list(range(n))
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise UsageError(f"--{what} {bad} out of range: the model has {n} {what} (0..{n - 1})")
    return sorted({i % n for i in indices})


def resolve_method_args(model, args) -> dict:
    """Switches the model to eager attention (before the first evaluation, so that before and
    after run the same kernel) and checks --layers and --heads."""
    use_eager_attention(model)
    return {"layers": select(len(attention_modules(model)), args.layers, "layers"),
            "heads": torch.tensor(select(model.config.num_attention_heads, args.heads, "heads"), device=args.device)}


@contextmanager
def capture_attention(model, layers: list[int], heads: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      keys: torch.Tensor):
    """Inside the block, `captured[l]` holds layer l's attention weights of the chosen heads for the
    queries at (rows, cols) and, per query, the keys of its example's window: (n_queries, n_heads,
    n_keys). Only this slice is kept, as each layer runs. Hooks are removed on exit, even after an
    exception."""
    captured, handles = {}, []
    modules = attention_modules(model)

    def hook(layer):
        def fn(module, inputs, output):
            weights = output[1]  # (batch, heads, T, T) under eager, None under sdpa/flash
            if weights is None:
                raise UsageError(f"layer {layer}'s attention returned no weights: AttCT needs eager attention")
            captured[layer] = weights[rows[:, None, None], heads[None, :, None], cols[:, None, None], keys[:, None, :]]
        return fn

    try:
        for layer in layers:
            handles.append(modules[layer].register_forward_hook(hook(layer)))
        yield captured
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------- loss
def attct_loss(wrapped: dict, clean: dict, key_mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over layers, heads and queries of the Jensen-Shannon divergence between the window rows;
    `clean` is a constant target. `key_mask` (n_queries, n_keys) drops the padding keys."""
    mask = key_mask[:, None, :].float()  # (n_queries, 1, n_keys)
    losses = []
    for layer, rows in wrapped.items():
        p, r = rows * mask, clean[layer].detach() * mask  # (n_queries, heads, n_keys)
        m = (p + r) / 2
        js = 0.5 * (p * ((p + eps) / (m + eps)).log() + r * ((r + eps) / (m + eps)).log()).sum(-1)
        losses.append(js)  # (n_queries, heads)
    return torch.stack(losses).mean()


def consistency_loss(model, reference, batch: dict, layers: list[int], heads: torch.Tensor) -> torch.Tensor:
    """Clean pass through the frozen reference (no grad), wrapped pass through the trained model.
    Both run the base model only: the LM head is not needed, and on real vocabularies it is
    the most expensive matmul of the pass."""
    c, w = batch["clean"], batch["wrapped"]
    with torch.no_grad(), capture_attention(reference, layers, heads, c["rows"], c["cols"], c["keys"]) as clean:
        reference.base_model(input_ids=c["input_ids"], attention_mask=c["attention_mask"])
    with capture_attention(model, layers, heads, w["rows"], w["cols"], w["keys"]) as wrapped:
        model.base_model(input_ids=w["input_ids"], attention_mask=w["attention_mask"])
    return attct_loss(wrapped, clean, batch["key_mask"])


def collate(examples: list, kind: str, pad_id: int, device) -> dict:
    """Right-padded ids for both sides; every window position as a query, its (row, position), and
    its example's window positions as keys, padded to the longest window (`key_mask` marks real ones)."""
    windows = [e.window(kind) for e in examples]
    lengths = torch.tensor([len(w[0]) for w in windows])
    n_keys = int(lengths.max())
    query_row = torch.repeat_interleave(torch.arange(len(examples)), lengths)  # (n_queries,)
    batch = {"key_mask": (torch.arange(n_keys)[None] < lengths[:, None])[query_row].to(device)}
    for side, i in (("clean", 0), ("wrapped", 1)):
        seqs = [e.clean_ids if i == 0 else e.wrapped_ids for e in examples]
        ids = torch.full((len(seqs), max(map(len, seqs))), pad_id)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
        cols = torch.tensor([p for w in windows for p in w[i]])
        keys = torch.tensor([w[i] + [0] * (n_keys - len(w[i])) for w in windows])[query_row]  # (n_queries, n_keys)
        mask = torch.arange(ids.shape[1])[None] < torch.tensor([len(s) for s in seqs])[:, None]
        batch[side] = {"input_ids": ids.to(device), "attention_mask": mask.long().to(device),
                       "rows": query_row.to(device), "cols": cols.to(device), "keys": keys.to(device)}
    return batch


def main(argv=None) -> None:
    parser, args = parse_args(argv)
    # ======================================================================= shared: setup
    out = args.out or Path("runs") / f"{args.threat}__{METHOD}__{args.seed}"
    if out.exists() and any(out.iterdir()):
        parser.error(f"run folder {out} already exists and is not empty; pass another --out or delete it")
    for name in ("steps", "batch_size", "limit"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    eval_threats = THREATS if "all" in (args.eval_threats or []) else tuple(args.eval_threats or [args.threat])
    try:
        model, tokenizer = load_model(args.model, args.device)
        method_args = resolve_method_args(model, args)  # bad method flags fail before anything is written
    except UsageError as e:
        parser.error(str(e))
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(vars(args), indent=2, default=str) + "\n")
    config = {"method": METHOD, **vars(args)}
    before, records = evaluate(model, tokenizer, eval_threats, ("train", "heldout"), args.limit, args.seed)
    save_results(out / "eval_before.json", config, before, records)
    pairs = get_threat(args.threat).pairs(templates="train", items="train", n=args.steps * args.batch_size,
                                          seed=args.seed)
    try:
        encoded = [encode_pair(tokenizer, pair) for pair in pairs]
    except ContractError as e:
        parser.error(str(e))
    # ======================================================================= end shared

    # ALGO LOGIC: frozen reference, layers and heads, and the pairs that carry a signal in the chosen window
    layers, heads = method_args["layers"], method_args["heads"]
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    examples = [e for e in encoded if e.signal(args.window)]
    n_silent = len(encoded) - len(examples)
    print(f"{len(examples)} of {len(encoded)} train pairs carry signal in the {args.window} window; "
          f"{n_silent} give none and are skipped")
    if not examples:
        print(f"no signal: on {args.threat} every pair's {args.window} window is empty or sees the same tokens in "
              "both prompts, so AttCT has nothing to train on; the model is left unchanged "
              "(--window both adds the shared suffix)")

    def compute_loss(batch_examples):
        batch = collate(batch_examples, args.window, tokenizer.pad_token_id, args.device)
        return args.coef * consistency_loss(model, reference, batch, layers, heads)

    # ======================================================================= shared: train, evaluate, save
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    bar = tqdm(range(args.steps if examples else 0), desc=f"{METHOD} {args.threat}")
    with open(out / "train_log.jsonl", "w") as log:
        for step in bar:
            start = time.time()
            batch_examples = [examples[(step * args.batch_size + i) % len(examples)] for i in range(args.batch_size)]
            loss = compute_loss(batch_examples)
            if not torch.isfinite(loss):
                raise SystemExit(f"error: loss is {loss.item()} at step {step}; lower --lr or --coef")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds = time.time() - start
            log.write(json.dumps({"step": step, "loss": loss.item(), "seconds": seconds}) + "\n")
            bar.set_postfix(loss=f"{loss.item():.4f}", step_s=f"{seconds:.2f}")
    (out / "summary.json").write_text(json.dumps({"signal_pairs": len(examples), "silent_pairs": n_silent,
                                                  "steps_trained": bar.total}, indent=2) + "\n")
    model.eval()
    after, records = evaluate(model, tokenizer, eval_threats, ("train", "heldout"), args.limit, args.seed)
    save_results(out / "eval_after.json", config, after, records)
    print(format_comparison(before, after, f"{METHOD} on {args.threat}, {args.steps} steps"))
    if args.save_model:
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
    print(f"wrote {out}")
    # ======================================================================= end shared


if __name__ == "__main__":
    main()
