"""A toy trainer whose worker process dies mid-trial (imported as crashy_trainer:CrashyTrainer).

At epoch ``die_at_epoch`` the process exits at once (``os._exit``, no clean-up, like a segfault
or the OOM killer) unless the file ``die_marker`` exists; it creates the file first, so only
the first process dies. With no marker every process dies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from toy_trainer import ToyTrainer


class CrashyTrainer(ToyTrainer):
    name = "crashy"
    param_defaults: ClassVar[Mapping[str, Any]] = {
        **ToyTrainer.param_defaults,
        "die_at_epoch": 0,
        "die_marker": "",
    }

    def _run_epoch(self, epoch: int, total_epochs: int) -> dict[str, float]:
        if epoch == self.params["die_at_epoch"]:
            marker = str(self.params["die_marker"])
            if not marker or not Path(marker).exists():
                if marker:
                    Path(marker).touch()
                os._exit(3)
        return super()._run_epoch(epoch, total_epochs)
