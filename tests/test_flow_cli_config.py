"""`mowtheory flow`'s parser is generated from `FlowConfig`: one option per field with the
field's default, choices from the registries, parsed arguments map back field by field, and
`FlowConfig` refuses what the command refused (before any work)."""
import argparse
import dataclasses

import pytest

from mowtheory import costs
from mowtheory.cli import flow as fcli
from mowtheory.flow import names as problem_names
from mowtheory.flow.config import DEFAULT_REPLICAS, FlowConfig
from mowtheory.flow.simulate import WINDOW_MODES


def _parser():
    top = argparse.ArgumentParser(prog="mowtheory")
    return fcli.register(top.add_subparsers())


def test_every_field_has_one_option_with_its_default():
    actions = {a.dest: a for a in _parser()._actions if a.dest != "help"}
    fields = dataclasses.fields(FlowConfig)
    assert sorted(actions) == sorted(f.name for f in fields)     # no field without an option
    for f in fields:
        a = actions[f.name]
        if f.name == "param":                                    # repeatable: none given
            assert a.default == [] and f.default == ()
        elif isinstance(f.default, bool) and f.name != "controls":
            assert a.nargs == 0 and a.default is f.default, f.name
        else:
            assert a.default == f.default, (f.name, a.default, f.default)


def test_choices_come_from_the_registries():
    actions = {a.dest: a for a in _parser()._actions}
    assert tuple(actions["problem"].choices) == tuple(problem_names())
    assert tuple(actions["cost"].choices) == tuple(costs.names())
    assert tuple(actions["window"].choices) == tuple(WINDOW_MODES)


def test_no_arguments_give_the_dataclass_defaults():
    assert fcli.config_from_args(_parser().parse_args([])) == FlowConfig()


@pytest.mark.parametrize("argv,field,value", [
    (["--n", "6"], "n", 6), (["--etas", "0.02,0.01,0.005"], "etas", (0.02, 0.01, 0.005)),
    (["--param", "beta=0.5", "--param", "gamma=2"], "param", (("beta", 0.5), ("gamma", 2))),
    (["--no-controls"], "controls", False), (["--controls"], "controls", True),
    (["--no-plot"], "no_plot", True), (["--horizon", "0.5"], "horizon", 0.5),
    (["--model", "mlp", "--lam", "0.25"], "lam", 0.25),
    (["--model", "mlp", "--latent-dim", "3"], "latent_dim", 3),
    (["--control-replicas", "64"], "control_replicas", 64),
])
def test_each_option_reaches_its_field(argv, field, value):
    cfg = fcli.config_from_args(_parser().parse_args(argv))
    assert getattr(cfg, field) == value and type(getattr(cfg, field)) is type(value)


def test_replicas_default_depends_on_the_study():
    assert FlowConfig().replicas_or_default() == DEFAULT_REPLICAS["toy"] == 2048
    assert FlowConfig(model="mlp").replicas_or_default() == DEFAULT_REPLICAS["network"] == 256
    assert FlowConfig(replicas=40, model="mlp").replicas_or_default() == 40


def test_params_add_symmetrize():
    cfg = FlowConfig(problem="position-weighted", param=(("a", 1),), symmetrize=True)
    assert cfg.params() == {"a": 1, "symmetrize": True}
    assert FlowConfig(param=(("a", 1),)).params() == {"a": 1}


@pytest.mark.parametrize("kw,words", [
    (dict(threads=0), ["threads", "threads=0"]),
    (dict(bootstrap=5), ["bootstrap", "bootstrap=5", "20"]),
    (dict(control_replicas=8), ["control_replicas", "16"]),
    (dict(control_replicas=64, controls=False), ["--control-replicas", "--no-controls"]),
    (dict(symmetrize=True), ["--symmetrize", "position-weighted"]),
    (dict(limit=10), ["--limit", "--model"]),
    (dict(coupled=True), ["--coupled", "--model"]),
    (dict(model="mlp", window="time"), ["--window", "toy"]),
    (dict(model="mlp", param=(("a", 1),)), ["--param", "toy"]),
    (dict(model="mlp", device="tpu"), ["device", "tpu"]),
    (dict(model="mlp", cost="nope"), ["cost", "nope", "cw"]),
    (dict(problem="nope"), ["problem", "nope", "linear-gaussian"]),
    (dict(window="nope"), ["window", "nope", "steps"]),
    (dict(reduction="nope"), ["reduction", "nope", "sqrt_mean"]),
    (dict(etas=(0.01, -1.0)), ["eta"]),
])
def test_bad_configurations_are_refused_naming_the_option(kw, words):
    with pytest.raises((ValueError, TypeError)) as info:
        FlowConfig(**kw)
    msg = str(info.value)
    assert all(w in msg for w in words), msg
