"""Commands that work as typed (issue 24, item 4): a checkpoint named by a glob that matches
one file (``ckpt_path``, ``--weights``), one default data root and cache for the config and
every tool, and README's notebook snippet in a fresh interpreter (the ``${sr_...:}`` resolvers
registered through Hydra's plugin discovery, ``hydra_plugins.sr_lightning_resolvers``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    REPO,
    ckpt_step,
    compose_config,
    run_eval_in_process,
    run_train_in_process,
    tiny_args,
)

from sr_lightning.cli.export import main as export
from sr_lightning.cli.upscale import main as upscale
from sr_lightning.config.resolvers import data_root
from sr_lightning.models import EDSR
from sr_lightning.models.checkpoint import find_checkpoint


# ---- one function finds the checkpoint a pattern names ---------------------------------------
def test_a_glob_gives_its_one_file_several_are_listed_none_is_not_found(tmp_path):
    for name in ("best-step0000006-psnr30.100.ckpt", "last.ckpt", "step0000004.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    best = tmp_path / "best-step0000006-psnr30.100.ckpt"
    assert find_checkpoint(tmp_path / "best-*.ckpt") == best
    assert find_checkpoint(str(best)) == best  # a path is a path
    with pytest.raises(ValueError) as several:
        find_checkpoint(f"{tmp_path}/*.ckpt")
    said = str(several.value)
    assert "matches 3 files, not one" in said
    assert all(str(tmp_path / n) in said for n in ("last.ckpt", "step0000004.ckpt"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nothing-\*\.ckpt"):
        find_checkpoint(tmp_path / "nothing-*.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.ckpt"):
        find_checkpoint(tmp_path / "missing.ckpt")
    literal = tmp_path / "run[1]" / "last.ckpt"  # glob characters in a real path
    literal.parent.mkdir()
    literal.write_bytes(b"x")
    assert find_checkpoint(literal) == literal


# ---- ckpt_path and --weights through the real entry points, on a real tiny run --------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sample_cache) -> Path:
    """A 1x8 EDSR x2 trained for 2 epochs of 3 updates on the sample photos: checkpoints/ holds
    best-*.ckpt, last.ckpt and step*.ckpt."""
    run = tmp_path_factory.mktemp("as_typed") / "run"
    run_train_in_process([*tiny_args(sample_cache), "test_after_fit=false"], run)
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    return run


@pytest.mark.slow
def test_eval_py_scores_the_one_checkpoint_a_glob_matches(tiny_run, sample_cache, tmp_path, caplog):
    cache = sample_cache
    best = next((tiny_run / "checkpoints").glob("best-*.ckpt"))
    common = ["data=sample", f"data.cache_dir={cache}", "data.num_workers=0"]
    by_glob = run_eval_in_process(
        [*common, f"ckpt_path={tiny_run}/checkpoints/best-*.ckpt"], tmp_path / "glob"
    )
    by_path = run_eval_in_process([*common, f"ckpt_path={best}"], tmp_path / "path")
    assert by_glob == by_path and by_glob[0]["model"] == "EDSR (1x8) x2"  # the network's
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        run_eval_in_process([*common, f"ckpt_path={tiny_run}/checkpoints/*.ckpt"], tmp_path)
    assert exit_.value.code == 1
    assert "matches 3 files, not one" in caplog.text and str(best) in caplog.text


@pytest.mark.slow
def test_train_resumes_from_a_glob_and_refuses_an_ambiguous_one(tiny_run, sample_cache, tmp_path):
    cache = sample_cache
    more = tmp_path / "more"
    args = [*tiny_args(cache), "test_after_fit=false", "trainer.max_epochs=3"]
    with pytest.raises(ValueError, match="matches 3 files, not one"):
        run_train_in_process([*args, f"ckpt_path={tiny_run}/checkpoints/*.ckpt"], more)
    assert not (more / "checkpoints").exists()  # refused before anything was built
    run_train_in_process([*args, f"ckpt_path={tiny_run}/checkpoints/la*.ckpt"], more)
    assert ckpt_step(more / "checkpoints" / "last.ckpt") == 9  # 6 restored + 3 more
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: no file matches"):
        run_train_in_process([*args, f"ckpt_path={tmp_path}/nothing/best-*.ckpt"], more)


@pytest.mark.slow
def test_upscale_and_export_take_a_glob_for_weights(tiny_run, tmp_path, capsys):
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (20, 16), (120, 60, 30)).save(image)
    pattern = f"{tiny_run}/checkpoints/best-*.ckpt"
    assert upscale([str(image), "--weights", pattern, "--out", str(tmp_path / "up")]) == 0
    assert Image.open(tmp_path / "up" / "in_x2.png").size == (40, 32)
    out = tmp_path / "net.pt"
    assert export(["--weights", pattern, "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    several = f"{tiny_run}/checkpoints/*.ckpt"
    assert upscale([str(image), "--weights", several, "--out", str(tmp_path / "x")]) == 1
    assert "matches 3 files, not one" in capsys.readouterr().err
    assert export(["--weights", several, "--format", "torchscript", "--out", str(out)]) == 1
    assert "matches 3 files, not one" in capsys.readouterr().err


def test_upscale_names_the_pattern_that_matched_nothing(tmp_path, capsys):
    torch.save(EDSR(scale=2, n_resblocks=1, n_feats=8).state_dict(), tmp_path / "a.pt")
    assert upscale(["x.png", "--weights", str(tmp_path / "b*.pt")]) == 1
    assert f"checkpoint not found: no file matches '{tmp_path}/b*.pt'" in capsys.readouterr().err


# ---- one default data root (and cache) for the config and every tool -------------------------
def test_every_tool_defaults_to_the_same_data_root(tmp_path, monkeypatch):
    from sr_lightning.bench.harness import parse_args
    from sr_lightning.cli import download

    monkeypatch.delenv("SR_DATA_ROOT", raising=False)
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    assert data_root() == REPO / "data"
    for kind in ("train", "eval"):
        assert compose_config(kind).data.root == str(REPO / "data")
    assert parse_args([]).data_root == str(REPO / "data")
    fetched = []
    monkeypatch.setattr(download, "fetch_dataset", lambda name, root, **kw: fetched.append(root))
    assert download.main(["benchmark"]) == 0
    monkeypatch.setenv("SR_DATA_ROOT", str(tmp_path))
    assert download.main(["benchmark"]) == 0
    assert fetched == [REPO / "data", tmp_path]
    for kind in ("train", "eval"):
        assert compose_config(kind).data.root == str(tmp_path)
    assert parse_args([]).data_root == str(tmp_path)


def test_a_missing_set_names_the_root_the_variable_and_the_download(tmp_path):
    from sr_lightning.data.datasets import div2k_pairs, eval_dataset

    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        eval_dataset(nowhere, "Set5", 2)
    said = str(e.value)
    assert f"expected images in {nowhere}/benchmark/Set5/HR/" in said
    assert f"sr-download benchmark --root {nowhere}" in said and "$SR_DATA_ROOT" in said
    with pytest.raises(FileNotFoundError) as e:
        div2k_pairs(nowhere, 2, 801, 801)
    assert f"sr-download div2k --root {nowhere}" in str(e.value)
    assert "$SR_DATA_ROOT" in str(e.value)


def test_the_cache_default_is_documented_where_it_is_set():
    from sr_lightning.data import cache

    expected = Path(os.environ.get("SR_LIGHTNING_CACHE", "~/.cache/sr_lightning")).expanduser()
    assert expected == cache.DEFAULT_CACHE_DIR
    conf = (REPO / "conf" / "data" / "div2k.yaml").read_text()
    assert "null = $SR_LIGHTNING_CACHE or ~/.cache/sr_lightning" in conf


# ---- the notebook snippet, in a fresh interpreter ---------------------------------------------
NOTEBOOK = f"""
import sys
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

