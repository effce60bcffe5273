"""Six threat settings, each a generator of (clean, wrapped) pairs; see threats/common.py.

Every module has TEMPLATES = {"train": [...], "heldout": [...]}, pairs(templates, items, n,
seed[, benign_share]) -> list[Pair], score(response, meta) -> (label, bad) and
scripted_response(meta, wrapped) -> the organism's demonstration.
"""
from importlib import import_module

THREATS = ("sycophancy", "jailbreak", "persona", "frustration", "prefill", "conditional")


def get_threat(name: str):
    if name not in THREATS:
        raise ValueError(f"unknown threat {name!r}; choose from {', '.join(THREATS)}")
    return import_module(f"threats.{name}")
