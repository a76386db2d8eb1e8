"""Your own trainer: an MLP on scikit-learn's digits, in the fewest lines hpsearch needs.

A Trainer subclass that builds its model in ``__init__``, says which params are live ``knobs``
(rules may change them between epochs), yields each epoch's metrics from ``epochs`` and gives
``final_metrics``. Nothing else is required: params and metrics are checked against the spec on
first use. Searched by ``digits.yaml`` (accuracy vs parameter count, pareto-asha, two rules, a
conditional param).

    python examples/digits.py                        # one trial at the spec's defaults
    hpsearch run examples/digits.yaml --trials 20    # the study
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from hpsearch.trainers import Trainer


class DigitsTrainer(Trainer):
    def __init__(self, params, *, device, seed):
        super().__init__(params, device=device, seed=seed)  # stores params, seeds everything
        features, labels = load_digits(return_X_y=True)
        x = torch.tensor(features / 16.0, dtype=torch.float32)
        y = torch.tensor(labels)
        order = torch.randperm(len(y))
        self.train_x, self.train_y = x[order[:1400]], y[order[:1400]]
        self.val_x, self.val_y = x[order[1400:]], y[order[1400:]]
        width = self.params["width"]
        self.model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
        if self.params["optimizer"] == "sgd":
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=self.params["lr"], momentum=self.params["momentum"],
                weight_decay=self.params["weight_decay"],
            )
        else:
            self.optimizer = torch.optim.Adam(
                self.model.parameters(), lr=self.params["lr"],
                weight_decay=self.params["weight_decay"],
            )
        self.knobs = {"lr": self.params["lr"]}  # live: the "halve lr" rule changes it

    def epochs(self, n):
        for _ in range(n):
            for group in self.optimizer.param_groups:
                group["lr"] = self.knobs["lr"]  # read the knob every epoch
            train_loss = 0.0
            for batch in torch.randperm(len(self.train_y)).split(64):
                loss = nn.functional.cross_entropy(
                    self.model(self.train_x[batch]), self.train_y[batch]
                )
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                train_loss += loss.item() * len(batch) / len(self.train_y)
            yield {"train_loss": train_loss, **self.final_metrics()}  # objectives every epoch

    def final_metrics(self):
        with torch.no_grad():
            logits = self.model(self.val_x)
        return {
            "val_loss": nn.functional.cross_entropy(logits, self.val_y).item(),
            "val_accuracy": (logits.argmax(1) == self.val_y).float().mean().item(),
            "n_params": float(sum(p.numel() for p in self.model.parameters())),
        }


if __name__ == "__main__":
    from pathlib import Path

    import hpsearch

    torch.set_num_threads(1)
    outcome = hpsearch.try_config(str(Path(__file__).with_name("digits.yaml")))
    print(outcome.describe_state(), outcome.final_metrics)
