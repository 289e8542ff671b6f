"""One rank of the distributed examples' test: runs examples/train_fsdp_offload.py and examples/train_fsdp_ignored.py
(twice: foreach and fused) in this process, one after the other, each in a process group of its own, so that the
test pays for one launch. ``python _examples_dist.py RENDEZVOUS_DIR`` under tests/_dist_launch.py."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import train_fsdp_ignored  # noqa: E402
import train_fsdp_offload  # noqa: E402

#: name -> (example, its arguments); tests/test_examples.py replays each in one process
RUNS = {
    "offload": (train_fsdp_offload, ["--optimizer", "adabelief", "--lr", "1e-2", "--option", "weight_decay=0.01"]),
    "ignored-foreach": (train_fsdp_ignored, ["--optimizer", "adamw", "--lr", "1e-2", "--option", "foreach=True"]),
    "ignored-fused": (train_fsdp_ignored, ["--optimizer", "adamw", "--lr", "1e-2", "--option", "fused=True"]),
}
STEPS, BATCH, SEED = 3, 16, 5

if __name__ == "__main__":
    for name, (example, arguments) in RUNS.items():
        print(f"== {name}", flush=True)
        example.main(arguments + ["--steps", str(STEPS), "--batch-size", str(BATCH), "--seed", str(SEED),
                                  "--init-method", f"file://{sys.argv[1]}/rendezvous-{name}"])
