"""Mixture-of-experts blocks (models/nn/experts.py): slot bounds, virtual caps, the batch budget,
gradients to the importance predictor, collapse detection, and the fusion plug-in point."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_importing_experts_does_not_import_torch():
    code = ("import sys, models.nn.experts as x; assert 'anyexperts' in x.ffn_names(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


torch = pytest.importorskip("torch")
from models.nn import experts as X  # noqa: E402
from models.nn import fusion  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine
    yield
    torch.set_num_threads(old)


CONFIGS = [
    X.ExpertsConfig(),
    X.ExpertsConfig(n_experts=6, k_min=2, k_max=6, rho_max=0.34, budget=3.0, virtual=("zero", "copy", "const")),
    X.ExpertsConfig(n_experts=6, k_min=1, k_max=8, rho_max=0.5, budget=5.5, virtual=("zero", "copy", "const")),
    X.ExpertsConfig(n_experts=3, k_min=1, k_max=3, rho_max=0.0, budget=1.7, virtual=()),
    X.ExpertsConfig(k_min=2, k_max=2, budget=2.0, rho_max=0.5, virtual=("zero",)),
    X.ExpertsConfig(budget=10.0),  # more budget than anyone can use: every token gets K_max
]


def _spread_importance(m, gain=6.0):
    """Make the (untrained) importance predictor disagree strongly between tokens."""
    with torch.no_grad():
        m.importance[-1].weight.mul_(gain)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"K{c.k_min}-{c.k_max}_rho{c.rho_max}_B{c.budget}")
def test_slots_virtual_cap_and_budget_hold_on_random_inputs(cfg):
    gen = torch.Generator().manual_seed(1)
    for trial in range(12):
        torch.manual_seed(trial)
        m = X.build_ffn(cfg, 16, 32)
        _spread_importance(m, gain=float(1 + 3 * trial))
        if trial % 3 == 2:
            m.train()
        n = int(torch.randint(1, 300, (1,), generator=gen))
        shape = (n, 16) if trial % 2 else (1 + n // 7, 7, 16)
        x = torch.randn(shape, generator=gen) * float(torch.rand(1, generator=gen) * 5 + 0.1)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        st = m.last_stats
        total, real = st["total_slots"].long(), st["real_slots"].long()
        assert total.shape == x.shape[:-1] and real.shape == x.shape[:-1]
        virtual = total - real
        tokens = total.numel()
        assert int(total.min()) >= cfg.k_min and int(total.max()) <= cfg.k_max
        assert int(real.min()) >= 1 and int(real.max()) <= cfg.n_experts
        caps = torch.tensor([cfg.virtual_cap(s) for s in range(cfg.k_max + 1)])
        assert bool((virtual <= caps[total]).all()), "a token exceeded its virtual share"
        assert bool((virtual.float() <= cfg.rho_max * total.float() + 1e-9).all())
        assert int(total.sum()) <= math.floor(cfg.budget * tokens + 1e-9), "batch went over its slot budget"
        if cfg.budget >= cfg.k_max:  # the budget never binds: each token gets its rounded wish
            span = cfg.k_max - cfg.k_min
            wish = cfg.k_min + torch.floor(st["importance"] * span + 0.5).clamp(max=span).long()
            assert torch.equal(total, wish)
        # the stats agree with the slot tensors
        assert st["real_per_token"] == pytest.approx(real.float().mean().item(), abs=1e-5)
        assert st["virtual_share"] == pytest.approx(virtual.sum().item() / total.sum().item(), abs=1e-5)
        assert float(st["load"].sum()) == pytest.approx(1.0, abs=1e-5)


def test_allocation_follows_importance_and_spends_the_budget():
    cfg = X.ExpertsConfig()
    m = X.build_ffn(cfg, 8, 16)
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 100, 1001):
        w = torch.rand(n, generator=gen)
        s = m.allocate(w)
        order = torch.argsort(w)
        assert bool((s[order].diff() >= 0).all()), "a more important token got fewer slots"
        assert int(s.sum()) <= math.floor(cfg.budget * n)
        hungry = m.allocate(torch.full((n,), 0.99))  # everyone wishes K_max: the budget binds exactly
        assert int(hungry.sum()) == math.floor(cfg.budget * n) or int(hungry.sum()) == cfg.k_max * n
    modest = m.allocate(torch.full((50,), 0.01))  # nobody wishes more than K_min: budget left unused
    assert bool((modest == cfg.k_min).all())


def test_route_fills_slots_with_the_best_feasible_candidates():
    """Brute force: no other set of s candidates within the virtual cap has more router mass."""
    cfg = X.ExpertsConfig(n_experts=4, k_min=1, k_max=5, rho_max=0.5, budget=3.0, virtual=("zero", "copy"))
    m = X.build_ffn(cfg, 8, 16)
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(300, 6, generator=gen) * 2, dim=-1)
    slots = torch.randint(1, 6, (300,), generator=gen)
    real, virt = m.route(probs, slots)
    assert bool((real.sum(1) + virt.sum(1) == slots).all())
    for t in range(0, 300, 7):
        s = int(slots[t])
        cap = cfg.virtual_cap(s)
        best = max(sum(float(probs[t, i]) for i in c) for c in itertools.combinations(range(6), s)
                   if sum(i >= 4 for i in c) <= cap)
        got = float((probs[t, :4] * real[t]).sum() + (probs[t, 4:] * virt[t]).sum())
        assert got == pytest.approx(best, abs=1e-6)
        assert int(virt[t].sum()) <= cap


def test_gradients_reach_the_importance_predictor_router_and_experts():
    torch.manual_seed(0)
    m = X.build_ffn(X.ExpertsConfig(), 16, 32)
    m.train()
    x = torch.randn(4, 9, 16)
    (m(x).sum() + m.aux_loss).backward()
    for name, mod in (("importance", m.importance), ("router", m.router)):
        g = [p.grad for p in mod.parameters()]
        assert all(gr is not None for gr in g), name
        assert sum(float(gr.abs().sum()) for gr in g) > 0, f"no gradient reached the {name}"
    used = [e for e in m.experts if e[0].weight.grad is not None and float(e[0].weight.grad.abs().sum()) > 0]
    assert used, "no expert received a gradient"


def test_the_three_kinds_share_the_interface_and_eval_is_deterministic():
    torch.manual_seed(0)
    for kind in X.KINDS:
        m = X.make_ffn_factory(X.ExpertsConfig(kind=kind, router_noise=0.5))(16, 32)
        for shape in ((3, 5, 16), (11, 16), (2, 3, 4, 16)):
            x = torch.randn(shape)
            m.train()
            y = m(x)
            assert y.shape == x.shape
            assert m.last_stats["real_slots"].shape == x.shape[:-1]
            if kind != "dense":
                assert torch.is_tensor(m.aux_loss) and m.aux_loss.dim() == 0
            m.eval()
            with torch.no_grad():
                a, b = m(x), m(x)
            assert torch.equal(a, b), f"{kind} is not deterministic in eval()"
    # router noise really is training-only: train-mode outputs differ run to run
    m = X.build_ffn(X.ExpertsConfig(kind="topk", router_noise=2.0), 16, 32)
    x = torch.randn(64, 16)
    assert not torch.equal(m(x), m(x))


@pytest.mark.parametrize("kind", ["topk", "dynamic"])
@pytest.mark.parametrize("skew", [0.0, 4.0], ids=["balanced", "one-expert-heavy"])
def test_batched_and_looped_dispatch_compute_the_same_thing(kind, skew):
    """The batched path (all experts in two bmm's) and the loop over experts give the same
    output and the same gradients, also when one expert takes most tokens (padding)."""
    torch.manual_seed(1)
    m = X.build_ffn(X.ExpertsConfig(kind=kind), 16, 32)
    if skew:
        _collapsed_router(m, bias=skew)
    x = torch.randn(5, 40, 16)
    runs = []
    for path in (m._dispatch_batched, m._dispatch_loop):
        m._dispatch = path  # instance attribute: this forward takes that path
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        (y.pow(2).sum() + m.aux_loss).backward()
        runs.append((y.detach(), xi.grad, [p.grad.clone() if p.grad is not None else None
                                            for p in m.parameters()]))
    (ya, ga, pa), (yb, gb, pb) = runs
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    for a, b in zip(pa, pb):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if skew:
        assert m.last_stats["max_share"] > 0.5  # the padding case really was exercised


def test_dispatch_takes_the_batched_path_for_small_batches_only(monkeypatch):
    m = X.build_ffn(X.ExpertsConfig(kind="topk"), 8, 16)
    took = []
    monkeypatch.setattr(m, "_dispatch_batched", lambda *a: took.append("batched") or a[0] * 0)
    monkeypatch.setattr(m, "_dispatch_loop", lambda *a: took.append("loop") or a[0] * 0)
    m(torch.randn(X.BATCHED_PAIRS // 2, 8))  # k=2: exactly BATCHED_PAIRS pairs
    m(torch.randn(X.BATCHED_PAIRS // 2 + 1, 8))
    assert took == ["batched", "loop"]


def test_empty_input_gives_empty_output():
    for kind in X.KINDS:
        m = X.build_ffn(X.ExpertsConfig(kind=kind), 8, 16)
        y = m(torch.zeros(0, 8))
        assert y.shape == (0, 8)


def test_bad_configs_are_refused_with_readable_messages():
    with pytest.raises(X.ExpertsConfigError, match=r"budget of 0\.5 slots per token is below K_min=1"):
        X.ExpertsConfig(budget=0.5)
    with pytest.raises(X.ExpertsConfigError, match=r"below K_min=3"):
        X.ExpertsConfig(k_min=3, k_max=4, budget=2.5)
    with pytest.raises(X.ExpertsConfigError, match=r"rho_max=1 is outside \[0, 1\)"):
        X.ExpertsConfig(rho_max=1.0)
    with pytest.raises(X.ExpertsConfigError, match=r"K_max=12 slots cannot be filled.*lower k_max to 10"):
        X.ExpertsConfig(k_max=12, rho_max=0.5, budget=2.0)  # 8 real + 2 virtual
    with pytest.raises(X.ExpertsConfigError, match=r"K_max=3 slots cannot be filled.*lower k_max to 2"):
        X.ExpertsConfig(n_experts=2, k_max=3)
    with pytest.raises(X.ExpertsConfigError, match=r"could never be used"):
        X.ExpertsConfig(rho_max=0.2)  # floor(0.2 × 4) = 0
    with pytest.raises(X.ExpertsConfigError, match=r"unknown expert block kind"):
        X.ExpertsConfig(kind="sparse")
    with pytest.raises(X.ExpertsConfigError, match=r"virtual experts"):
        X.ExpertsConfig(virtual=("zero", "nope"))
    with pytest.raises(X.ExpertsConfigError, match=r"k=9 experts per token"):
        X.ExpertsConfig(kind="topk", k=9)
    with pytest.raises(X.ExpertsConfigError, match=r"unknown expert config field"):
        X.ExpertsConfig.from_dict({"kind": "topk", "experts": 4})
    assert issubclass(X.ExpertsConfigError, ValueError)
    cfg = X.ExpertsConfig(n_experts=6, virtual=["zero", "const"], k_max=5)
    assert cfg.virtual == ("zero", "const")
    assert X.ExpertsConfig.from_dict(cfg.to_dict()) == cfg


def _collapsed_router(m, bias=5.0):
    with torch.no_grad():
        m.router.weight.mul_(0.1)
        m.router.bias.zero_()
        m.router.bias[0] = bias


def _entropy(share):
    p = share.clamp_min(1e-12)
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("kind", ["topk", "dynamic"])
def test_collapse_is_flagged_once_and_the_balance_loss_spreads_the_load(kind):
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    healthy = X.build_ffn(X.ExpertsConfig(kind=kind), 16, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", X.ExpertCollapseWarning)
        healthy(x)
    assert not healthy.collapsed

    m = X.build_ffn(X.ExpertsConfig(kind=kind), 16, 32)
    _collapsed_router(m)
    with pytest.warns(X.ExpertCollapseWarning, match=r"expert 0 carries (9\d|100)% of the real expert load"):
        m(x)
    assert m.collapsed and m.last_stats["collapsed"]
    before_share, before_h = m.last_stats["max_share"], _entropy(m.last_stats["gate_share"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", X.ExpertCollapseWarning)
        m(x)  # warned once per block, flagged every time
    assert m.collapsed

    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    m.train()
    for _ in range(40):
        m(x)
        opt.zero_grad()
        m.aux_loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        m(x)
    after_share, after_h = m.last_stats["max_share"], _entropy(m.last_stats["gate_share"])
    assert before_share > 0.9 and after_share < 0.5, (before_share, after_share)
    assert after_h > before_h + 1.0, (before_h, after_h)
    assert not m.collapsed


def test_small_batches_are_not_called_collapsed():
    m = X.build_ffn(X.ExpertsConfig(kind="topk"), 16, 32)
    _collapsed_router(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error", X.ExpertCollapseWarning)
        m(torch.randn(5, 16))
    assert not m.collapsed


def test_factories_carry_names_and_config():
    assert X.make_ffn_factory(X.ExpertsConfig()) is X.ANYEXPERTS_FACTORY
    assert fusion.ffn_factory("anyexperts") is X.ANYEXPERTS_FACTORY
    assert fusion.ffn_factory("moe-topk") is X.TOPK_FACTORY
    assert fusion.ffn_factory("dense") is fusion.dense_ffn  # ours never replaces fusion's own
    assert X.ANYEXPERTS_FACTORY.config == X.ExpertsConfig().to_dict()
    # training-only settings keep the name; a different shape gets its own
    assert fusion.ffn_name_of(X.make_ffn_factory(X.ExpertsConfig(balance_weight=3.0))) == "anyexperts"
    other = X.make_ffn_factory(X.ExpertsConfig(k_max=5))
    assert other.ffn_name.startswith("anyexperts-") and fusion.ffn_name_of(other) == other.ffn_name
    assert fusion.ffn_factory(other.ffn_name) is other
    assert X.make_ffn_factory(X.ExpertsConfig(kind="dense")).ffn_name == "dense"


def _features(n=80, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    video = np.sin(t / 5.0 + np.arange(6)) + 0.1 * rng.standard_normal((n, 6))
    audio = np.cos(t / 3.0 + np.arange(4)) + 0.1 * rng.standard_normal((n, 4))
    return video.astype(np.float32), audio.astype(np.float32)


def _net_cfg(ffn):
    return fusion.FusionConfig(video_dim=6, audio_dim=4, dim=16, heads=2, layers=2, hidden=32, context=4, ffn=ffn)


def test_fusion_trains_saves_and_refuses_another_ffn():
    video, audio = _features()
    cfg = _net_cfg("anyexperts")
    net = fusion.build_model(cfg, seed=0)
    res = fusion.fit(net, video, audio, fusion.TrainParams(steps=6, batch=8, seed=0))
    assert np.isfinite(res["final_loss"])
    stats = X.expert_stats(net)
    assert len(stats["modules"]) == 4  # 2 layers × (video, audio)
    assert all(s.shape == (8, 4) for s in stats["slots"])  # last training batch [B, L]
    assert 1.0 <= stats["real_per_token"] <= 2.0
    assert 0.0 <= stats["virtual_share"] <= 0.25

    config = {"net": cfg.to_dict(), "experts": X.ANYEXPERTS_FACTORY.config}
    blob = fusion.to_bytes(net, config)
    back = fusion.from_bytes(blob, config)
    ev, ea = fusion.reconstruction_errors(net, video, audio)
    bv, ba = fusion.reconstruction_errors(back, video, audio)
    np.testing.assert_allclose(ev, bv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ea, ba, rtol=1e-5, atol=1e-6)
    for wrong in (fusion.dense_ffn, X.TOPK_FACTORY, X.make_ffn_factory(X.ExpertsConfig(k_max=5))):
        with pytest.raises(fusion.CheckpointError, match="trained with 'anyexperts'"):
            fusion.from_bytes(blob, config, ffn_factory=wrong)


def test_fusion_with_topk_and_our_dense_block():
    video, audio = _features(60, seed=1)
    net = fusion.build_model(_net_cfg("moe-topk"), seed=0)
    fusion.fit(net, video, audio, fusion.TrainParams(steps=3, batch=8, seed=0))
    assert X.expert_stats(net)["real_per_token"] == pytest.approx(2.0)
    # our dense block has fusion's dense layout: its checkpoint loads into fusion's own dense_ffn
    ours = X.make_ffn_factory(X.ExpertsConfig(kind="dense"))
    cfg = _net_cfg("dense")
    net = fusion.build_model(cfg, ours, seed=0)
    blob = fusion.to_bytes(net, {"net": cfg.to_dict()})
    back = fusion.from_bytes(blob, {"net": cfg.to_dict()}, ffn_factory=fusion.dense_ffn)
    np.testing.assert_allclose(fusion.reconstruction_errors(net, video, audio)[0],
                               fusion.reconstruction_errors(back, video, audio)[0], rtol=1e-5, atol=1e-6)
