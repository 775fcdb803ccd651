"""Run stage train_topic of a tiny project, alone or as one rank of torchrun (the DDP tests start this file).

    python tests/unit/ddp_worker.py PROJECT [--resume] [OVERRIDE ...]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/unit/ddp_worker.py PROJECT ...

Only train_topic is in the stage table, so the tiny project's fake tokens and vectors need no upstream stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str]) -> None:
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.distributed import train_task
    from pipeline.workflow.runner import Runner
    from pipeline.workflow.stages import build_stages

    torch.set_num_threads(1)
    project, flags = Path(argv[0]), argv[1:]
    overrides = [flag for flag in flags if flag != "--resume"]
    config = load_config(project, overrides)
    runner = Runner(project, config, stages=[s for s in build_stages(config) if s.name == "train_topic"])
    train_task(runner, "topic", resume="--resume" in flags)


if __name__ == "__main__":
    main(sys.argv[1:])
