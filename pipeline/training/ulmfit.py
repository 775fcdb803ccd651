"""ULMFiT's classifier fine-tuning (Howard & Ruder 2018, section 3.3) for the BiLSTM + attention classifier.

Three pieces, each a small pure function or object, used by ``pipeline.training.classifier``:

* **layer groups**, top to bottom: the attention and output layers (new, random), the recurrent layers (from the
  language models), the embedding (from the vectors and the LMs);
* **gradual unfreezing**: epoch 1 trains the top group only, each later epoch one more group down. Frozen groups
  get no gradient at all (``requires_grad`` off), so they neither move nor feed Adam's moments;
* **discriminative learning rates**: group ``d`` (0 = top) learns at ``learning_rate / lr_decay**d``;
* **slanted triangular learning rates**: over all the steps of ``epochs`` epochs, a linear warm-up over the first
  ``cut_frac`` of them to the full rate, then a linear decay to ``1 / ratio`` of it.

The plan is a function of (epoch, step) alone, so a run resumed after epoch ``e`` sets exactly the rates and the
frozen groups an uninterrupted run has there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CUT_FRAC = 0.1  # ULMFiT's defaults
RATIO = 32.0


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The classifier's parameters in groups, top to bottom: [attention + output], [recurrent], [embedding]."""
    head = [*model.attention.parameters(), *model.output.parameters()]
    return [head, list(model.rnn.parameters()), [model.embedding.weight]]


def slanted_triangular(step: int, total: int, *, cut_frac: float = CUT_FRAC, ratio: float = RATIO) -> float:
    """The share of the full learning rate at ``step`` (0-based) of ``total``: (1 + p (ratio - 1)) / ratio."""
    cut = max(1, int(total * cut_frac))
    if step < cut:
        p = step / cut
    else:
        p = max(0.0, 1.0 - (step - cut) / max(1.0, cut * (1.0 / cut_frac - 1.0)))
    return (1.0 + p * (ratio - 1.0)) / ratio


@dataclass(frozen=True)
class RatePlan:
    """What each optimizer group learns at each epoch and step.

    ``base_rates[g]``: group g's rate before the schedule; ``unfreeze_epoch[g]``: the first epoch (1-based) in which
    group g trains (``requires_grad``; None = the group's own setting, never toggled); ``zero_until[g]``: epochs in
    which group g's rate is 0 while it still gets gradients (the simple form for init = pretrained).
    """

    base_rates: tuple[float, ...]
    unfreeze_epoch: tuple[int | None, ...]
    zero_until: tuple[int, ...]
    schedule: str = "constant"
    epochs: int = 1

    def rate(self, group: int, *, epoch: int, step: int, steps_per_epoch: int) -> float:
        if epoch <= self.zero_until[group]:
            return 0.0
        if self.schedule != "slanted_triangular":
            return self.base_rates[group]
        total = self.epochs * steps_per_epoch
        return self.base_rates[group] * slanted_triangular((epoch - 1) * steps_per_epoch + step, total)

    def trainable(self, group: int, epoch: int) -> bool | None:
        first = self.unfreeze_epoch[group]
        return None if first is None else epoch >= first

    def start_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Freeze or unfreeze each group's parameters for ``epoch``."""
        for index, group in enumerate(optimizer.param_groups):
            trainable = self.trainable(index, epoch)
            if trainable is not None:
                for parameter in group["params"]:
                    parameter.requires_grad_(trainable)

    def before_step(self, optimizer: torch.optim.Optimizer, *, epoch: int, step: int, steps_per_epoch: int) -> None:
        for index, group in enumerate(optimizer.param_groups):
            group["lr"] = self.rate(index, epoch=epoch, step=step, steps_per_epoch=steps_per_epoch)


def param_groups_and_plan(model: nn.Module, section: dict) -> tuple[list[dict], RatePlan]:
    """The optimizer's parameter groups for ``section`` and the plan that drives their rates.

    * init = scratch: one group at ``learning_rate``;
    * init = pretrained, unfreezing = simple: [everything else], [the LSTM's layer 0 from the LMs], the LSTM's rate 0
      for ``pretrained_freeze_epochs`` epochs, then ``learning_rate * pretrained_lr_factor``;
    * init = pretrained, unfreezing = gradual: one group per layer group (top first) at ``learning_rate /
      lr_decay**depth``, the group at depth d trainable from epoch d + 1 (a group frozen by its own setting, such as
      an embedding with freeze_embeddings, stays frozen).
    """
    lr, schedule, epochs = section["learning_rate"], section.get("schedule", "constant"), section["epochs"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    if section.get("init") != "pretrained":
        return [{"params": trainable}], RatePlan((lr,), (None,), (0,), schedule, epochs)
    if section.get("unfreezing", "simple") == "gradual":
        groups = [[p for p in group if p.requires_grad] for group in layer_groups(model)]
        groups = [group for group in groups if group]
        rates = tuple(lr / section["lr_decay"] ** depth for depth in range(len(groups)))
        plan = RatePlan(rates, tuple(depth + 1 for depth in range(len(groups))), (0,) * len(groups), schedule, epochs)
        return [{"params": group} for group in groups], plan
    copied = [p for name, p in model.rnn.named_parameters() if name.endswith(("_l0", "_l0_reverse"))]
    ids = {id(p) for p in copied}
    rest = [p for p in trainable if id(p) not in ids]
    plan = RatePlan((lr, lr * section["pretrained_lr_factor"]), (None, None), (0, section["pretrained_freeze_epochs"]), schedule, epochs)
    return [{"params": rest}, {"params": copied}], plan
