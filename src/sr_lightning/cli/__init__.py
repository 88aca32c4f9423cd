"""The entry points users type: ``train.py`` / ``eval.py`` (their bodies), ``sr-upscale``,
``sr-export``, ``sr-compare``, ``sr-report``, ``sr-download``, ``sr-bench``."""
