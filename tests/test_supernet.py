"""The fused supernet computes exactly what the plain per-edge supernet computes."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from dnas.bilevel.problem import BilevelProblem
from dnas.components.activations import Softmax
from dnas.spaces import get_space
from dnas.supernet import build_supernet, copy_into_reference
from dnas.supernet.fused import FusedCell, channel_shuffle
from dnas.supernet.network import DartsCellBlock
from dnas.supernet.reference import member_gradient_pairs


def _pair(space_name: str, layers: int, node_bn: bool = False, channels: int = 4, **options):
    space = get_space(space_name)
    torch.manual_seed(0)
    fused = build_supernet(space, num_classes=5, in_channels=3, channels=channels, layers=layers, node_bn=node_bn,
                           **options).double()
    reference = build_supernet(space, num_classes=5, in_channels=3, channels=channels, layers=layers, fused=False,
                               node_bn=node_bn, **options).double()
    copy_into_reference(fused, reference)
    return space, fused, reference


def _node_modules(net):
    return [c.nodes if isinstance(c, DartsCellBlock) else c for c in net.cells]


def _cell_weights(space, net, seed: int, zero_noise: bool = False):
    g = torch.Generator().manual_seed(seed)
    weights = []
    for cell_type in net.cell_types:
        topo = space.cells[cell_type]
        w = torch.randn(topo.num_edges, topo.ops_per_edge, generator=g, dtype=torch.float64).softmax(-1)
        if zero_noise:
            w = w * torch.tensor([op != "noise" for op in topo.edge_ops[0]], dtype=torch.float64)
        weights.append(w.requires_grad_(True))
    return weights


@pytest.mark.parametrize("space_name,layers,node_bn", [
    ("darts", 3, False), ("nb201", 1, False), ("s1", 3, False), ("s3", 2, False), ("s4", 2, False),
    ("darts", 2, True),
])
def test_fused_matches_reference_outputs_and_gradients(space_name, layers, node_bn):
    space, fused, reference = _pair(space_name, layers, node_bn)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    wf = _cell_weights(space, fused, 1, zero_noise=space_name == "s4")
    wr = [w.detach().clone().requires_grad_(True) for w in wf]
    out_f, out_r = fused(x, wf), reference(x, wr)
    torch.testing.assert_close(out_f, out_r, rtol=1e-9, atol=1e-10)

    probe = torch.randn_like(out_f)
    (out_f * probe).sum().backward()
    (out_r * probe).sum().backward()
    # gradients w.r.t. each cell's own architecture weights (the noise column differs: it is fresh noise)
    columns = slice(1, None) if space_name == "s4" else slice(None)
    for a, b in zip(wf, wr, strict=True):
        torch.testing.assert_close(a.grad[:, columns], b.grad[:, columns], rtol=1e-8, atol=1e-10)
    pairs = [p for f, r in zip(_node_modules(fused), _node_modules(reference), strict=True)
             for p in member_gradient_pairs(f, r)]
    assert pairs
    for gf, gr in pairs:
        torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-10)
    ref_params = dict(reference.named_parameters())
    for name, p in fused.named_parameters():
        if name in ref_params:  # stem, preprocessing, residual blocks, classifier
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("space_name,layers,options", [
    ("darts", 3, {"partial": 4}), ("nb201", 1, {"partial": 2}), ("darts", 3, {"partial": 2, "bypass": True}),
    ("nb201", 2, {"partial": 4, "bypass": True}), ("darts", 3, {"aux_skip": True}), ("nb201", 1, {"aux_skip": True}),
])
def test_partial_channels_and_the_auxiliary_skip_match_the_reference(space_name, layers, options):
    """PC-DARTS' partial channel connections (with and without edge coefficients on the bypass) and
    DARTS-'s auxiliary skip: the fused cells compute what the per-edge MixedOps compute, every gradient too."""
    options = dict(options)
    bypass = options.pop("bypass", False)
    space, fused, reference = _pair(space_name, layers, channels=8, **options)
    for net in (fused, reference):
        net.set_aux_skip(0.37)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    wf = _cell_weights(space, fused, 1)
    wr = [w.detach().clone().requires_grad_(True) for w in wf]
    g = torch.Generator().manual_seed(2)
    cf = {t: torch.rand(c.num_edges, generator=g, dtype=torch.float64).requires_grad_(True)
          for t, c in space.cells.items()} if bypass else None
    cr = {t: v.detach().clone().requires_grad_(True) for t, v in cf.items()} if cf else None
    out_f, out_r = fused(x, wf, None, cf), reference(x, wr, None, cr)
    torch.testing.assert_close(out_f, out_r, rtol=1e-9, atol=1e-10)
    probe = torch.randn_like(out_f)
    (out_f * probe).sum().backward()
    (out_r * probe).sum().backward()
    for a, b in zip(wf, wr, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10)
    if cf:
        for t in cf:
            torch.testing.assert_close(cf[t].grad, cr[t].grad, rtol=1e-8, atol=1e-10)
    for gf, gr in (p for f, r in zip(_node_modules(fused), _node_modules(reference), strict=True)
                   for p in member_gradient_pairs(f, r)):
        torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-10)
    ref_params = dict(reference.named_parameters())
    for name, p in fused.named_parameters():
        if name in ref_params:
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-8, atol=1e-10)


