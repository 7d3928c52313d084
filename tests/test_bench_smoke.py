"""The benchmarks' smoke modes still run: the same code paths as a real run, at a tiny width on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Not the service's behaviour, and most of a minute of training runs: with the slow tests (TEST_ALL=1).
pytestmark = pytest.mark.slow

METHODS = {"peft-lora", "peft-ada", "ours-step", "ours-train"}
TINY_SHAPES = {"2x64", "4x32"}


def test_gpu_throughput_tiny_measures_every_method_shape_layout_and_compile_setting(tmp_path):
    out = tmp_path / "gpu_throughput.jsonl"
    run = subprocess.run([sys.executable, "bench/gpu_throughput.py", "--tiny", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    meta, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert meta["kind"] == "meta" and meta["tiny"]

    assert [r["error"] for r in rows if "error" in r] == []
    measured = [(r["method"], r["shape"], r["layout"], r["compiled"]) for r in rows]
    assert sorted(measured) == sorted({(m, s, layout, c) for m in METHODS for s in TINY_SHAPES
                                       for layout in ("padded", "packed") for c in (False, True)})
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0, r
        assert 0 < r["real_tokens"] < r["padded_tokens"], r  # padding is not counted
        assert r["compile"] == "off" if not r["compiled"] else r["compile"].startswith(("layer.compile", "TrainArgs"))
    by = {(r["method"], r["shape"], r["layout"], r["compiled"]): r for r in rows}
    for (method, shape, layout, compiled), r in by.items():
        if layout == "packed":  # the same number of rows holds more real tokens when packed
            assert r["real_tokens"] > by[(method, shape, "padded", compiled)]["real_tokens"]
    shares = [r for r in rows if r["method"] == "ours-step"]
    assert all(0 < r["allocator_share"] < 1 and 0 < r["penalty_share"] < 1 for r in shares)
    assert "| shape | rows | compile | method | tokens/s | vs peft-lora |" in run.stdout
