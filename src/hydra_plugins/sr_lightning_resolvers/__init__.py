"""Registers sr-lightning's ``${sr_...:}`` OmegaConf resolvers when Hydra initialises.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts
(``hydra.core.plugins.Plugins``), for ``@hydra.main`` and for ``initialize_config_dir`` +
``compose`` alike: a notebook composes ``conf/`` without importing ``sr_lightning`` first.
``hydra_plugins`` itself has no ``__init__.py`` (a namespace package shared with other plugins).
"""

from sr_lightning.config.resolvers import register

register()
