"""Training and the evaluation engine: the LightningModule (``lit_module``), its compile wrapper,
the callbacks (one concern a module), loggers that never stop a run, the console, the pictures
of a run, FLOPs and the run's own summary."""
