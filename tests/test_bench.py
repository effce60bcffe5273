"""bench.py runs end to end (tiny budget) and prints every row; its numbers are for idle machines."""
import re

from conftest import run_script


def test_bench_prints_every_method_and_variant():
    result = run_script("bench.py", "--batch-size", "4", "--batches", "1", "--repeats", "1", "--length", "64",
                        "--memory-batch-size", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    for row in ("bct", "act", "mlpct", "attct", "eager_floor", "attct_naive"):
        assert re.search(rf"^\| {row} \|( [\d.]+ \|)+ [\d.]+x \|$", result.stdout, re.M), row
