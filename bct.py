"""BCT: Bias-augmented Consistency Training.

Before training, the frozen starting model answers every clean train prompt once (greedy). BCT
then fine-tunes the model to give that same answer to the wrapped prompt (plus the prefill, for
prefill attacks): plain cross-entropy on the response tokens only,

    L = - mean_t log p_theta( y_t | wrapped prompt [+ prefill], y_<t ),   y = greedy(clean prompt)

A share of clean pairs (--clean-share: the clean prompt with its own answer) is mixed in so that
the model keeps answering clean prompts as before while it learns to ignore the wrapper.

Prior work: Chua et al. 2024, "Bias-augmented consistency training reduces biased reasoning";
Irpan et al. 2025, "Consistency training helps stop sycophancy and jailbreaks".
Run:  python bct.py --threat sycophancy
"""
import argparse
import json
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from eval import ORGANISM, UsageError, evaluate, format_comparison, generate, load_model, save_results
from threats import THREATS, get_threat
from threats.common import ContractError, encode_pair, render

METHOD = "bct"


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
    p.add_argument("--clean-share", type=float, default=0.3,
                   help="share of training examples that are clean prompts with their own answer")
    p.add_argument("--max-new-tokens", type=int, default=40, help="length of the clean responses used as targets")
    p.set_defaults(steps=100, lr=5e-4)
    return p, p.parse_args(argv)


def resolve_method_args(model, args) -> dict:
    if not 0.0 <= args.clean_share < 1.0:
        raise UsageError(f"--clean-share must be in [0, 1), got {args.clean_share}")
    return {}


# ----------------------------------------------------------------------- loss
def collate(examples: list, pad_id: int, device) -> dict:
    """Right-padded prompt+response ids; labels are -100 except on the response tokens."""
    width = max(len(prompt) + len(response) for prompt, response in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (prompt, response) in enumerate(examples):
        seq = torch.tensor(prompt + response)
        ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
        labels[row, len(prompt):len(seq)] = torch.tensor(response)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def bct_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over response tokens (HF shifts the labels)."""
    return model(**batch).loss


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

    # ALGO LOGIC: the starting model's own greedy answers to the clean prompts are the targets
    clean_prompts = [render(tokenizer, pair.clean) for pair in pairs]
    unique = list(dict.fromkeys(clean_prompts))  # train items repeat across templates: answer each once
    targets = dict(zip(unique, generate(model, tokenizer, unique, max_new_tokens=args.max_new_tokens)))
    rng = random.Random(args.seed)
    examples, n_silent = [], 0  # every pair gives BCT a signal: its target is the clean answer
    for clean_prompt, enc in zip(clean_prompts, encoded):
        response = tokenizer(targets[clean_prompt] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        prompt = enc.clean_ids if rng.random() < args.clean_share else enc.wrapped_ids
        examples.append((prompt, response))

    def compute_loss(batch_examples):
        return bct_loss(model, collate(batch_examples, tokenizer.pad_token_id, args.device))

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
