"""The pair contract (DESIGN.md section 3) for every threat, on the organism's real tokenizer."""
import copy
import re

import pytest

from threats import THREATS, get_threat, items
from threats.common import ContractError, content_window, encode_pair, has_signal, render, suffix_len

WITH_BENIGN = ("jailbreak", "persona", "prefill", "conditional")
SPLITS = (("train", "train"), ("heldout", "eval"))  # (template split, item split) as train / eval use them


@pytest.fixture(params=THREATS)
def threat(request):
    return get_threat(request.param)


def sample(threat, templates: str, item_split: str, seed: int = 0):
    # Twice the template count, so that every template appears among the target pairs.
    return threat.pairs(templates, item_split, n=2 * len(threat.TEMPLATES[templates]), seed=seed)


def template_texts(templates) -> set[str]:
    """Every literal text of a template list (persona templates hold a (name, motto) tuple)."""
    out = set()
    for _, _, payload in templates:
        for text in payload if isinstance(payload, tuple) else (payload,):
            # Chunks around the placeholders; a bare ")." is no template's own text.
            out |= {c.strip() for c in re.split(r"\{\w\}", text) if re.search(r"[A-Za-z]{3}", c)}
    return out


# ----------------------------------------------------------------------------- generation

def test_pairs_deterministic_for_a_seed(threat):
    for templates, item_split in SPLITS:
        first = sample(threat, templates, item_split, seed=3)
        assert first == sample(threat, templates, item_split, seed=3)
        assert first != sample(threat, templates, item_split, seed=4)


def test_templates_enough_and_disjoint(threat):
    train, heldout = threat.TEMPLATES["train"], threat.TEMPLATES["heldout"]
    assert len(train) >= 8 and len(heldout) >= 4
    ids = [t[0] for t in train + heldout]
    assert len(set(ids)) == len(ids)
    assert not template_texts(train) & template_texts(heldout)


def test_heldout_pairs_use_only_heldout_templates(threat, organism_tokenizer):
    heldout_ids = {t[0] for t in threat.TEMPLATES["heldout"]}
    train_texts = template_texts(threat.TEMPLATES["train"])
    for pair in sample(threat, "heldout", "eval"):
        assert pair.meta["template"] in heldout_ids
        wrapped = render(organism_tokenizer, pair.wrapped, pair.prefill)
        assert not [t for t in train_texts if t in wrapped], pair.meta


@pytest.mark.parametrize("source", [items.mc_items, items.harmful_requests, items.benign_requests,
                                    items.advice_questions, items.identity_questions], ids=lambda f: f.__name__)
def test_train_and_eval_items_disjoint(source):
    key = lambda item: item["question"] if isinstance(item, dict) else item  # noqa: E731
    train, evals = [key(i) for i in source("train")], [key(i) for i in source("eval")]
    assert train and evals
    assert len(set(evals)) == len(evals), "a repeated eval item counts twice in the metrics"
    assert not set(train) & set(evals)


def test_pairs_on_train_and_eval_items_share_no_request(threat):
    train = {p.content for p in threat.pairs("train", "train", n=None, seed=0)}
    evals = {p.content for p in threat.pairs("heldout", "eval", n=None, seed=0)}
    assert not train & evals


def test_content_is_the_clean_request_verbatim_in_wrapped(threat):
    for templates, item_split in SPLITS:
        for pair in sample(threat, templates, item_split):
            assert pair.clean[-1] == {"role": "user", "content": pair.content}
            assert any(pair.content in m["content"] for m in pair.wrapped), pair.meta
            assert pair.clean != pair.wrapped or pair.prefill, "wrapped is not wrapped"
            assert pair.meta["threat"] == threat.__name__.split(".")[-1]


@pytest.mark.parametrize("name", WITH_BENIGN)
@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_benign_share_as_requested(name, share):
    threat, n = get_threat(name), 40
    pairs = threat.pairs("train", "train", n=n, seed=0, benign_share=share)
    benign = [p for p in pairs if p.meta["kind"] == "benign"]
    assert len(pairs) == n and abs(len(benign) / n - share) <= 1 / n
    # Benign pairs carry benign requests and only those.
    benign_requests = set(items.benign_requests("train"))
    assert all((p.content in benign_requests) == (p.meta["kind"] == "benign") for p in pairs)


@pytest.mark.parametrize("name", WITH_BENIGN)
def test_default_benign_share(name):
    threat = get_threat(name)
    pairs = threat.pairs("train", "train", n=60, seed=0)
    assert abs(sum(p.meta["kind"] == "benign" for p in pairs) / 60 - threat.BENIGN_SHARE) <= 1 / 60


# ----------------------------------------------------------------------------- windows on real tokenization

