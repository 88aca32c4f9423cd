"""The benchmark harness (``sr-bench``, ``bench/gpu.sh``): the training step (plain vs ours),
inference ms/MP, the data loader's patches/s, and the table written to BENCHMARKS.md."""
