"""Circuit discovery: the graph, the methods against their definitions, MIB faithfulness,
the result, the CLI and the errors — on tiny HookedTransformers (edge interventions need
per-head input copies, which only HookedTransformer offers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _circuit_support import coin_examples
from _engine_support import single_thread  # noqa: F401  (autouse fixture)

from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.circuits import (METHODS, CircuitGraph, CircuitResult, MethodError, PromptBatch, Setting,
                                     TaskData, TaskError, areas, build_task, circuits_for, discover_circuit,
                                     faithfulness)
from interp_toolkit.circuits import tasks as tasks_mod
from interp_toolkit.circuits.evaluate import greedy_connected
from interp_toolkit.circuits.methods import edge_effects
from interp_toolkit.core import load_result
from interp_toolkit.engine import masked_forward_loop
from interp_toolkit.models import tiny_model

pytestmark = pytest.mark.hooked_only
L, H, T, N = 2, 4, 6, 3


def _toy_task(seed=0, n=N) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    clean, corrupt = torch.randint(4, 64, (n, T), generator=g), torch.randint(4, 64, (n, T), generator=g)
    b = PromptBatch(clean, corrupt, torch.randint(4, 64, (n, 1), generator=g),
                    torch.randint(4, 64, (n, 2), generator=g), [0] * n)
    return TaskData("toy", [b], 1.0, {0: 1.0}, [0], [], seed)


def _setting(arch="llama", init_std=0.3, dtype=torch.float64, **kw) -> Setting:
    model = tiny_model(arch, backend="hooked", n_layers=L, n_heads=H, init_std=init_std).to(dtype)
    return Setting(ModelAdapter(model), CircuitGraph(L, H), _toy_task(), **kw)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def st(request):
    return _setting(request.param)


def _m(st, keep_row) -> float:
    """Mean metric of one edge keep row, via the loop twin (independent of the kernel)."""
    b = st.task.batches[0]
    vals = []
    for i in range(b.n):
        spec = st.graph.spec(torch.as_tensor(keep_row)[None])
        ref = st.reference(b)
        ref_i = None if ref is None else {k: v[i:i + 1] for k, v in ref.items()}
        vals.append(float(masked_forward_loop(st.adapter, b.clean[i:i + 1], spec, reference=ref_i,
                                              output=b.metric().for_rows(torch.tensor([i])))[0]))
    return float(np.mean(vals))


# ---------------------------------------------------------------------------- graph
def test_graph_counts_and_names():
    g = CircuitGraph(3, 5)
    assert g.n_edges == CircuitGraph.expected_edges(3, 5)
    # by hand for 1 layer, 2 heads: 6 q/k/v receivers x 1 sender + MLP (1 + 2) + logits (1 + 3)
    assert CircuitGraph(1, 2).n_edges == 6 + 3 + 4
    e = g.edge_index("L0H2", "L1H4.v")
    assert g.sender[e] == 1 + 2 and g.receiver_name(e) == "L1H4.v"
    with pytest.raises(KeyError):
        g.edge_index("L1H0", "L1H2.q")  # same layer: no edge


def test_spec_places_each_edge():
    g = CircuitGraph(L, H)
    for e in (0, g.edge_index("MLP0", "L1H3.k"), g.edge_index("L1H1", "MLP1"), g.n_edges - 1):
        keep = torch.ones(1, g.n_edges, dtype=torch.bool)
        keep[0, e] = False
        spec = g.spec(keep)
        assert len(spec.entries) == 1
        (site, layer), k = next(iter(spec.entries.items()))
        off = (~k[0]).nonzero().tolist()
        assert len(off) == 1
        assert off[0][-1] == g.sender[e]
        if site in ("edge_q", "edge_k", "edge_v"):
            assert off[0][1] == g.receiver_head[e] and layer == g.receiver_layer[e]


# ---------------------------------------------------------------------------- methods
def test_exact_equals_loop_twin(st):
    scores = METHODS["exact"](st)
    clean = _m(st, np.ones(st.graph.n_edges, dtype=bool))
    for e in (st.graph.edge_index("input", "L1H2.q"), st.graph.edge_index("L0H3", "MLP1"),
              st.graph.edge_index("MLP1", "logits")):
        keep = np.ones(st.graph.n_edges, dtype=bool)
        keep[e] = False
        assert scores[e] == pytest.approx(_m(st, keep) - clean, abs=1e-8)


def test_eap_is_the_first_order_effect(st):
    """EAP = g·(r − o): the derivative of M along the edge's keep, by finite differences."""
    scores = METHODS["eap"](st)
    clean = _m(st, np.ones(st.graph.n_edges))
    eps = 1e-5
    big = np.argsort(-np.abs(scores))[:3]
    for e in list(big) + [st.graph.edge_index("L0H1", "L1H0.k")]:
        keep = np.ones(st.graph.n_edges)
        keep[e] = 1 - eps
        fd = (_m(st, keep) - clean) / eps
        assert scores[e] == pytest.approx(fd, rel=1e-3, abs=1e-6)
    assert np.abs(scores[big]).min() > 1e-3


