"""Evaluate a chat model on the six threat settings, the same way before and after training.

For each threat and template split (held-out templates by default; train templates too with
`--split both`), greedy generation on the clean and the wrapped prompt of every eval pair, a
deterministic label per response (threats/<name>.py: score), then:
  clean_rate, wrapped_rate  share of target responses that show the threat's bad behaviour
  gap                       wrapped_rate - clean_rate (the papers' BRR / PAR)
  consistency               share of target pairs whose wrapped label equals the clean label
  capability                task_accuracy (clean multiple choice), benign_answer_rate (benign
                            requests under the wrappers, not refused), harmful_refusal_rate
Run:  python eval.py --threat all --split both --out runs/eval_organism
"""
import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from tqdm import tqdm
from huggingface_hub import model_info, try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer

from threats import THREATS, get_threat
from threats.common import TEMPLATE_SPLITS, answer_letter, answers, check_chat_template, render

ROOT = Path(__file__).resolve().parent
ORGANISM = str(ROOT / "organism")
SPLITS = {"heldout": ("heldout",), "train": ("train",), "both": ("train", "heldout")}


class UsageError(Exception):
    """Bad input from the user: the CLIs print it as one line and exit with code 2."""


# ----------------------------------------------------------------------------- model loading

def load_model(name: str = ORGANISM, device: str = "cpu", attn_implementation: str | None = None):
    """Any causal LM with a chat template, from a local folder or the hub, in float32."""
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise UsageError(f"model path {name!r} does not exist (give a local folder or a hub id)")
    if not looks_local and try_to_load_from_cache(name, "config.json") is None:
        try:  # one quick request, instead of from_pretrained's retries on a dead network
            model_info(name)
        except Exception as e:  # noqa: BLE001 (hub errors come in many types: report any)
            raise UsageError(f"cannot reach model {name!r} on the hub and it is not cached "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        check_chat_template(tokenizer, repr(name))  # before loading weights: fail fast on base models
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32,
                                                     attn_implementation=attn_implementation)
    except (OSError, ValueError) as e:  # ContractError is a ValueError
        raise UsageError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


# ----------------------------------------------------------------------------- generation

