"""A callback that slows training down so a test can kill it mid-run (tests only)."""

import time

import lightning as L


class SleepEveryStep(L.Callback):
    def __init__(self, seconds: float = 0.1):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