assert not [m for m in sys.modules if m.startswith("sr_lightning")]
with initialize_config_dir(config_dir={str(REPO / "conf")!r}, version_base="1.3"):
    cfg = compose("train", overrides=["experiment=quickstart"])
model = OmegaConf.to_container(cfg.model, resolve=True)
datamodule, module = instantiate(cfg.data), instantiate(cfg.model)
print(model["net"]["n_resblocks"], model["net"]["res_scale"], cfg.data.root,
      type(module).__name__, type(module.net).__name__, type(datamodule).__name__,
      "hydra_plugins.sr_lightning_resolvers" in sys.modules)
"""


@pytest.mark.slow
def fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    """``python -c CODE`` from ``/``, without $PROJECT_ROOT or $SR_DATA_ROOT; must exit 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "SR_DATA_ROOT")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env={**env, "WANDB_MODE": "disabled"},
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_readme_notebook_snippet_runs_in_a_fresh_interpreter_without_importing_the_package():
    """No ``import sr_lightning`` before ``compose``: Hydra's plugin scan registers the
    resolvers (``${sr_preset:...}`` failed with UnsupportedInterpolationType before)."""
    proc = fresh_interpreter(NOTEBOOK)
    assert proc.stdout.split() == [
        "8",
        "1.0",
        str(REPO / "data"),
        "SRLitModule",
        "EDSR",
        "SRDataModule",
        "True",
    ]


def test_the_resolvers_plugin_is_a_module_of_hydras_namespace_package():
    """``hydra_plugins`` is a namespace package (no ``__init__.py``, shared with Hydra's other
    plugins) and ours is found in it by Hydra's scan."""
    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    import hydra_plugins
    from sr_lightning.config.resolvers import RESOLVERS, register

    assert not (REPO / "src" / "hydra_plugins" / "__init__.py").exists()
    assert str(REPO / "src" / "hydra_plugins") in list(hydra_plugins.__path__)
    try:
        for name in RESOLVERS:
            OmegaConf.clear_resolver(name)
        Plugins.instance()._initialize()  # Hydra's scan, as initialize_config_dir runs it
        assert "hydra_plugins.sr_lightning_resolvers" in sys.modules
        assert [n for n in RESOLVERS if not OmegaConf.has_resolver(n)] == []
    finally:
        register()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "namespaces = true" in pyproject  # hydra_plugins has no __init__.py


@pytest.mark.slow
def test_the_readme_notebook_snippet_runs_as_written():
    """The snippet README shows, copied out of README (only the conf path filled in), in a
    fresh interpreter: it composes, prints the resolved model node and instantiates both."""
    import textwrap

    readme = (REPO / "README.md").read_text()
    start = readme.index("```python", readme.index("A notebook")) + len("```python")
    snippet = textwrap.dedent(readme[start : readme.index("```", start)])
    snippet = snippet.replace("/abs/path/to/sr-lightning/conf", str(REPO / "conf"))
    proc = fresh_interpreter(snippet + "\nprint(type(module).__name__)\n")
    assert "_target_: sr_lightning.training.lit_module.SRLitModule" in proc.stdout
    assert proc.stdout.split()[-1] == "SRLitModule"