def test_eap_ig_activations_completeness(st):
    """Σ_e score = M(∅) − M(full) in the limit of steps (integrated gradients of the keeps)."""
    b = st.task.batches[0]
    total = edge_effects(st, torch.zeros(1, st.graph.n_edges, dtype=torch.bool))[0]
    errs = [abs(METHODS["eap-ig-activations"](st, steps=s).sum() - total) for s in (1, 4, 16)]
    assert errs[2] < errs[0] and errs[2] < 0.02 * abs(total) + 1e-6
    assert abs(total) > 1e-2 and b.n == N


class _NearLinear(Setting):
    """The ablation value moved a fraction ``eps`` of the way from the clean run to the corrupt
    one: every effect is O(eps) and the model near-linear over the path."""

    eps = 0.1

    def reference(self, batch):
        key = ("near", id(batch))
        if key not in self._cache:
            clean, corrupt = self.run(batch.clean)[1], self.run(batch.corrupt)[1]
            self._cache[key] = {k: clean[k] + self.eps * (corrupt[k] - clean[k]) for k in clean}
        return self._cache[key]


def test_eap_ig_inputs_converges_to_exact_near_linear():
    """In a near-linear case (the ablation value close to the clean run) the per-edge EAP-IG
    (inputs) scores approach the exact effects: the error shrinks with steps, is below EAP's
    (the gradient at the clean end only), and vanishes as the case becomes linear."""
    base = _setting("gpt2")
    errors = {}
    for eps in (0.1, 0.01):
        st = type("NL", (_NearLinear,), {"eps": eps})(base.adapter, base.graph, base.task)
        exact = METHODS["exact"](st)
        scale = np.abs(exact).max()
        eap = np.abs(METHODS["eap"](st) - exact).max() / scale
        err = [np.abs(METHODS["eap-ig-inputs"](st, steps=s) - exact).max() / scale for s in (1, 4, 32)]
        assert err[2] <= err[1] <= err[0] and err[2] < eap, (eps, err, eap)
        errors[eps] = err[2]
    assert errors[0.01] < 0.03 and errors[0.01] < errors[0.1] / 4


def test_eap_ig_activations_is_the_integral_of_the_keep_derivative():
    """Per edge, EAP-IG (activations) = −mean over the midpoints α of ∂M/∂m_e at m = α·1, the
    derivative taken by finite differences through the loop twin."""
    st = _setting("llama")
    steps, h = 4, 1e-6
    scores = METHODS["eap-ig-activations"](st, steps=steps)
    E = st.graph.n_edges
    for e in (st.graph.edge_index("L0H2", "L1H1.v"), int(np.argmax(np.abs(scores)))):
        fd = []
        for a in (np.arange(steps) + 0.5) / steps:
            keep = np.full(E, a)
            base = _m(st, keep)
            keep[e] = a - h
            fd.append((_m(st, keep) - base) / h)
        assert scores[e] == pytest.approx(np.mean(fd), rel=1e-3, abs=1e-6)


def test_strace_and_random_scores(st):
    s = METHODS["strace"](st)
    assert s.shape == (st.graph.n_edges,) and np.isfinite(s).all() and (s >= 0).all()
    # edges into the logits from the last MLP carry weight; the logits read only the last position
    assert s[st.graph.edge_index("MLP1", "logits")] > 0
    r1, r2 = METHODS["random"](st), METHODS["random"](st)
    np.testing.assert_array_equal(r1, r2)


