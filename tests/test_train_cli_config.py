"""`mowtheory train`'s parser is generated from `TrainConfig`: one option per field, with the
field's default and the registry's choices, and parsed arguments map back field by field."""
import argparse
import dataclasses

import pytest

from mowtheory.cli import train as tcli
from mowtheory.train.config import CHOICES, TrainConfig


def _parser():
    top = argparse.ArgumentParser(prog="mowtheory")
    return tcli.register(top.add_subparsers())


def test_every_field_has_one_option_with_its_default_and_choices():
    actions = {a.dest: a for a in _parser()._actions if a.dest != "help"}
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert sorted(actions) == sorted(names)                 # no field without an option
    for f in dataclasses.fields(TrainConfig):
        a = actions[f.name]
        want = None if f.name in tcli.CLI_RESOLVED else f.default
        if isinstance(f.default, bool):                     # a flag: its absence is the default
            assert a.nargs == 0 and a.default is f.default, f.name
        else:
            assert a.default == want, (f.name, a.default, want)
        assert (tuple(a.choices) if a.choices else None) == CHOICES.get(f.name), f.name


def test_no_arguments_give_the_dataclass_defaults():
    args = _parser().parse_args(["--out", "o", "--device", "cpu"])
    assert tcli.config_from_args(args) == TrainConfig(out="o", device="cpu")
    raw = _parser().parse_args([])
    assert raw.out is None and raw.device is None      # resolved: cuda when available
    auto = tcli.config_from_args(raw)
    assert auto.out == "runs/cwae-digits-n64-k1-s0" and auto.device in ("cpu", "cuda")


@pytest.mark.parametrize("argv,field,value", [
    (["--batch-n", "16"], "n", 16), (["--lambda", "0.5"], "lam", 0.5),
    (["--no-fd"], "fd", False), (["--balanced"], "balanced", True),
    (["--stop-after-steps", "3"], "stop_after_steps", 3), (["--eval-limit", "7"], "eval_limit", 7),
    (["--reduction", "sum"], "reduction", "sum"), (["--dist-timeout", "9.5"], "dist_timeout", 9.5),
    (["--method", "gradcache", "--chunk", "4"], "chunk", 4),
])
def test_each_option_reaches_its_field(argv, field, value):
    cfg = tcli.config_from_args(_parser().parse_args([*argv, "--out", "o", "--device", "cpu"]))
    assert getattr(cfg, field) == value and type(getattr(cfg, field)) is type(value)