def test_partial_channels_pass_the_bypassed_channels_through():
    """With every op weight 0 and the bypass at 1, a partial-channel cell is the shuffle of [zeros; the
    bypassed channels]; the bypass is weighted by the row sums of the weights by default."""
    space = get_space("nb201")
    cell = FusedCell("nb201", space.cells["cell"], 8, partial=4).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    nodes = cell([x], torch.zeros(6, 5, dtype=torch.float64), None, torch.ones(6, dtype=torch.float64))
    expected = torch.zeros(2, 8, 4, 4, dtype=torch.float64)
    expected[:, 2:] = x[:, 2:]
    torch.testing.assert_close(nodes[0], channel_shuffle(expected, 4))  # node 1 reads node 0 alone
    assert channel_shuffle(torch.arange(8.0).view(1, 8, 1, 1), 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    half = torch.zeros(6, 5, dtype=torch.float64)
    half[:, 0] = 0.5  # none at 0.5: the ops add nothing, the bypass gets the row sum 0.5
    torch.testing.assert_close(cell([x], half)[0], channel_shuffle(0.5 * expected, 4))


@pytest.mark.parametrize("space_name,layers", [("darts", 3), ("nb201", 1)])
def test_masked_ops_are_skipped_and_exact(space_name, layers, monkeypatch):
    space, fused, reference = _pair(space_name, layers)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    masks = {t: torch.rand(c.num_edges, c.ops_per_edge, generator=g) > 0.5 for t, c in space.cells.items()}
    for m in masks.values():
        m[:, 1:3] = False  # make some op kinds inactive on every edge
    weights = {t: torch.rand(c.num_edges, c.ops_per_edge, generator=g, dtype=torch.float64) * masks[t]
               for t, c in space.cells.items()}
    calls = []
    for cell in _node_modules(fused):
        for source in cell.sources:
            for op, kind in source.kinds.items():
                original = kind.forward
                monkeypatch.setattr(kind, "forward", lambda *a, _o=original, _op=op, **k: (calls.append(_op),
                                                                                          _o(*a, **k))[1])
    out_f = fused(x, fused.per_cell(weights), masks)
    out_r = reference(x, reference.per_cell(weights))
    torch.testing.assert_close(out_f, out_r, rtol=1e-9, atol=1e-10)
    skipped = {op for t, c in space.cells.items() for op in (c.edge_ops[0][1], c.edge_ops[0][2])}
    assert calls and not skipped & set(calls)


def test_none_is_never_instantiated():
    _, fused, _ = _pair("darts", 3)
    for cell in _node_modules(fused):
        assert isinstance(cell, FusedCell)
        for source in cell.sources:
            assert "none" not in source.kinds


def test_arch_parameters_are_disjoint_from_weights():
    space = get_space("nb201")
    net = build_supernet(space, num_classes=3, in_channels=1, channels=4, layers=1)
    alphas = torch.nn.ParameterDict({"cell": torch.nn.Parameter(torch.zeros(6, 5))})
    problem = BilevelProblem(net, alphas, Softmax())
    weight_ids = {id(p) for p in problem.weights}
    assert weight_ids and not weight_ids & {id(a) for a in problem.arch}
    assert len(weight_ids) == len(list(net.parameters()))


def test_per_cell_weights_reach_their_cells():
    space, fused, _ = _pair("nb201", 2)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    weights = _cell_weights(space, fused, 5)
    fused(x, weights).sum().backward()
    grads = [w.grad for w in weights]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not torch.allclose(grads[0], grads[-1])  # each cell reads its own copy


def test_reference_helpers_refuse_the_wrong_inputs():
    space, fused, reference = _pair("darts", 3)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    with pytest.raises(TypeError, match="fused=False"):
        copy_into_reference(reference, fused)  # the wrong way round: nothing is copied
    for k, v in fused.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(RuntimeError, match="backward"):  # no backward pass yet: no gradients to pair
        member_gradient_pairs(_node_modules(fused)[0], _node_modules(reference)[0])


@pytest.mark.parametrize(("stride", "size"), [(1, 6), (2, 6), (2, 5)])
def test_average_pooling_double_backward_is_exact_and_one_convolution(stride, size):
    """The box sum behind avg_pool_3x3 has a hand-written backward (a transposed convolution), so that
    double backward differentiates one convolution instead of PyTorch's loop over the C groups."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from dnas.supernet.recompute import BoxSum

    ones = torch.ones(4, 1, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 4, size, size, dtype=torch.float64, requires_grad=True)

    def box(t):
        return BoxSum.apply(t, ones, stride)

    assert torch.equal(box(x), F.conv2d(x, ones, stride=stride, padding=1, groups=4))
    assert torch.autograd.gradcheck(box, (x,)) and torch.autograd.gradgradcheck(box, (x,))

    class Convolutions(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Convolutions.calls += func.overloadpacket in (torch.ops.aten.convolution,
                                                         torch.ops.aten.convolution_backward)
            return func(*args, **(kwargs or {}))

    (g,) = torch.autograd.grad((box(x.relu()) ** 2).sum(), [x], create_graph=True)
    with Convolutions():
        torch.autograd.grad((g * torch.randn_like(g)).sum(), [x])
    assert Convolutions.calls <= 3  # PyTorch's grouped double backward: one convolution per channel (4+)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels_last", [True, False])
def test_dilated_depthwise_without_dilation_is_exact(k, stride, size, channels_last):
    """The parity-phase form of the dilation-2 depthwise convolution equals PyTorch's dilated one, in
    either layout, and keeps a channels-last input's layout (what the pointwise convolution after it wants)."""
    from dnas.supernet.recompute import dilated2_depthwise

    g = torch.Generator().manual_seed(k * 10 + stride)
    x = torch.randn(3, 6, size, size, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 1, k, k, generator=g, dtype=torch.float64)
    expected = F.conv2d(x, weight, stride=stride, padding=k - 1, dilation=2, groups=6)
    got = dilated2_depthwise(x, weight, stride, k)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if channels_last and stride == 1 and size % 2 == 0:
        assert got.is_contiguous(memory_format=torch.channels_last)


def _layout(t):
    return "contiguous" if t.is_contiguous() else ("channels_last" if t.is_contiguous(
        memory_format=torch.channels_last) else "strided")


class _BatchNormLayouts:
    """Records (input layout, incoming gradient layout) of every BatchNorm backward run inside it."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        seen = self.seen = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket is torch.ops.aten.native_batch_norm_backward:
                    seen.append((_layout(args[1]), _layout(args[0])))
                return func(*args, **(kwargs or {}))

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)

    def mismatched(self):
        return [pair for pair in self.seen if pair[0] != pair[1]]


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_batchnorm_backward_sees_one_layout_in_supernets(space_name):
    """Every BatchNorm of a supernet gets its gradient in its input's memory layout: PyTorch's CPU
    BatchNorm backward is several times slower with a channels-last input and a contiguous gradient.
    On CPU the whole supernet runs channels-last (``search_layout``)."""
    space = get_space(space_name)
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=5, in_channels=3, channels=8, layers=3 if space_name == "darts" else 1)
    weights = [w.float().detach().requires_grad_(True) for w in _cell_weights(space, net, 0)]
    out = net(torch.randn(4, 3, 8, 8), weights)
    with _BatchNormLayouts() as probe:
        out.square().sum().backward()
    assert len(probe.seen) > 10 and all(inp == "channels_last" for inp, _ in probe.seen)
    mismatched = probe.mismatched()
    assert not mismatched, f"{len(mismatched)} of {len(probe.seen)} mix layouts: {mismatched[:3]}"


@pytest.mark.parametrize("space_name,cell_type", [
    ("darts", "normal"), ("darts", "reduce"), ("nb201", "cell"), ("s3", "reduce"),
])
def test_fused_cells_compute_the_same_in_either_layout_and_keep_it(space_name, cell_type):
    """A fused cell returns its nodes in its inputs' layout (contiguous: other devices; channels-last:
    CPU), the same values and gradients in both, and no BatchNorm backward mixes layouts in either."""
    space = get_space(space_name)
    topo = space.cells[cell_type]
    torch.manual_seed(0)
    cell = FusedCell("nb201" if space_name == "nb201" else "darts", topo, 4).double()
    weights = torch.rand(topo.num_edges, topo.ops_per_edge, dtype=torch.float64)
    inputs = [torch.randn(3, 4, 6, 6, dtype=torch.float64) for _ in range(topo.num_inputs)]
    probe = [torch.randn(3, 4, 3 if topo.reduction else 6, 3 if topo.reduction else 6, dtype=torch.float64)
             for _ in topo.intermediate_nodes]
    results = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        xs = [x.contiguous(memory_format=layout).detach().requires_grad_(True) for x in inputs]
        w = weights.clone().requires_grad_(True)
        cell.zero_grad()
        nodes = cell(xs, w)
        assert all(_layout(n) == ("contiguous" if layout == torch.contiguous_format else "channels_last")
                   for n in nodes)
        with _BatchNormLayouts() as bn:
            sum((n * p).sum() for n, p in zip(nodes, probe, strict=True)).backward()
        assert bn.seen and not bn.mismatched(), bn.mismatched()[:3]
        results[layout] = ([n.detach() for n in nodes], [x.grad for x in xs], w.grad,
                           [p.grad.clone() for p in cell.parameters()])
    for a, b in zip(results[torch.contiguous_format], results[torch.channels_last], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_graphs_differentiated_twice_are_built_in_the_contiguous_layout():
    """On CPU a supernet runs channels-last, except where an exact Hessian-vector product builds its
    graph (PyTorch's double backward of BatchNorm is several times slower on channels-last tensors)."""
    from dnas.bilevel.autodiff import make_hvp
    from dnas.supernet.differentiation import twice_differentiated

    space = get_space("nb201")
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=5, in_channels=3, channels=4, layers=1)
    weights = [w.float().detach() for w in _cell_weights(space, net, 0)]
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    seen = []
    net.stem.register_forward_pre_hook(lambda module, args: seen.append(_layout(args[0])))

    def loss():
        return F.cross_entropy(net(x, weights), y)

    params = list(net.parameters())
    loss()
    with twice_differentiated():
        loss()
        net(x.contiguous(memory_format=torch.channels_last), weights)  # whatever layout the caller passes
    exact = make_hvp("exact", loss, params)
    assert seen == ["channels_last", "contiguous", "contiguous", "contiguous"]
    v = [torch.randn_like(p) for p in params]
    exact(v)  # the graph built contiguous is differentiated again without another forward
    assert len(seen) == 4
    make_hvp("fd", loss, params)(v)
    assert seen[4:] == ["channels_last", "channels_last"]  # the finite difference's two plain passes


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``fn()``'s graph."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_once_differentiated_cells_keep_no_depthwise_output_or_phases():
    """A DARTS normal cell with every op active, built for one backward, keeps exactly these fewer
    activations than plain autograd (what graphs differentiated twice still build): per source node
    with ``E`` outgoing edges, the depthwise outputs in front of the pointwise convs (two per
    separable member, one per dilated: ``6E``) and the parity phases of the two dilated kinds (``2E``)."""
    from dnas.supernet.differentiation import twice_differentiated

    topo = get_space("darts").cells["normal"]
    torch.manual_seed(0)
    cell = FusedCell("darts", topo, 4).double()
    w = torch.rand(topo.num_edges, topo.ops_per_edge, dtype=torch.float64, requires_grad=True)
    xs = [torch.randn(2, 4, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
          .requires_grad_(True) for _ in range(topo.num_inputs)]
    once = _saved_bytes(lambda: cell(xs, w))
    with twice_differentiated():
        plain = _saved_bytes(lambda: cell(xs, w))
    out_edges = [sum(1 for s, _ in topo.edges if s == src) for src in range(topo.num_inputs + topo.num_nodes - 1)]
    unit = 2 * 4 * 6 * 6 * 8  # one node output in float64
    assert plain - once == sum(8 * e for e in out_edges) * unit


@pytest.mark.parametrize("twice", [False, True])
def test_the_mixing_keeps_no_copy_of_the_op_outputs(twice):
    """The mixing weights act as the affine weights of the convolution kinds' final BatchNorms and
    as outer products for the shared rows, so an NB201 cell keeps, per source node with ``E``
    outgoing edges, only tensors the ops need anyway: ReLU(x), the two conv kinds' BatchNorm inputs
    (``E`` members each), x and the pooled x (the shared rows): ``2E + 3`` node-sized tensors, and no
    stacked copy of the op outputs (``2E + 2`` more), in either kind of graph."""
    from dnas.supernet.differentiation import twice_differentiated

    topo = get_space("nb201").cells["cell"]
    torch.manual_seed(0)
    cell = FusedCell("nb201", topo, 4).double()
    w = torch.rand(topo.num_edges, topo.ops_per_edge, dtype=torch.float64, requires_grad=True)
    xs = [torch.randn(2, 4, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)]
    unit = 2 * 4 * 8 * 8 * 8  # one node output in float64; every parameter is smaller
    storages: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().nbytes() >= unit:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            (twice_differentiated() if twice else contextlib.nullcontext()):
        cell(xs, w)
    out_edges = [sum(1 for s, _ in topo.edges if s == src) for src in range(topo.num_inputs + topo.num_nodes - 1)]
    assert sum(storages.values()) == sum(2 * e + 3 for e in out_edges) * unit


@pytest.mark.parametrize("space_name,cell_type", [
    ("darts", "normal"), ("darts", "reduce"), ("nb201", "cell"), ("s3", "reduce"),
])
def test_fused_cells_built_for_one_backward_are_still_twice_differentiable(space_name, cell_type):
    """The recomputing backwards (depthwise outputs, parity phases) are built of differentiable ops:
    a double backward outside ``twice_differentiated`` is exact too."""
    topo = get_space(space_name).cells[cell_type]
    torch.manual_seed(0)
    cell = FusedCell("nb201" if space_name == "nb201" else "darts", topo, 2).double()
    w = torch.rand(topo.num_edges, topo.ops_per_edge, dtype=torch.float64, requires_grad=True)
    xs = [torch.randn(2, 2, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
          .requires_grad_(True) for _ in range(topo.num_inputs)]
    params = [p for name, p in cell.named_parameters() if name.startswith("sources.0.") and "depthwise" not in name]

    def nodes(w, *args):
        return tuple(cell(list(args[: len(xs)]), w))

    inputs = (w, *xs, *params)  # the pointwise weights, whose gradients read the recomputed depthwise outputs
    assert torch.autograd.gradcheck(nodes, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(nodes, inputs, fast_mode=True)


def test_recomputation_runs_only_for_the_gradients_the_backward_asks_for(monkeypatch):
    """The depthwise outputs are recomputed only when a pointwise weight's gradient is wanted:
    ``autograd.grad`` w.r.t. the architecture weights skips them, as PyTorch's own convolution skips
    unneeded weight gradients."""
    from dnas.supernet import kinds

    calls = 0
    depthwise = kinds.FusedDilConv.depthwise_conv

    def counting_depthwise(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        return depthwise(self, *args, **kwargs)

    monkeypatch.setattr(kinds.FusedDilConv, "depthwise_conv", counting_depthwise)
    topo = get_space("darts").cells["normal"]
    torch.manual_seed(0)
    cell = FusedCell("darts", topo, 4)
    w = torch.rand(topo.num_edges, topo.ops_per_edge, requires_grad=True)
    xs = [torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last) for _ in range(topo.num_inputs)]
    weights = list(cell.parameters())

    def recomputed(wrt):
        loss = sum(n.square().sum() for n in cell(xs, w))
        before = calls  # the forward's own calls are not counted
        torch.autograd.grad(loss, wrt)
        return calls - before

    stages = sum(2 if isinstance(k, kinds.FusedSepConv) else 1 for source in cell.fused_sources()
                 for k in source.kinds.values() if isinstance(k, (kinds.FusedSepConv, kinds.FusedDilConv)))
    assert stages > 0
    assert recomputed([w]) == 0
    assert recomputed(weights) == stages
    assert recomputed([w, *weights]) == stages