# ---------------------------------------------------------------------------- evaluation
def test_faithfulness_endpoints(st):
    """Keeping every edge gives the full model (f = 1); keeping none gives the corrupt run."""
    E = st.graph.n_edges
    keeps = torch.stack([torch.ones(E, dtype=torch.bool), torch.zeros(E, dtype=torch.bool)])
    res = faithfulness(st, keeps)
    assert res["f"] == pytest.approx([1.0, 0.0], abs=1e-9)
    b = st.task.batches[0]
    with torch.no_grad():
        logits = st.adapter.model(b.corrupt)[:, -1]
    assert res["m_empty"] == pytest.approx(float(b.metric()(logits).mean()), abs=1e-6)
    with torch.no_grad():
        logits = st.adapter.model(b.clean)[:, -1]
    assert res["m_full"] == pytest.approx(float(b.metric()(logits).mean()), abs=1e-6)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_other_ablations(ablation):
    """Zero / mean ablation: all edges kept is the full model; EAP is still the first-order
    effect (g · (r − o) with r = 0 or the prompts' mean)."""
    st = _setting("gpt2", ablation=ablation)
    E = st.graph.n_edges
    res = faithfulness(st, torch.ones(1, E, dtype=torch.bool))
    assert res["f"] == pytest.approx([1.0], abs=1e-9)
    scores = METHODS["eap"](st)
    e = int(np.argmax(np.abs(scores)))
    keep = np.ones(E)
    keep[e] = 1 - 1e-6
    assert scores[e] == pytest.approx((_m(st, keep) - _m(st, np.ones(E))) / 1e-6, rel=1e-3)


def test_curves_in_one_pass_equal_one_by_one(st):
    from interp_toolkit.circuits import faithfulness_curve, faithfulness_curves

    scores = {"eap": METHODS["eap"](st), "random": METHODS["random"](st)}
    both = faithfulness_curves(st, scores, [0.05, 0.3, 1.0])
    for m, s in scores.items():
        one = faithfulness_curve(st, s, [0.05, 0.3, 1.0])
        assert both[m]["f"] == pytest.approx(one["f"], abs=1e-9) and both[m]["cpr"] == pytest.approx(one["cpr"])


def test_areas_closed_form():
    sizes = [0.1, 0.5, 1.0]
    assert areas(sizes, [1, 1, 1]) == pytest.approx((0.9, 0.0))
    assert areas(sizes, [0, 0.5, 1]) == pytest.approx((0.5 * 0.4 * 0.5 + 0.5 * 0.5 * 1.5, 0.4 * 0.75 + 0.5 * 0.25))
    assert areas(sizes, [0, 0, 1], log_x=True)[0] == pytest.approx(0.5 * -np.log10(0.5))


def test_selection_top_n_and_connected():
    g = CircuitGraph(L, H)
    s = np.random.default_rng(0).normal(size=g.n_edges)
    keep = circuits_for(g, s, [0.05, 1.0])
    k = int(keep[0].sum())
    assert np.abs(s[keep[0].numpy()]).min() >= np.sort(np.abs(s))[-k]
    assert keep[1].all()
    conn = greedy_connected(g, s, 12)
    nodes = {-1} | {int(g.sender[e]) for e in np.flatnonzero(conn)}
    assert conn.sum() == 12
    assert all(int(g.receiver_node_ids[e]) in nodes for e in np.flatnonzero(conn))


# ---------------------------------------------------------------------------- result / errors
def test_discover_result_roundtrip_and_report(tmp_path):
    model = tiny_model("llama", backend="hooked", n_layers=L, n_heads=H, init_std=0.3)
    res = discover_circuit(model, _toy_task(), ["eap", "random"], sizes=[0.01, 0.1, 1.0], n_attention_heads=2)
    assert res.curves["eap"]["f"][-1] == pytest.approx(1.0, abs=1e-5)
    assert set(res.plot_kinds) == {"faithfulness", "circuit", "areas"}
    back = load_result(res.save(tmp_path / "c.json"))
    assert isinstance(back, CircuitResult) and back.summary() == res.summary()
    html = res.to_html()
    assert html.count('data-bundle="circuitsvis"') == 1 and "CPR" in html and "L" in res.attention["heads"][0]


