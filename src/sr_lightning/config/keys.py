"""Fail fast on unknown config keys, naming the key, its config group and a close match.

Hydra's struct mode rejects an unknown key given on the command line, but a key written in a
YAML file (an experiment, a group option, a ``--config-dir`` of one's own) is merged silently
and fails late, or is ignored. :func:`check_keys` runs at the start of ``train.py`` and
``eval.py`` and compares every key with what will read it; nothing here is a hand-written copy
of the configs. The allowed keys of each node are:

- a node with a ``_target_`` (``data``, ``model``, ``trainer``, each ``logger.*`` and
  ``callbacks.*`` entry, ``trainer.plugins[i]``, any nested ``_target_``): the parameters of
  the target's signature (``inspect.signature`` of the class, i.e. of its ``__init__``), plus
  Hydra's ``_target_``/``_partial_``/``_args_``/``_recursive_``/``_convert_``. A class
  whose ``__init__`` takes ``**kwargs`` is taken to pass them to its base: the parameters of
  the ``__init__`` of each class along the MRO are added until one without ``**kwargs``
  closes the set (see :func:`_params`). Where the chain reaches ``object`` (Lightning's
  loggers hand ``**kwargs`` to ``wandb.init`` / ``SummaryWriter``, so the shipped
  ``logger.wandb.mode`` is valid) or the target is a function with ``**kwargs``, any key is
  accepted, and one that is a close match of a named parameter (``projct`` for ``project``)
  only logs a warning;
- ``optim`` (no ``_target_``; the LitModule's ``optim`` argument): the fields of
  :class:`~sr_lightning.training.lit_module.OptimRecipe`;
- the top level: the keys of the primary config file (``train.yaml`` / ``eval.yaml``, found in
  Hydra's config search path) and the packages of the groups in its defaults list (``hydra``
  aside, which Hydra checks itself);
- any other group without ``_target_`` (``paths``): the union of the keys of that group's
  option files (``paths/*.yaml``) in the config search path.

Every unknown key is collected and reported at once in a :class:`ConfigKeyError`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_lightning.config.resolvers import PACKAGE_CHECKOUT
from sr_lightning.training.lit_module import OptimRecipe

log = logging.getLogger(__name__)

REPO_CONF = PACKAGE_CHECKOUT / "conf"
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
NAMED_GROUPS = ("logger", "callbacks")  # named entries, each instantiated by its _target_
KINDS = ("train", "eval")  # the entry points


class ConfigKeyError(ValueError):
    """Unknown keys in the composed config; ``problems`` holds one line per key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} unknown config key(s):\n{lines}")


def _suggest(key: str, allowed: Iterable[str], cutoff: float = 0.6) -> str:
    """``; did you mean 'x'?`` for the closest match of ``key``, else ``.``"""
    match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=cutoff)
    return f"; did you mean {match[0]!r}?" if match else "."


def _unknown(
    path: str, key: str, what: str, where: str, allowed: list[str], more: Iterable[str] = ()
) -> str:
    """One problem line; ``more`` widens the did-you-mean pool (e.g. ``net.n_resblocks``)."""
    suggestion = _suggest(key, [*allowed, *more])
    names = ", ".join(allowed) or "(none)"
    return f"{path}: unknown key {what}{where}{suggestion} allowed: {names}"


def _hydra_node(cfg: DictConfig, name: str) -> Any:
    """``hydra.runtime.<name>`` of the composed config (tests) or of the running app."""
    if "hydra" in cfg:
        return OmegaConf.select(cfg, f"hydra.runtime.{name}", default=None)
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime[name] if HydraConfig.initialized() else None


def _config_dirs(cfg: DictConfig) -> list[Path]:
    """The file folders of Hydra's config search path (main conf/, ``--config-dir``, ...)."""
    sources = _hydra_node(cfg, "config_sources") or []
    dirs = [Path(s.path) for s in sources if s.schema == "file" and Path(s.path).is_dir()]
    return dirs or [REPO_CONF]


def _load(dirs: list[Path], name: str) -> DictConfig | None:
    for d in dirs:
        if (d / f"{name}.yaml").is_file():
            return OmegaConf.load(d / f"{name}.yaml") or OmegaConf.create()
    return None


