"""The digits MLP as a plain generator function: a trainer too.

``train(params, knobs, *, device, seed)`` yields one dict of metrics per epoch; ``knobs`` starts
as the numeric params and holds the live values (rules change them between epochs); the final
metrics are the last dict yielded. In a spec: ``trainer: digits_function.py:train``.

    python examples/digits_function.py               # one trial at digits.yaml's defaults
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn


def train(params, knobs, *, device, seed):
    features, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(features / 16.0, dtype=torch.float32), torch.tensor(labels)
    order = torch.randperm(len(y))  # hpsearch seeded torch with `seed`
    train_x, train_y = x[order[:1400]], y[order[:1400]]
    val_x, val_y = x[order[1400:]], y[order[1400:]]
    model = nn.Sequential(nn.Linear(64, params["width"]), nn.ReLU(), nn.Linear(params["width"], 10))
    optimizer = torch.optim.Adam(model.parameters(), weight_decay=params["weight_decay"])
    while True:
        for group in optimizer.param_groups:
            group["lr"] = knobs["lr"]
        for batch in torch.randperm(len(train_y)).split(64):
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = model(val_x)
        yield {
            "train_loss": loss.item(),
            "val_loss": nn.functional.cross_entropy(logits, val_y).item(),
            "val_accuracy": (logits.argmax(1) == val_y).float().mean().item(),
            "n_params": float(sum(p.numel() for p in model.parameters())),
        }


if __name__ == "__main__":
    from pathlib import Path

    import yaml

    import hpsearch
    from hpsearch.search_spaces import spec_from_dict

    torch.set_num_threads(1)
    data = yaml.safe_load(Path(__file__).with_name("digits.yaml").read_text())
    data["trainer"] = f"{__file__}:train"
    data["space"]["optimizer"] = {"type": "categorical", "choices": ["adam"]}
    del data["space"]["momentum"]
    outcome = hpsearch.try_config(spec_from_dict(data, "digits_function"))
    print(outcome.describe_state(), outcome.final_metrics)
