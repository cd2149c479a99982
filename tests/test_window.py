"""LatentWindow: ring-buffer order, detachment, fixed memory, checkpoints, init policies."""
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis.stateful import run_state_machine_as_test
from hypothesis import strategies as st

from mowtheory import testing as mt
from mowtheory.window import LatentWindow


def _rows(start, count, dim=2, batch=()):
    v = torch.arange(start, start + count, dtype=torch.float64)
    return v.view(*([1] * len(batch)), count, 1).expand(*batch, count, dim).clone()


def test_oldest_leaves_first():
    w = LatentWindow(6, 2, 2, dtype=torch.float64)
    w.fill(_rows(0, 4))
    w.push(_rows(4, 2))
    assert w.ordered()[:, 0].tolist() == [2, 3, 4, 5]
    w.push(_rows(6, 2))
    assert w.ordered()[:, 0].tolist() == [4, 5, 6, 7]


def test_push_returns_overwritten_slots_and_buffer_is_fixed():
    w = LatentWindow(5, 2, 3, dtype=torch.float64)
    w.fill(_rows(0, 3, 3))
    ptr = w.buffer.data_ptr()
    assert w.next_slots().tolist() == [0, 1]
    assert w.push(_rows(3, 2, 3)).tolist() == [0, 1]
    assert w.push(_rows(5, 2, 3)).tolist() == [2, 0]
    assert w.buffer.data_ptr() == ptr
    assert w.ordered()[:, 0].tolist() == [4, 5, 6]


def test_k_larger_than_window_keeps_newest():
    w = LatentWindow(5, 4, 2, dtype=torch.float64)
    w.fill(_rows(0, 1))
    w.push(_rows(1, 4))
    assert w.ordered()[:, 0].tolist() == [4]


def test_empty_window_push_is_noop():
    w = LatentWindow(4, 4, 2)
    w.fill(torch.zeros(0, 2))
    assert w.push(torch.ones(4, 2)).numel() == 0
    assert w.buffer.shape == (0, 2)


def test_stored_detached():
    w = LatentWindow(4, 1, 2, dtype=torch.float64)
    w.fill(torch.zeros(3, 2))
    x = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
    w.push(x * 3.0)
    assert not w.buffer.requires_grad and w.buffer.grad_fn is None
    # the stored row is a copy: changing x later does not change the window
    with torch.no_grad():
        x.add_(1.0)
    assert w.ordered()[-1].tolist() == [3.0, 3.0]


def test_batched_replicas_slide_independently():
    w = LatentWindow(4, 1, 2, batch_shape=(3,), dtype=torch.float64)
    w.fill(_rows(0, 3, 2, (3,)) + torch.arange(3.0, dtype=torch.float64).view(3, 1, 1) * 100)
    w.push(_rows(9, 1, 2, (3,)))
    assert w.ordered()[:, :, 0].tolist() == [[1, 2, 9], [101, 102, 9], [201, 202, 9]]


def test_prior_init_is_seeded():
    a, b = LatentWindow(9, 1, 4), LatentWindow(9, 1, 4)
    a.fill_prior(torch.Generator().manual_seed(3))
    b.fill_prior(torch.Generator().manual_seed(3))
    assert torch.equal(a.buffer, b.buffer) and a.buffer.std() > 0.3


