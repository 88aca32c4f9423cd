"""sr-lightning: EDSR / MDSR (Lim et al., 2017) as a Lightning + Hydra experiment suite."""

from sr_lightning.config import resolvers  # noqa: F401  (the ${sr_...:} resolvers of conf/)

__version__ = "0.1.0"
