"""Where and how torch runs: device choice and seeds."""

from __future__ import annotations

import random

import numpy as np

def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_device(preference: str = "auto"):
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    from pipeline.errors import PipelineError

    if preference == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device = 'cuda' but no CUDA GPU is visible.", hint="Use --set <section>.device=auto or cpu.")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