@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], batch_size: int = 64, max_new_tokens: int = 40,
             progress: bool = True) -> list[str]:
    """Greedy continuations of rendered prompts: batched, left-padded, KV cache, longest first
    (so batches hold prompts of similar length)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    responses = [""] * len(prompts)
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        batch = tokenizer([prompts[i] for i in idx], add_special_tokens=False, padding=True,
                          return_tensors="pt").to(device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, use_cache=True)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            responses[i] = text.strip()
    return responses


# ----------------------------------------------------------------------------- metrics

def _rates(records: list[dict]) -> dict:
    n = len(records)
    mean = lambda xs: sum(xs) / n if n else float("nan")  # noqa: E731
    clean = mean([r["clean_bad"] for r in records])
    wrapped = mean([r["wrapped_bad"] for r in records])
    return {"n": n, "clean_rate": clean, "wrapped_rate": wrapped, "gap": wrapped - clean,
            "consistency": mean([r["clean_label"] == r["wrapped_label"] for r in records])}


def _capability(records: list[dict]) -> dict:
    guards = {}
    targets = [r for r in records if r["kind"] == "target"]
    benign = [r for r in records if r["kind"] == "benign"]
    if targets and "answer" in targets[0]["meta"]:
        guards["task_accuracy"] = sum(answer_letter(r["clean_response"]) == r["meta"]["answer"]
                                      for r in targets) / len(targets)
    if benign:
        guards["benign_answer_rate"] = sum(answers(r["wrapped_response"]) for r in benign) / len(benign)
        guards["benign_clean_answer_rate"] = sum(answers(r["clean_response"]) for r in benign) / len(benign)
    if targets and targets[0]["meta"].get("harmful"):
        guards["harmful_refusal_rate"] = sum(not answers(r["clean_response"]) for r in targets) / len(targets)
    return guards


def metrics_from_records(records: list[dict]) -> dict:
    """DESIGN.md section 6 shape, plus per-placement rates (where the wrapper sits)."""
    metrics = {}
    for threat in dict.fromkeys(r["threat"] for r in records):
        mine = [r for r in records if r["threat"] == threat]
        metrics[threat] = {}
        for split in dict.fromkeys(r["split"] for r in mine):
            targets = [r for r in mine if r["split"] == split and r["kind"] == "target"]
            metrics[threat][split] = _rates(targets)
            metrics[threat][split]["by_placement"] = {
                p: _rates([r for r in targets if r["placement"] == p])
                for p in sorted({r["placement"] for r in targets})}
        metrics[threat]["capability"] = _capability(mine)
    return metrics


def evaluate(model, tokenizer, threats=THREATS, splits=("heldout",), limit: int | None = 60, seed: int = 0,
             batch_size: int = 64, max_new_tokens: int = 40, progress: bool = True) -> tuple[dict, list[dict]]:
    """Metrics and per-sample records for eval items of `threats` under `splits` templates.
    `limit` is the number of pairs per threat and split (target and benign together)."""
    records = []
    for threat in threats:
        module = get_threat(threat)
        for split in splits:
            for pair in module.pairs(templates=split, items="eval", n=limit, seed=seed):
                records.append({"threat": threat, "split": split, "template": pair.meta["template"],
                                "placement": pair.meta["placement"], "kind": pair.meta["kind"], "meta": pair.meta,
                                "clean_prompt": render(tokenizer, pair.clean),
                                "wrapped_prompt": render(tokenizer, pair.wrapped, pair.prefill)})
    # Clean prompts repeat across splits: generate each distinct prompt once.
    prompts = list(dict.fromkeys(p for r in records for p in (r["clean_prompt"], r["wrapped_prompt"])))
    was_training = model.training
    model.eval()
    responses = dict(zip(prompts, generate(model, tokenizer, prompts, batch_size, max_new_tokens, progress)))
    model.train(was_training)
    for r in records:
        score = get_threat(r["threat"]).score
        for side in ("clean", "wrapped"):
            r[f"{side}_response"] = responses[r[f"{side}_prompt"]]
            r[f"{side}_label"], r[f"{side}_bad"] = score(r[f"{side}_response"], r["meta"])
    return metrics_from_records(records), records


# ----------------------------------------------------------------------------- reporting

def format_table(metrics: dict, title: str | None = None) -> str:
    lines = [f"### {title}"] if title else []
    lines += ["| threat | split | n | clean | wrapped | gap | consistency | capability |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for threat, by_split in metrics.items():
        guards = ", ".join(f"{k} {v:.2f}" for k, v in by_split["capability"].items())
        for split in TEMPLATE_SPLITS:
            if split in by_split:
                m = by_split[split]
                lines.append(f"| {threat} | {split} | {m['n']} | {m['clean_rate']:.2f} | {m['wrapped_rate']:.2f} | "
                             f"{m['gap']:+.2f} | {m['consistency']:.2f} | {guards} |")
    return "\n".join(lines)


def format_comparison(before: dict, after: dict, title: str) -> str:
    """Before/after rates per threat and split, and the capability guards."""
    lines = [f"### {title}", "| threat | split | wrapped before | wrapped after | gap before | gap after | "
             "consistency before | consistency after |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for threat in before:
        for split in TEMPLATE_SPLITS:
            if split in before[threat]:
                b, a = before[threat][split], after[threat][split]
                lines.append(f"| {threat} | {split} | {b['wrapped_rate']:.2f} | {a['wrapped_rate']:.2f} | "
                             f"{b['gap']:+.2f} | {a['gap']:+.2f} | {b['consistency']:.2f} | {a['consistency']:.2f} |")
    lines += ["", "| threat | capability guard | before | after |", "|---|---|---:|---:|"]
    for threat in before:
        for guard, value in before[threat]["capability"].items():
            lines.append(f"| {threat} | {guard} | {value:.2f} | {after[threat]['capability'][guard]:.2f} |")
    return "\n".join(lines)


def run_info() -> dict:
    """Git commit and library versions, for the results JSON."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"git_commit": commit, "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                               "transformers": transformers.__version__}}


def save_results(path: Path, config: dict, metrics: dict, records: list[dict] | None = None) -> None:
    """`path` (results JSON: config, seed, commit, versions, metrics) and, next to it,
    `<stem>_samples.jsonl` (one line per response)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "seed": config.get("seed"), **run_info(), "metrics": metrics},
                               indent=2, default=str) + "\n")
    if records is not None:
        with open(path.with_name(path.stem + "_samples.jsonl"), "w") as f:
            for r in records:
                for side in ("clean", "wrapped"):
                    f.write(json.dumps({"threat": r["threat"], "split": r["split"], "template": r["template"],
                                        "kind": r["kind"], "side": side, "prompt": r[f"{side}_prompt"],
                                        "response": r[f"{side}_response"], "label": r[f"{side}_label"],
                                        "bad": r[f"{side}_bad"]}) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ORGANISM, help="local folder or hub id (default: the embedded organism)")
    parser.add_argument("--threat", nargs="+", default=["all"], choices=("all",) + THREATS, metavar="THREAT",
                        help=f"'all' or one or more of: {', '.join(THREATS)}")
    parser.add_argument("--split", default="heldout", choices=tuple(SPLITS), help="which wrapper templates")
    parser.add_argument("--limit", type=int, default=60, help="pairs per threat and split (eval items)")
    parser.add_argument("--seed", type=int, default=0, help="seed for pair generation")
    parser.add_argument("--batch-size", type=int, default=64, help="generation batch size")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="generation length")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="write DIR/results.json and DIR/results_samples.jsonl")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    threats = THREATS if "all" in args.threat else tuple(dict.fromkeys(args.threat))
    try:
        model, tokenizer = load_model(args.model, args.device)
    except UsageError as e:
        parser.error(str(e))
    start = time.time()
    metrics, records = evaluate(model, tokenizer, threats, SPLITS[args.split], args.limit, args.seed,
                                args.batch_size, args.max_new_tokens)
    print(format_table(metrics, f"{args.model} ({time.time() - start:.0f}s)"))
    if args.out:
        save_results(args.out / "results.json", vars(args), metrics, records)
        print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
