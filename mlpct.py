"""MLPCT: MLP Consistency Training.

The model reads the wrapped prompt; a frozen copy of the starting model reads the clean prompt.
At every position of the content window (the clean request's tokens, found inside both prompts
and aligned token by token: clean position c_i matches wrapped position w_i) and every chosen
decoder layer l, MLPCT turns the wrapped post-activation MLP state a_l (the input of layer l's MLP
output projection: act(gate(x)) * up(x) in gated MLPs, act(c_fc(x)) in GPT-2) toward the clean one:

    L = coef * mean_{l, i} [1 - cos(a_l(wrapped)[w_i], sg(a_l(clean)[c_i]))]

`--window suffix` uses ACT's shared-suffix window instead; `--window both` their union. `both` is
this implementation's ablation, not the paper's: the content window leaves out the assistant
turn's opening tokens, where the answer is decided. Pairs whose window gives no signal (every
position sees the same tokens in both prompts: prefill, where the clean prompt is a prefix of the
wrapped one, and frustration, where the request opens both conversations) are counted and skipped.

Paper: "Consistency training along the transformer stack" (MLPCT), reimplemented here.
Run:  python mlpct.py --threat frustration
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

METHOD = "mlpct"


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
    p.add_argument("--coef", type=float, default=1.0, help="loss coefficient")
    p.add_argument("--window", default="content", choices=WINDOWS,
                   help="content: the clean request's tokens (the paper's, default); suffix: ACT's shared suffix; "
                        "both: their union (our ablation, not the paper's)")
    # Tuned on the organism (sycophancy): the held-out gap falls early, while clean task accuracy
    # erodes at lr 3e-4 or past ~100 steps. Real models need their own tuning.
    p.set_defaults(steps=100, lr=1e-4)
    return p, p.parse_args(argv)


# ----------------------------------------------------------------------- hook site: MLP output projection input
# a_l = the input of the projection that maps layer l's MLP back to the residual width, read with a
# forward pre-hook. Paths: the decoder layers, then the projection inside one layer (GPT-2's
# attention also has a c_proj: the path names the MLP's).
HOOK_SITES = {"llama/qwen2/gemma2/mistral": ("model.layers", "mlp.down_proj"),
              "gpt2": ("transformer.h", "mlp.c_proj"), "gpt-neox": ("gpt_neox.layers", "mlp.dense_4h_to_h")}


def _get(module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def mlp_out_projs(model) -> list[torch.nn.Module]:
    for layers_path, site in HOOK_SITES.values():
        layers = _get(model, layers_path)
        if isinstance(layers, torch.nn.ModuleList) and all(isinstance(_get(b, site), torch.nn.Module) for b in layers):
            return [_get(b, site) for b in layers]
    raise UsageError(f"cannot find the MLP output projections of {type(model).__name__}: looked for "
                     f"{', '.join('.'.join(s) for s in HOOK_SITES.values())} (add its paths to HOOK_SITES)")


def select(n: int, indices: list[int] | None, what: str) -> list[int]:
    if indices is None:
        return list(range(n))
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise UsageError(f"--{what} {bad} out of range: the model has {n} {what} (0..{n - 1})")
    return sorted({i % n for i in indices})


def resolve_method_args(model, args) -> dict:
    return {"layers": select(len(mlp_out_projs(model)), args.layers, "layers")}


@contextmanager
def capture_mlp(model, layers: list[int], rows: torch.Tensor, cols: torch.Tensor):
    """Inside the block, `captured[l]` holds the input of layer l's MLP output projection at (rows,
    cols) only: (n_positions, intermediate). Hooks are removed on exit, even after an exception."""
    captured, handles = {}, []
    sites = mlp_out_projs(model)

    def hook(layer):
        def fn(module, inputs):
            captured[layer] = inputs[0][rows, cols]  # inputs[0]: (batch, seq, intermediate)
        return fn

    try:
        for layer in layers:
            handles.append(sites[layer].register_forward_pre_hook(hook(layer)))
        yield captured
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------- loss
def mlpct_loss(wrapped: dict, clean: dict) -> torch.Tensor:
    """Mean over layers and window positions of 1 - cosine similarity; `clean` is a constant target."""
    losses = [1 - torch.cosine_similarity(a_w, clean[layer].detach(), dim=-1)  # (n_positions,)
              for layer, a_w in wrapped.items()]  # a_w: (n_positions, intermediate)
    return torch.cat(losses).mean()


def consistency_loss(model, reference, batch: dict, layers: list[int]) -> torch.Tensor:
    """Clean pass through the frozen reference (no grad), wrapped pass through the trained model.
    Both run the base model only: the LM head is not needed, and on real vocabularies it is
    the most expensive matmul of the pass."""
    c, w = batch["clean"], batch["wrapped"]
    with torch.no_grad(), capture_mlp(reference, layers, c["rows"], c["cols"]) as clean:
        reference.base_model(input_ids=c["input_ids"], attention_mask=c["attention_mask"])
    with capture_mlp(model, layers, w["rows"], w["cols"]) as wrapped:
        model.base_model(input_ids=w["input_ids"], attention_mask=w["attention_mask"])
    return mlpct_loss(wrapped, clean)


def collate(examples: list, kind: str, pad_id: int, device) -> dict:
    """Right-padded ids for both sides and the flat (row, position) index of every window position."""
    batch, windows = {}, [e.window(kind) for e in examples]
    for side, i in (("clean", 0), ("wrapped", 1)):
        seqs = [e.clean_ids if i == 0 else e.wrapped_ids for e in examples]
        ids = torch.full((len(seqs), max(map(len, seqs))), pad_id)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
        rows = torch.tensor([r for r, w in enumerate(windows) for _ in w[i]])
        cols = torch.tensor([p for w in windows for p in w[i]])
        mask = torch.arange(ids.shape[1])[None] < torch.tensor([len(s) for s in seqs])[:, None]
        batch[side] = {"input_ids": ids.to(device), "attention_mask": mask.long().to(device),
                       "rows": rows.to(device), "cols": cols.to(device)}
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

    # ALGO LOGIC: frozen reference, layers, and the pairs that carry a signal in the chosen window
    layers = method_args["layers"]
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    examples = [e for e in encoded if e.signal(args.window)]
    n_silent = len(encoded) - len(examples)
    print(f"{len(examples)} of {len(encoded)} train pairs carry signal in the {args.window} window; "
          f"{n_silent} give none and are skipped")
    if not examples:
        print(f"no signal: on {args.threat} every pair's {args.window} window is empty or sees the same tokens in "
              "both prompts, so MLPCT has nothing to train on; the model is left unchanged "
              "(--window both adds the shared suffix)")

    def compute_loss(batch_examples):
        batch = collate(batch_examples, args.window, tokenizer.pad_token_id, args.device)
        return args.coef * consistency_loss(model, reference, batch, layers)

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
