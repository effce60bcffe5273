"""Shared fixtures: the repository on sys.path, the organism's tokenizer and model (loaded once),
and a helper that runs a repository script the way a user would."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `pytest` from anywhere, without installing the repo as a package


def script_env(**extra) -> dict:
    """The environment for running a script: offline, as nothing here may wait on the network."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_script(*args, timeout=300, **env) -> subprocess.CompletedProcess:
    """`python <args>` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=script_env(**env), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def organism_tokenizer():
    from transformers import AutoTokenizer

    from eval import ORGANISM
    return AutoTokenizer.from_pretrained(ORGANISM)


@pytest.fixture(scope="session")
def organism_model():
    """(model, tokenizer) in eval mode, as eval.load_model returns them. Never train this shared copy."""
    from eval import ORGANISM, load_model
    return load_model(ORGANISM)
