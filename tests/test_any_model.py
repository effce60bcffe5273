"""The scripts on models other than the organism, as `--model PATH` users run them: a tiny random
GPT-2 (another module layout) saved in Hugging Face format with a chat template, and prompt
rendering for templates that reject a system turn (Gemma's)."""
import copy

import pytest

from conftest import run_script, tiny
from threats import get_threat
from threats.common import render


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, organism_tokenizer):
    folder = tmp_path_factory.mktemp("gpt2")
    tiny("gpt2", len(organism_tokenizer)).save_pretrained(folder)
    organism_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", ["bct", "act", "mlpct", "attct"])
def test_method_runs_on_a_gpt2_folder(method, gpt2_folder, tmp_path):
    result = run_script(f"{method}.py", "--model", gpt2_folder, "--threat", "jailbreak", "--steps", "1",
                        "--batch-size", "4", "--limit", "3", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "eval_after.json").exists()


def test_system_turn_is_folded_into_the_user_turn_when_the_template_rejects_it(organism_tokenizer):
    tokenizer = copy.deepcopy(organism_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    pair = next(p for p in get_threat("conditional").pairs(templates="train", items="eval", n=40, seed=0)
                if p.meta["placement"] == "system")
    text = render(tokenizer, pair.wrapped)
    assert "<|system|>" not in text
    assert f"<|user|>\n{pair.wrapped[0]['content']}\n\n{pair.content}<|end|>" in text
