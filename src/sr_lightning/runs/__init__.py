"""The run folder's owner: every file name a run leaves (``folder``), the atomic writers
(``records``), the result and per-image formats (``results``), the metric history
(``history``) and the one reader of a job (``job``)."""
