"""Recipes: presets, the preset < spec < YAML < command line merge, checks, resume overrides."""
from __future__ import annotations

import subprocess
import sys

import pytest

import netdsl
from netdsl.training.config import PRESETS, Config, ConfigError as RecipeError, read_yaml, resolve, resolve_resume
from conftest import ROOT


def test_paper_preset_is_the_paper():
    c = PRESETS["paper"]
    assert (c.momentum, c.weight_decay, c.batch_size, c.lr, c.epochs) == (0.9, 5e-4, 128, 0.01, 90)
    assert (c.schedule, c.lr_gamma, c.lr_drops) == ("plateau", 0.1, 3)
    # normalize: the paper's 0..255 minus the mean for a net with the paper's small init (issue 12:
    # the same inputs made a plain Kaiming-init spec sit at chance); `auto` decides from the spec
    assert (c.crop, c.flip, c.lighting, c.normalize) == ("paper", True, 0.1, "auto")
    from netdsl.training.loading import resolve_normalize
    assert resolve_normalize(c.normalize, netdsl.load(ROOT / "specs/alexnet.net").graph) == "mean"
    assert resolve_normalize(c.normalize, netdsl.load(ROOT / "specs/alexnet-torchvision.net").graph) == "mean_std"
    assert c.resize_for((224, 224)) == 256


def test_torchvision_preset():
    c = PRESETS["torchvision"]
    assert (c.batch_size, c.lr, c.weight_decay, c.schedule, c.lr_step) == (256, 0.01, 1e-4, "step", 30)
    assert (c.crop, c.lighting, c.normalize) == ("random_resized", 0.0, "mean_std")


def test_layers_override_in_order(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochs: 5\nlr: 0.02\nbatch-size: 32\n")
    r = resolve({"recipe": "torchvision", "epochs": 7, "lighting": 0.2}, yaml_file, {"lr": 0.5})
    c = r.config
    assert (c.recipe, c.epochs, c.lr, c.batch_size, c.lighting, c.weight_decay) == \
        ("torchvision", 5, 0.5, 32, 0.2, 1e-4)
    assert r.origin["lighting"] == "the spec's train block"
    assert r.origin["epochs"] == str(yaml_file) and r.origin["lr"] == "the command line"
    assert r.origin["weight_decay"] == "recipe torchvision"


def test_recipe_key_is_looked_up_in_the_same_order():
    assert resolve({"recipe": "torchvision"}, None, {"recipe": "paper"}).config.weight_decay == 5e-4


def test_spec_train_block_reaches_the_config():
    net = netdsl.load("net t\ninput d: 1x8x8\nfc: fc(2)\ntrain { recipe = torchvision; epochs = 3; lr = 1e-3; flip = false }\n")
    c = resolve(net.graph.training).config
    assert (c.recipe, c.epochs, c.lr, c.flip) == ("torchvision", 3, 1e-3, False)


@pytest.mark.parametrize("settings,message", [
    ({"epoch": 3}, "unknown training setting 'epoch'; did you mean 'epochs'?"),
    ({"lr": "fast"}, "lr = 'fast': expected a number"),
    ({"epochs": 2.5}, "expected a whole number"),
    ({"schedule": "cos"}, "expected one of plateau, step, cosine, constant"),
    ({"flip": 1}, "expected true or false"),
    ({"recipe": "caffe"}, "expected one of paper, torchvision"),
    ({"epochs": 0}, "epochs = 0: must be at least 1"),
    ({"momentum": 1.5}, "momentum = 1.5: must be in [0, 1)"),
])
def test_bad_settings_are_refused_clearly(settings, message):
    with pytest.raises(RecipeError) as err:
        resolve(settings)
    assert message in str(err.value)


def test_command_line_strings_are_converted():
    c = resolve(None, None, {"epochs": "4", "lr": "1e-3", "flip": "false", "data": "/x"}).config
    assert (c.epochs, c.lr, c.flip, c.data) == (4, 1e-3, False, "/x")


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(RecipeError, match="expected a mapping"):
        read_yaml(bad)
    with pytest.raises(RecipeError, match="no-such.yaml"):
        read_yaml(tmp_path / "no-such.yaml")
    nested = tmp_path / "saved.yaml"
    nested.write_text("train:\n  epochs: 2\norigin:\n  epochs: x\n")
    assert read_yaml(nested) == {"epochs": 2}  # a run's config.yaml can be reused


def test_resume_overrides_win_with_a_warning():
    saved = Config(epochs=10, lr=0.05).to_dict()
    r = resolve_resume(saved, [("the command line", {"epochs": 20, "lr": 0.05, "seed": 0})])
    assert r.config.epochs == 20 and r.config.lr == 0.05
    assert r.warnings == ["epochs: 20 from the command line replaces 10 saved in the run"]
    assert r.origin["epochs"] == "the command line" and r.origin["momentum"] == "the saved run"


def test_recipes_plots_and_the_cli_do_not_import_torch():
    code = ("import sys, netdsl.training.config, netdsl.training.plot; from cli.main import main; from click.testing import CliRunner; "
            "CliRunner().invoke(main, ['train', '--help']); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
