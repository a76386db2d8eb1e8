"""A spec dict for the toy trainer, shared by the tests."""

from __future__ import annotations

from typing import Any


def toy_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "toy",
        "trainer": "toy_trainer:ToyTrainer",
        "epochs": 4,
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.3},
            "y": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.7},
        },
        "objectives": [
            {"metric": "loss", "direction": "minimize"},
            {"metric": "quality", "band": [0.9, 0.95]},
        ],
        "constraints": [{"metric": "loss", "op": "<=", "value": 0.2}],
        "sampler": {"name": "random", "seed": 1},
    }
    spec.update(overrides)
    return spec