def _primary_keys(dirs: list[Path], name: str, seen: tuple = ()) -> set[str] | None:
    """Top-level keys of the primary config ``name``: its own keys and its groups' packages."""
    conf = _load(dirs, name)
    if conf is None or name in seen:
        return None
    keys = {k for k in conf if k != "defaults"}
    for item in conf.get("defaults") or []:
        if isinstance(item, str):  # another primary config it extends
            if item != "_self_":
                keys |= _primary_keys(dirs, item, (*seen, name)) or set()
            continue
        for group, option in item.items():
            if option is None:
                continue
            group = group.removeprefix("override ").removeprefix("optional ").strip()
            package = group.split("@", 1)[1] if "@" in group else group.replace("/", ".")
            top = package.split(".")[0]
            if top and top not in ("hydra", "_global_", "_group_"):
                keys.add(top)
    return keys


def _group_keys(dirs: list[Path], group: str) -> list[str]:
    """The union of the keys of every option file of ``group``."""
    keys: dict[str, None] = {}
    for d in dirs:
        for f in sorted((d / group).glob("*.yaml")):
            keys.update(dict.fromkeys(k for k in (OmegaConf.load(f) or {}) if k != "defaults"))
    return list(keys)


def _resolve(target: str) -> tuple[Any, str | None]:
    """The object named by ``target``, or None and why (with a close match where one exists)."""
    from hydra.utils import get_object

    hydra_log = logging.getLogger("hydra.utils")  # it logs the error we report ourselves
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        return get_object(target), None
    except Exception as e:  # any import error is the config's problem here
        module, _, attr = target.rpartition(".")
        try:
            names = dir(importlib.import_module(module))
        except Exception:
            return None, f"cannot import {target!r} ({type(e).__name__}: {e})"
        return None, f"{module!r} has no {attr!r}{_suggest(attr, names)}"
    finally:
        hydra_log.setLevel(level)


def _named(sig: inspect.Signature) -> tuple[list[str], bool]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in sig.parameters.values() if p.kind in kinds and p.name != "self"]
    var_kw = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _params(obj: Any) -> tuple[list[str], bool]:
    """Keyword parameter names of a target, and whether it accepts any other key.

    A class whose ``__init__`` takes ``**kwargs`` is assumed to pass them to its base: the
    ``__init__`` of each class along the MRO adds its parameters, until one without
    ``**kwargs`` closes the set. A chain that reaches ``object`` (Lightning's loggers hand
    ``**kwargs`` to ``wandb.init`` / ``SummaryWriter``) or a function with ``**kwargs`` stays
    open: any key is accepted.
    """
    try:
        names, var_kw = _named(inspect.signature(obj))
    except (TypeError, ValueError):  # no signature (a builtin): accept anything
        return [], True
    if not (var_kw and inspect.isclass(obj)):
        return names, var_kw
    for cls in obj.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None or cls is obj:
            continue
        if cls is object:
            return names, True
        try:
            more, var_kw = _named(inspect.signature(init))
        except (TypeError, ValueError):
            return names, True
        names += [n for n in more if n not in names]
        if not var_kw:
            return names, False
    return names, True


