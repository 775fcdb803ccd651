"""Where and how torch runs: device choice and seeds."""

from __future__ import annotations

import random

import numpy as np

from pipeline.errors import ModelError


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

    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "E306",
            "device = 'cuda' but no CUDA GPU is visible.",
            hint="Set the device key of the section (for example classifier.device) to auto or cpu.",
        )
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")