def test_state_dict_roundtrip_and_refusal():
    w = LatentWindow(6, 2, 2, dtype=torch.float64)
    w.fill(_rows(0, 4))
    w.push(_rows(4, 2))
    v = LatentWindow(6, 2, 2, dtype=torch.float64)
    v.load_state_dict(w.state_dict())
    assert torch.equal(v.ordered(), w.ordered())
    v.push(_rows(6, 2)); w.push(_rows(6, 2))
    assert torch.equal(v.ordered(), w.ordered())
    with pytest.raises(ValueError, match=r"another window.*\(6, 1, 2"):
        LatentWindow(6, 1, 2).load_state_dict(w.state_dict())


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=4, k=5, dim=2), r"k must be an integer with 1 <= k <= n = 4; got k=5"),
    (dict(n=4, k=0, dim=2), r"k must be .*got k=0"),
    (dict(n=0, k=1, dim=2), r"n must be .*got n=0"),
    (dict(n=4, k=1, dim=0), r"dim must be .*got dim=0"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentWindow(**kwargs)


def test_bad_rows():
    w = LatentWindow(4, 1, 2)
    with pytest.raises(RuntimeError, match="not initialised"):
        w.push(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"latents must have shape \(3, 2\).*got \(2, 2\)"):
        w.fill(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"latent dimension D=2.*got D=3"):
        w.fill(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="latents must be finite"):
        w.fill(torch.tensor([[0.0, float("nan")]] * 3))
    w.fill(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"shape \(1, 2\).*got \(2, 2\)"):
        w.push(torch.zeros(2, 2))


@pytest.mark.parametrize("n,k", [(5, 2), (4, 1), (3, 3), (4, 3)])
def test_window_machine(n, k):
    run_state_machine_as_test(mt.window_machine(n, k, 2),
                              settings=settings(max_examples=15, stateful_step_count=12, deadline=None))


class _Planted:
    """The registered cost ``name`` with some methods replaced (planted faults)."""

    def __init__(self, name, **methods):
        from mowtheory import costs
        self._cost = costs.get(name)
        self.__dict__.update(methods)

    def __getattr__(self, item):
        return getattr(self._cost, item)

    def __call__(self, z, y=None):
        return self._cost(z, y)


def _run_until_caught(machine, match):
    """The machine finds the planted fault: derandomized, so the same examples every run
    (a random search missed a wrong window order in about 1 run of 20), and not shrunk."""
    with pytest.raises(AssertionError, match=match):
        run_state_machine_as_test(machine, settings=settings(
            max_examples=30, stateful_step_count=8, deadline=None, database=None,
            derandomize=True, phases=(Phase.explicit, Phase.generate)))


def _without_cache_check(machine):
    """The machine with its cache_matches invariant switched off (an undecorated override)."""
    class SplitOnly(machine):
        def cache_matches(self):
            pass
    return SplitOnly


def test_window_machine_catches_a_wrong_order():
    """Planted fault: a window whose push keeps the oldest rows is caught by the machine."""

    class Stuck(LatentWindow):
        def push(self, latents):
            return torch.zeros(0, dtype=torch.long)

    import mowtheory.testing as testing_mod
    original = testing_mod.LatentWindow
    testing_mod.LatentWindow = Stuck
    try:
        _run_until_caught(mt.window_machine(4, 1, 1), "!= model")
    finally:
        testing_mod.LatentWindow = original


@given(st.integers(2, 9), st.data())
def test_ordered_is_roll_of_history(n, data):
    k = data.draw(st.integers(1, n))
    pushes = data.draw(st.integers(0, 6))
    w = LatentWindow(n, k, 1, dtype=torch.float64)
    w.fill(_rows(0, n - k, 1))
    hist = list(range(n - k))
    nxt = n - k
    for _ in range(pushes):
        w.push(_rows(nxt, k, 1))
        hist = (hist + list(range(nxt, nxt + k)))[-(n - k):] if n > k else []
        nxt += k
    assert w.ordered()[:, 0].tolist() == hist


@pytest.mark.parametrize("name", ["cw", "wae", "energy", "gmmn", "pullaway"])
def test_window_machine_with_split_cache(name):
    """The incrementally slid cache of every splittable cost matches a recomputed one."""
    from mowtheory import costs
    run_state_machine_as_test(mt.window_machine(6, 2, 2, cost=costs.get(name)),
                              settings=settings(max_examples=10, stateful_step_count=10, deadline=None))


def test_window_machine_catches_a_stale_cache():
    """Planted fault: a cost whose cache is never updated is caught, both by the cache
    comparison and, without it, by the split value computed with that cache."""
    cost = _Planted("energy", update_cache=lambda cache, H, slots, new: cache)
    _run_until_caught(mt.window_machine(5, 1, 2, cost=cost), "incremental cache")
    _run_until_caught(_without_cache_check(mt.window_machine(5, 1, 2, cost=cost)),
                      r"split value .* with the window's cache != full value"
                      r"|split refused the window's cache")


def test_window_machine_catches_a_split_that_misreads_its_cache():
    """Planted fault: the cache is right but split counts its frozen pairs twice; only the
    split-vs-full invariant can see it."""
    from mowtheory import costs
    energy = costs.get("energy")

    def split(H, Z, y=None, *, cache=None, constants=True):
        if cache is not None:
            cache = cache._replace(pair_sum=2 * cache.pair_sum)
        return energy.split(H, Z, y, cache=cache, constants=constants)
    _run_until_caught(mt.window_machine(5, 2, 2, cost=_Planted("energy", split=split)),
                      r"split value .* with the window's cache != full value")


def test_window_machine_catches_a_cache_that_loses_its_key():
    """Planted fault: right sums, but the key is dropped (split would then ignore the cache and
    recompute the frozen block every step)."""
    from mowtheory import costs
    cw = costs.get("cw")

    def update_cache(cache, H, slots, new):
        return cw.update_cache(cache, H, slots, new)._replace(key=None)
    _run_until_caught(mt.window_machine(5, 1, 2, cost=_Planted("cw", update_cache=update_cache)),
                      "incremental cache key")