@pytest.fixture(scope="module")
def encoded(organism_tokenizer):
    cache = {}

    def get(threat):
        if threat not in cache:
            cache[threat] = [(p, encode_pair(organism_tokenizer, p))
                             for templates, item_split in SPLITS for p in sample(threat, templates, item_split)]
        return cache[threat]
    return get


def test_content_window_aligned(threat, encoded, organism_tokenizer):
    for pair, enc in encoded(threat):
        c, w = enc.content
        assert c and len(c) == len(w), pair.meta
        assert [enc.clean_ids[i] for i in c] == [enc.wrapped_ids[i] for i in w]
        assert c == list(range(c[0], c[-1] + 1)) and w == list(range(w[0], w[-1] + 1)), "window has holes"
        # The window is the content itself, minus at most a merged edge token.
        text = organism_tokenizer.decode([enc.clean_ids[i] for i in c])
        assert text in pair.content and len(text) >= 0.75 * len(pair.content), (text, pair.content)


def test_suffix_window_is_longest_common_tail(threat, encoded):
    for pair, enc in encoded(threat):
        (c, w), k = enc.suffix, len(enc.suffix[0])
        assert c == list(range(len(enc.clean_ids) - k, len(enc.clean_ids)))
        assert w == list(range(len(enc.wrapped_ids) - k, len(enc.wrapped_ids)))
        assert [enc.clean_ids[i] for i in c] == [enc.wrapped_ids[i] for i in w]
        assert k == min(len(enc.clean_ids), len(enc.wrapped_ids)) or enc.clean_ids[-k - 1] != enc.wrapped_ids[-k - 1]


def test_signal_where_expected(threat, encoded):
    for pair, enc in encoded(threat):
        if pair.prefill is not None:
            # The documented outcome: clean is a prefix of wrapped, so no window sees a difference.
            assert enc.wrapped_ids[:len(enc.clean_ids)] == enc.clean_ids
            assert enc.suffix == ([], []) and not enc.suffix_signal and not enc.content_signal
        else:
            assert enc.suffix[0] and enc.suffix_signal, pair.meta
    assert (threat.__name__ == "threats.prefill") == all(p.prefill is not None for p, _ in encoded(threat))


def test_content_missing_from_wrapped_names_the_pair(threat, organism_tokenizer):
    pair = sample(threat, "heldout", "eval")[0]
    broken = copy.deepcopy(pair)
    for m in broken.wrapped:
        m["content"] = m["content"].replace(pair.content, "[request removed]")
    with pytest.raises(ContractError) as err:
        encode_pair(organism_tokenizer, broken)
    assert pair.meta["threat"] in str(err.value) and repr(pair.meta["template"]) in str(err.value)


# ----------------------------------------------------------------------------- window helpers on hand-made tokens

VOCAB = {t: i for i, t in enumerate(["<u>", "\n", "What", " What", " is", " 3", "?", "?!", "cue", "W", "hat", "<a>"])}


def ids(*tokens):
    return [VOCAB[t] for t in tokens]


def test_content_window_drops_merged_edge_tokens():
    # clean "<u>\nWhat is 3?<a>" vs wrapped "<u>cue What is 3?!<a>": both edge tokens differ.
    clean = ids("<u>", "\n", "What", " is", " 3", "?", "<a>")
    wrapped = ids("<u>", "cue", " What", " is", " 3", "?!", "<a>")
    assert content_window(clean, [2, 3, 4, 5], wrapped, [2, 3, 4, 5]) == ([3, 4], [3, 4])


def test_content_window_trims_the_longer_span_first():
    clean = ids("<u>", "What", " is", " 3")
    wrapped = ids("<u>", "cue", "W", "hat", " is", " 3")  # "What" split in two after the cue
    assert content_window(clean, [1, 2, 3], wrapped, [2, 3, 4, 5]) == ([2, 3], [4, 5])


def test_content_window_mismatch_inside_is_an_error():
    clean, wrapped = ids("What", " is", " 3"), ids("What", "?", " 3")
    with pytest.raises(ContractError):
        content_window(clean, [0, 1, 2], wrapped, [0, 1, 2])


def test_suffix_len_and_has_signal():
    assert suffix_len([1, 2, 3], [9, 2, 3]) == 2
    assert suffix_len([1, 2], [1, 2]) == 2
    assert suffix_len([1, 2], [3]) == 0 and suffix_len([], [1]) == 0
    # Same tokens at the same positions before and in the window: causal attention sees no difference.
    assert not has_signal([1, 2, 3], [1, 2, 3, 4], [1, 2], [1, 2])
    assert has_signal([1, 2, 3], [9, 1, 2, 3], [1, 2], [2, 3])
    assert has_signal([1, 2, 3], [9, 2, 3], [1, 2], [1, 2])
    assert not has_signal([1], [1], [], [])
