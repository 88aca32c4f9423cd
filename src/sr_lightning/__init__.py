"""sr-lightning: EDSR / MDSR (Lim et al., 2017) as a Lightning + Hydra experiment suite."""

__version__ = "0.1.0"