def test_errors(monkeypatch):
    st = _setting()
    with pytest.raises(TaskError, match="one length"):
        PromptBatch(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long),
                    torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        circuits_for(st.graph, np.zeros(st.graph.n_edges), [0.0, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        circuits_for(st.graph, np.zeros(st.graph.n_edges), [0.5, 1.5])
    with pytest.raises(MethodError, match="unknown method"):
        discover_circuit(st.adapter, st.task, ["eap", "magic"])
    with pytest.raises(MethodError, match="ablation"):
        Setting(st.adapter, st.graph, st.task, ablation="noise")
    with pytest.raises(TaskError, match="unknown task"):
        build_task(st.adapter, "sorting")

    # a task the random model cannot solve: digits as answers, half of them right by chance
    monkeypatch.setitem(tasks_mod.TASKS, "coin", coin_examples)
    with pytest.raises(TaskError, match="solve"):
        build_task(st.adapter, "coin", n_prompts=40, min_accuracy=0.8)
    data = build_task(st.adapter, "coin", n_prompts=40, min_accuracy=0.05, template_accuracy=0.05)
    assert 0.05 <= data.accuracy < 0.8 and data.n_prompts == 40


def test_bridge_refused():
    bridge = tiny_model("gpt2", backend="bridge", n_layers=L, n_heads=H)
    with pytest.raises(NotImplementedError, match="HookedTransformer"):
        Setting(ModelAdapter(bridge), CircuitGraph(L, H), _toy_task())


def test_cli_errors(capsys):
    from interp_toolkit import cli

    assert cli.main(["circuit", "--model", "tiny-random-llama", "--method", "eap,magic"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert cli.main(["circuit", "--model", "tiny-random-llama", "--sizes", "0.5,2"]) == 2
    assert cli.main(["circuit", "--model", "tiny-random-llama", "--backend", "hooked", "--task", "ioi"]) == 1
    assert "single tokens" in capsys.readouterr().err


def test_peak_memory_sees_an_allocation_on_reused_pages():
    """Pages freed before the block and reused inside it do not grow the resident set, so the
    count must come from the heap: allocate and free the same size first, then measure."""
    import time

    from interp_toolkit.core.memory import peak_memory

    for _ in range(3):  # leaves 30 MB of freed, still-resident heap behind (below glibc's 32 MB mmap ceiling)
        x = torch.ones(30 * 2**20 // 4)
        x += 1
        del x
    with peak_memory("cpu") as held:
        x = torch.ones(30 * 2**20 // 4)  # still held when the block ends
        x += 1
    del x
    with peak_memory("cpu") as freed:
        y = torch.ones(30 * 2**20 // 4)  # freed inside the block, seen by the sampler
        y += 1
        time.sleep(0.1)
        del y
    with peak_memory("cpu") as nothing:
        pass
    assert 28 <= held["mb"] <= 35
    assert 28 <= freed["mb"] <= 35
    assert nothing["mb"] < 5


# ---------------------------------------------------------------------------- exact greedy
def test_node_keep_equals_edgewise_rule(st):
    from interp_toolkit.circuits.methods import node_keep

    g = st.graph
    rng = np.random.default_rng(0)
    nodes = rng.random((3, g.n_senders)) < 0.5
    keep = node_keep(g, nodes)
    for k in range(3):
        for e in range(g.n_edges):
            s, r = g.sender[e], g.receiver_node_ids[e]
            want = (s == 0 or nodes[k, s]) and (r < 0 or nodes[k, r])
            assert keep[k, e] == want


def test_greedy_equals_a_brute_force_loop(st):
    """The greedy's nodes are those of a twin that tries the candidates one by one with the
    plain hook loop (``_m``) under the same rule: the largest M(C ∪ {n}), ties within 1e-9 to
    the earlier candidate (larger node |EAP|)."""
    from interp_toolkit.circuits.methods import greedy_order, node_keep

    order, metric, cand, _ = greedy_order(st, max_steps=3, pool=6)
    assert len(order) == 3 and len(cand) == 6
    current = np.zeros(st.graph.n_senders, dtype=bool)
    twin = []
    for _ in range(3):
        vals = np.full(len(cand), -np.inf)
        for k, n in enumerate(cand):
            if not current[n]:
                row = current.copy()
                row[n] = True
                vals[k] = _m(st, node_keep(st.graph, row[None])[0])
        best = vals.max()
        pick = cand[np.flatnonzero(vals >= best - 1e-9 * max(1.0, abs(best)))[0]]
        twin.append(int(pick))
        current[pick] = True
    assert order.tolist() == twin
    assert metric[-1] == pytest.approx(_m(st, node_keep(st.graph, current[None])[0]), abs=1e-9)
    assert len(set(np.round(metric, 9))) == 3  # no ties here: the comparison has teeth


def test_greedy_scores_follow_the_node_order(st):
    from interp_toolkit.circuits.methods import greedy, greedy_order, node_keep

    g = st.graph
    order, _, cand, _ = greedy_order(st, max_steps=3, pool=5)
    assert len(cand) == 5 and set(order) <= set(cand.tolist()) and 0 not in cand
    s = greedy(st, max_steps=3, pool=5)
    for t in range(1, 4):  # the circuit of the first t nodes is the top of the edge ranking
        nodes = np.zeros(g.n_senders, dtype=bool)
        nodes[order[:t]] = True
        inside = node_keep(g, nodes[None])[0]
        assert s[inside].min() > s[~inside].max()
    with pytest.raises(MethodError, match="max_steps"):
        greedy(st, max_steps=0)
