"""ACT: Activation Consistency Training.

The model reads the wrapped prompt; a frozen copy of the starting model reads the clean prompt.
At every position of the shared suffix (the longest run of identical tokens at the end of both
prompts: position -k in one matches -k in the other) and every chosen decoder layer l, ACT pulls
the wrapped residual stream h_l (the output of decoder layer l) toward the clean one:

    L = coef * mean_{l, k} ||h_l(wrapped)[-k] - sg(h_l(clean)[-k])||^2 / d          (--loss l2)
    L = coef * mean_{l, k} ||h_l(wrapped)[-k] - sg(h_l(clean)[-k])||^2 / ||sg(h_l(clean)[-k])||^2
                                                                                     (--loss relative)

`l2` is the prior work's squared distance (divided by the width d, which only rescales it): its
size depends on the model's activation scale, so its lr needs tuning per model (on the organism
it starts in the thousands and collapses the model at lr 5e-4). `relative` (the default) divides
by the clean state's squared norm, so one lr works across layers and models.
Pairs whose suffix window gives no signal (prefill: the clean prompt ends in the generation
prompt, the wrapped one in the prefilled text) are counted and skipped.

Prior work: Irpan et al. 2025, "Consistency training helps stop sycophancy and jailbreaks".
Run:  python act.py --threat sycophancy
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
from threats.common import ContractError, encode_pair

METHOD = "act"


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
    p.add_argument("--loss", default="relative", choices=("relative", "l2"),
                   help="relative: divided by ||h_clean||^2 (default); l2: the paper's squared distance / d")
    return p, p.parse_args(argv)


def resolve_method_args(model, args) -> dict:
    return {"layers": select(len(decoder_layers(model)), args.layers, "layers")}


# ----------------------------------------------------------------------- hook site: decoder layer outputs
# Residual stream after decoder layer l = the output of model.<LAYERS>[l] (not hidden_states[-1],
# which HF takes after the final norm).
LAYER_PATHS = {"llama/qwen2/gemma2/mistral": "model.layers", "gpt2": "transformer.h", "gpt-neox": "gpt_neox.layers"}


def _get(module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def decoder_layers(model) -> torch.nn.ModuleList:
    for path in LAYER_PATHS.values():
        if isinstance(_get(model, path), torch.nn.ModuleList):
            return _get(model, path)
    raise UsageError(f"cannot find the decoder layers of {type(model).__name__}: looked for "
                     f"{', '.join(LAYER_PATHS.values())} (add its path to LAYER_PATHS)")


def select(n: int, indices: list[int] | None, what: str) -> list[int]:
    if indices is None:
        return list(range(n))
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise UsageError(f"--{what} {bad} out of range: the model has {n} {what} (0..{n - 1})")
    return sorted({i % n for i in indices})


@contextmanager
def capture_residual(model, layers: list[int], rows: torch.Tensor, cols: torch.Tensor):
    """Inside the block, `captured[l]` holds layer l's output at (rows, cols) only:
    (n_positions, hidden). Hooks are removed on exit, even after an exception."""
    captured, handles = {}, []
    blocks = decoder_layers(model)

    def hook(layer):
        def fn(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output  # (batch, seq, hidden)
            captured[layer] = hidden[rows, cols]
        return fn

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(hook(layer)))
        yield captured
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------- loss
def act_loss(wrapped: dict, clean: dict, kind: str = "relative") -> torch.Tensor:
    """Mean over layers and window positions of the (relative) squared distance; `clean` is
    treated as a constant target."""
    losses = []
    for layer, h_w in wrapped.items():
        h_c = clean[layer].detach()  # (n_positions, hidden)
        dist = (h_w - h_c).pow(2).sum(-1)
        losses.append(dist / h_c.pow(2).sum(-1).clamp_min(1e-6) if kind == "relative" else dist / h_c.shape[-1])
    return torch.cat(losses).mean()


def consistency_loss(model, reference, batch: dict, layers: list[int], kind: str) -> torch.Tensor:
    """Clean pass through the frozen reference (no grad), wrapped pass through the trained model.
    Both run the base model only: the LM head is not needed, and on real vocabularies it is
    the most expensive matmul of the pass."""
    c, w = batch["clean"], batch["wrapped"]
    with torch.no_grad(), capture_residual(reference, layers, c["rows"], c["cols"]) as clean:
        reference.base_model(input_ids=c["input_ids"], attention_mask=c["attention_mask"])
    with capture_residual(model, layers, w["rows"], w["cols"]) as wrapped:
        model.base_model(input_ids=w["input_ids"], attention_mask=w["attention_mask"])
    return act_loss(wrapped, clean, kind)


def collate(examples: list, pad_id: int, device) -> dict:
    """Right-padded ids for both sides and the flat (row, position) index of every window position."""
    batch = {}
    for side, i in (("clean", 0), ("wrapped", 1)):
        seqs = [e.clean_ids if i == 0 else e.wrapped_ids for e in examples]
        ids = torch.full((len(seqs), max(map(len, seqs))), pad_id)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
        rows = torch.tensor([r for r, e in enumerate(examples) for _ in e.suffix[i]])
        cols = torch.tensor([p for e in examples for p in e.suffix[i]])
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

    # ALGO LOGIC: frozen reference, layers, and the pairs that carry a signal in the suffix window
    layers = method_args["layers"]
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    examples = [e for e in encoded if e.suffix_signal]
    n_silent = len(encoded) - len(examples)
    print(f"{len(examples)} of {len(encoded)} train pairs carry signal in the suffix window; "
          f"{n_silent} give none and are skipped")
    if not examples:
        print(f"no signal: on {args.threat} every pair's suffix window is empty or identical in both prompts, "
              "so ACT has nothing to train on; the model is left unchanged")

    def compute_loss(batch_examples):
        batch = collate(batch_examples, tokenizer.pad_token_id, args.device)
        return args.coef * consistency_loss(model, reference, batch, layers, args.loss)

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
