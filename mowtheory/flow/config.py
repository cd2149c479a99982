"""Configuration of ``mowtheory flow``: :class:`FlowConfig`, from which the command's parser
is generated (:mod:`mowtheory.cli.flow`). Importing it does not import torch; its
:meth:`~FlowConfig.validate` checks every field against the registries (problems, costs,
window modes, models) before any work.

Options left at None take the problem's value (``Problem.defaults``: n, k, horizon, etas);
``replicas`` None means 2048 for a toy problem and 256 for a real network (``--model``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

#: where ``mowtheory flow`` writes its PNG unless told otherwise
DEFAULT_PLOT = os.path.join("mowtheory_out", "flow.png")
#: replicas per step size when ``replicas`` is None: a toy problem, a real network
DEFAULT_REPLICAS = {"toy": 2048, "network": 256}
#: options of the toy problems only (refused with ``model``)
TOY_ONLY = ("problem", "param", "symmetrize", "window", "tau", "sme", "balanced")
#: options of the real-network study only (refused without ``model``)
NETWORK_ONLY = ("limit", "coupled")


@dataclass
class FlowConfig:
    """The settings of one ``mowtheory flow`` run (see ``mowtheory flow -h``).

    Toy problem: ``problem`` (a name of :data:`mowtheory.flow.PROBLEMS`), ``param``
    (``((key, value), ...)`` problem parameters), ``symmetrize`` (position-weighted only).
    Study: ``n, k, etas, horizon`` (None: the problem's), ``replicas`` (per step size),
    ``control_replicas`` (per planted-fault control; None: the study's rule), ``seed``,
    ``init, refresh, reduction, balanced`` (the MoW step), ``window`` (``"steps"`` is MoW;
    ``"time"`` and ``"leak"`` are planted faults), ``tau`` (staleness of ``"time"``; None:
    T/4), ``record`` (recorded times), ``bootstrap`` (resamplings), ``controls`` (run the
    planted-fault controls), ``sme`` (check the fluctuations).
    Real network (``model`` not None): ``dataset, cost, limit, latent_dim, hidden, lam``
    (weight of F), ``coupled`` (the reference-free check), ``device``.
    Output: ``threads, json, plot, no_plot, quiet, strict`` (exit 1 on INCONCLUSIVE too).
    """
    problem: str = "linear-gaussian"
    param: tuple = ()
    symmetrize: bool = False
    n: Optional[int] = None
    k: Optional[int] = None
    etas: Optional[tuple] = None
    replicas: Optional[int] = None
    control_replicas: Optional[int] = None
    horizon: Optional[float] = None
    seed: int = 0
    init: str = "encode"
    refresh: str = "post"
    reduction: str = "sum"
    balanced: bool = False
    window: str = "steps"
    tau: Optional[float] = None
    record: int = 32
    bootstrap: int = 200
    controls: bool = True
    sme: bool = False
    threads: int = 1
    json: Optional[str] = None
    plot: Optional[str] = DEFAULT_PLOT
    no_plot: bool = False
    quiet: bool = False
    strict: bool = False
    model: Optional[str] = None
    dataset: str = "digits"
    cost: str = "cw"
    limit: Optional[int] = None
    latent_dim: int = 2
    hidden: int = 16
    lam: float = 1.0
    coupled: bool = False
    device: str = "cpu"

    def __post_init__(self):
        self.validate()

    def changed(self, names) -> list:
        """The fields among ``names`` that differ from their defaults."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        return [n for n in names if getattr(self, n) != fields[n].default]

    def validate(self) -> "FlowConfig":
        """Check every field; raises ValueError/TypeError naming the field (its option), the
        value and what is allowed. Returns self. (The sizes -- n, k, replicas, horizon, tau,
        record, seed -- are checked by the study that receives them.)"""
        from .._validate import check_choice, check_int
        from ..mow import REDUCTIONS, REFRESH_POLICIES
        from ..window import INIT_POLICIES
        from .problems import names
        from .rates import MIN_BOOTSTRAP, MIN_REPLICAS
        from .simulate import WINDOW_MODES
        from .study import check_etas

        self.param = tuple((str(k), v) for k, v in self.param)
        self.threads = check_int("threads", self.threads, low=1)
        self.bootstrap = check_int("bootstrap", self.bootstrap, low=MIN_BOOTSTRAP)
        if self.etas is not None:
            self.etas = tuple(check_etas(self.etas))
        check_choice("init (--init)", self.init, INIT_POLICIES)
        check_choice("refresh (--refresh)", self.refresh, REFRESH_POLICIES)
        check_choice("reduction (--reduction)", self.reduction, REDUCTIONS)
        if self.control_replicas is not None:
            if not self.controls:
                raise ValueError(f"--control-replicas {self.control_replicas} applies to the "
                                 f"planted-fault controls, which --no-controls turns off")
            check_int("control_replicas (--control-replicas)", self.control_replicas,
                      low=MIN_REPLICAS)
        if self.model is not None:
            return self._validate_network()
        net = [f"--{k.replace('_', '-')}" for k in self.changed(NETWORK_ONLY)]
        if net:
            raise ValueError(f"{', '.join(net)} apply to the real-network study: add "
                             "--model mlp")
        check_choice("problem (--problem)", self.problem, names())
        check_choice("window (--window)", self.window, WINDOW_MODES)
        if self.symmetrize and self.problem != "position-weighted":
            raise ValueError(f"--symmetrize applies to --problem position-weighted; got "
                             f"--problem {self.problem}")
        return self

    def _validate_network(self) -> "FlowConfig":
        from .._validate import check_choice
        from ..costs import names as cost_names
        from .network import DATASETS, MODELS
        toy = [f"--{k.replace('_', '-')}" for k in self.changed(TOY_ONLY)]
        if toy:
            raise ValueError(f"{', '.join(toy)} apply to toy problems, not to --model "
                             f"{self.model}; remove them")
        check_choice("model (--model)", self.model, MODELS)
        check_choice("dataset (--dataset)", self.dataset, DATASETS)
        check_choice("cost (--cost)", self.cost, cost_names())
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda'; got --device {self.device}")
        import torch
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch.cuda.is_available() is False on this machine")
        return self

    def params(self) -> dict:
        """The toy problem's parameters: ``param`` with ``symmetrize`` added when set."""
        out = dict(self.param)
        if self.symmetrize:
            out["symmetrize"] = True
        return out

    def replicas_or_default(self) -> int:
        """``replicas``, or the default of a toy problem / a real network."""
        if self.replicas is not None:
            return self.replicas
        return DEFAULT_REPLICAS["network" if self.model is not None else "toy"]