class _Checker:
    def __init__(self, cfg: DictConfig, kind: str):
        from dataclasses import fields

        self.cfg, self.kind, self.problems = cfg, kind, []
        self.optim_keys = [f.name for f in fields(OptimRecipe)]
        self.dirs = _config_dirs(cfg)
        self.choices = dict(_hydra_node(cfg, "choices") or {})
        config_name = OmegaConf.select(cfg, "hydra.job.config_name", default=None)
        if config_name is None and "hydra" not in cfg:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.initialized():
                config_name = HydraConfig.get().job.config_name
        self.config_name = config_name or kind
        self.top = set(cfg)

    def where(self, group: str | None) -> str:
        """`` (config: model=edsr_baseline, experiment=x)``: the files the key may come from."""
        parts = [f"{group}={self.choices[group]}"] if self.choices.get(group) else []
        if group is None:
            parts.append(f"{self.config_name}.yaml")
        parts += [  # groups merged at the top level (@package _global_): experiment, stage, ...
            f"{g}={o}"
            for g, o in self.choices.items()
            if o is not None and g not in self.top and not g.startswith("hydra")
        ]
        return f" (config: {', '.join(parts)})" if parts else ""

    def run(self, tree: dict) -> None:
        top = _primary_keys(self.dirs, self.config_name)
        if top is not None:
            allowed = sorted(top)
            for key in tree:
                if key != "hydra" and key not in top:
                    where = self.where(None)
                    self.problems.append(_unknown(key, key, "at the top level", where, allowed))
        for key, node in tree.items():
            if key == "hydra" or not isinstance(node, dict):
                continue
            if key == "optim":
                where = self.where(key)
                what = "for sr_lightning.training.lit_module.OptimRecipe"
                self.check_keys(key, node, self.optim_keys, what, where)
            elif key in NAMED_GROUPS:
                for name, entry in node.items():
                    if isinstance(entry, dict) and "_target_" in entry:
                        self.target(f"{key}.{name}", entry, key)
                    elif entry is not None:
                        named = [n for n, e in node.items() if isinstance(e, dict) and n != name]
                        self.problems.append(
                            f"{key}.{name}: an entry without _target_{self.where(key)}"
                            f"{_suggest(name, named)} entries: {', '.join(named)}"
                        )
            elif "_target_" in node or key in ("data", "model", "trainer"):
                self.target(key, node, key)
            else:
                allowed = _group_keys(self.dirs, key)
                if allowed:
                    where = self.where(key)
                    self.check_keys(key, node, allowed, f"in group {key!r}", where)

    def check_keys(self, path: str, node: dict, allowed: list[str], what: str, where: str):
        for key in node:
            if key not in allowed:
                self.problems.append(_unknown(f"{path}.{key}", key, what, where, allowed))

    def target(self, path: str, node: dict, group: str) -> None:
        """Check a ``_target_`` node against its signature, then any nested ``_target_``."""
        where = self.where(group)
        target = node.get("_target_")
        if target is None:
            self.problems.append(f"{path}: no _target_{where}")
            return
        if "${" in str(target):
            target = OmegaConf.select(self.cfg, f"{path}._target_")
        obj, error = _resolve(str(target))
        if error:
            self.problems.append(f"{path}._target_{where}: {error}")
            return
        params, var_kw = _params(obj)
        allowed = params
        # a key one level too high (model.n_resblocks for model.net.n_resblocks) gets the
        # nested node's key as its did-you-mean
        deeper = [
            f"{k}.{p}"
            for k, v in node.items()
            if isinstance(v, dict) and isinstance(v.get("_target_"), str)
            for p in _params(_resolve(v["_target_"])[0])[0]
        ]
        for key in node:
            if key in allowed or key in HYDRA_KEYS:
                continue
            if not var_kw:
                self.problems.append(
                    _unknown(f"{path}.{key}", key, f"for {target}", where, allowed, deeper)
                )
            elif (hint := _suggest(key, params, cutoff=0.8)) != ".":
                log.warning("%s.%s: passed to %s as **kwargs%s", path, key, target, hint)
        for key, value in node.items():
            self.nested(f"{path}.{key}", value, group)

    def nested(self, path: str, value: Any, group: str) -> None:
        if isinstance(value, dict):
            if "_target_" in value:
                self.target(path, value, group)
            else:
                for k, v in value.items():
                    self.nested(f"{path}.{k}", v, group)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.nested(f"{path}[{i}]", v, group)


def check_keys(cfg: DictConfig, kind: str = "train") -> None:
    """Raise :class:`ConfigKeyError` naming every unknown key of ``cfg`` (``kind``: the entry
    point, ``"train"`` or ``"eval"``). Values are not resolved, only keys are looked at."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {list(KINDS)}")
    tree = OmegaConf.to_container(cfg, resolve=False)
    checker = _Checker(cfg, kind)
    checker.run(tree)
    if checker.problems:
        raise ConfigKeyError(checker.problems)


def check_command_line(config_name: str, argv: list[str]) -> None:
    """Our did-you-mean for a misspelt key on the command line, before Hydra's own advice.

    Hydra refuses ``model.net.n_resblock=4`` (not in struct) and suggests appending it with
    ``+``. Here the command line is composed first (each sweep reduced to its first value);
    every override Hydra refuses for that reason is added with ``+`` instead, and the result
    goes through :func:`check_keys`, whose error names the key and a close match. Command
    lines that compose, or fail for another reason, are left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, OverrideParseException

    args = argv[1:]
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return  # --config-dir, --cfg, --help ...: Hydra's business
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if a[:1] != "-"])
    except OverrideParseException:
        return
    overrides = [
        o.input_line
        if not o.is_sweep_override()
        else f"{o.input_line.split('=', 1)[0]}={next(iter(o.sweep_string_iterator()))}"
        for o in parsed
    ]
    added = False
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO_CONF), version_base="1.3"):
        for _ in range(len(overrides) + 1):
            try:
                cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
                break
            except ConfigCompositionException as e:  # anything else is Hydra's to report
                match = re.search(r"To append to your config use \+(\S+)", str(e))
                if not match or match[1] not in overrides:
                    return
                overrides[overrides.index(match[1])] = f"+{match[1]}"
                added = True
            except Exception:  # noqa: BLE001  (a command line Hydra itself will refuse)
                return
        else:
            return
    GlobalHydra.instance().clear()
    if added:
        check_keys(cfg, config_name)
