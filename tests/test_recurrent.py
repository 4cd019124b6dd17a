"""The recurrent space (DARTS' RNN cell on a word-level corpus): tokenisation, derivation, the fused
cell against its per-edge reference, the models, the search and retraining, and the refusals.

The oracles ``_official_*`` are transcriptions of quark0/darts ``rnn/data.py``, ``rnn/utils.py``,
``rnn/model.py`` and ``rnn/model_search.py`` (``genotype()``), written for these tests."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from dnas.bilevel.recurrent_problem import RecurrentProblem, Segment
from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.components.activations import Softmax
from dnas.components.discretizers import RecurrentRule
from dnas.components.estimators import SecondOrder
from dnas.config.resolve import resolve_config
from dnas.config.train import resolve_train_config
from dnas.data.text import batchify, load_corpus, search_lengths, segment, training_lengths
from dnas.errors import DnasError
from dnas.retrain.counting import count_parameters
from dnas.retrain.language_step import LanguageTrainStep
from dnas.retrain.recurrent import RecurrentEvalCell, build_recurrent_model
from dnas.retrain.run import Trainer
from dnas.runtime.files import read_metrics
from dnas.spaces import Genotype, get_space
from dnas.spaces.published import PUBLISHED
from dnas.spaces.recurrent import RNN_OPS
from dnas.spaces.recurrent_ops import highway
from dnas.supernet.recurrent import FusedRecurrentCell, RecurrentSupernet, ReferenceRecurrentCell

RNN = get_space("rnn")
#: a tiny recurrent search: 8 units, 8 streams, BPTT 6, a record every 2 steps
TINY = ["hidden_size=8", "bptt=6", "log_every=2", "eval_batch_size=4"]


def _write_corpus(folder: Path, names: dict[str, str] | None = None, lines: tuple[int, int, int] = (60, 24, 24),
                  seed: int = 0) -> Path:
    """A small generated corpus: sentences of 1-9 words from a 40-word vocabulary (some empty lines)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)] + ["<unk>", "N", "é"]
    folder.mkdir(parents=True, exist_ok=True)
    names = names or {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
    for name, count in zip(names.values(), lines, strict=True):
        text = []
        for _ in range(count):
            sentence = [rng.choice(words) for _ in range(rng.randint(0, 9))]
            text.append(" " + "  ".join(sentence) + " \n")
        (folder / name).write_text("".join(text), encoding="utf-8")
    return folder


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return _write_corpus(tmp_path / "corpus")


# ----- tokenisation ----------------------------------------------------------------------------------------
def _official_corpus(folder: Path) -> tuple[list[str], dict[str, list[int]]]:
    """rnn/data.py: one dictionary over train, valid, test (in that order); every line split on whitespace
    plus '<eos>'; a first pass adds the words, a second writes their ids."""
    idx2word: list[str] = []
    word2idx: dict[str, int] = {}
    ids = {}
    for split in ("train", "valid", "test"):
        path = folder / f"{split}.txt"
        with open(path, encoding="utf-8") as f:
            for line in f:
                for word in line.split() + ["<eos>"]:
                    if word not in word2idx:
                        idx2word.append(word)
                        word2idx[word] = len(idx2word) - 1
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                out.extend(word2idx[word] for word in line.split() + ["<eos>"])
        ids[split] = out
    return idx2word, ids


def _official_batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def _official_get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len]


def test_tokenisation_and_batching_match_darts_data_py(corpus_dir):
    words, ids = _official_corpus(corpus_dir)
    corpus = load_corpus(corpus_dir)
    assert list(corpus.words) == words and corpus.vocabulary_size == len(words)
    for split in ("train", "valid", "test"):
        assert corpus.split(split).tolist() == ids[split]
    for bsz in (1, 3, 8):
        source = _official_batchify(corpus.train, bsz)
        assert torch.equal(batchify(corpus.train, bsz), source)
        for i in (0, 5, len(source) - 4):
            for got, want in zip(segment(source, i, 6), _official_get_batch(source, i, 6), strict=True):
                assert torch.equal(got, want)


def test_a_corpus_folder_may_use_ptb_names_and_a_missing_split_is_one_sentence(tmp_path):
    ptb = _write_corpus(tmp_path / "ptb", {s: f"ptb.{s}.txt" for s in ("train", "valid", "test")})
    plain = _write_corpus(tmp_path / "plain")
    assert torch.equal(load_corpus(ptb).test, load_corpus(plain).test)
    (plain / "valid.txt").unlink()
    with pytest.raises(DnasError, match=r"no valid split: expected valid\.txt or ptb\.valid\.txt"):
        load_corpus(plain)
    with pytest.raises(DnasError, match="is not a folder"):
        load_corpus(tmp_path / "nowhere")


def test_bptt_lengths_follow_the_search_and_training_scripts():
    g = torch.Generator().manual_seed(0)
    lengths = search_lengths(10_000, 35, g)
    assert set(lengths) == {35, 17} and 0.02 < lengths.count(17) / len(lengths) < 0.09
    assert sum(lengths[:-1]) < 10_000 - 2 <= sum(lengths)
    lengths = training_lengths(20_000, 35, 20, torch.Generator().manual_seed(1))
    assert min(lengths) >= 5 and max(lengths) <= 55 and 33 < sum(lengths) / len(lengths) < 36
    assert lengths == training_lengths(20_000, 35, 20, torch.Generator().manual_seed(1))


def test_penn_treebank_tokenises_to_the_standard_counts(shared_data):
    corpus = load_corpus(shared_data("ptb"))
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert corpus.vocabulary_size == 10_000 and corpus.words[-1] != "" and "<eos>" in corpus.words


# ----- derivation --------------------------------------------------------------------------------------------
def _official_genotype(probs: list[list[float]]) -> list[tuple[str, int]]:
    """model_search.py genotype(): per node the predecessor whose best non-none op is strongest (first on
    ties, a stable sort), and on it the first strictly best non-none op."""
    gene, start = [], 0
    none = RNN_OPS.index("none")
    for i in range(8):
        rows = probs[start:start + i + 1]
        j = sorted(range(i + 1), key=lambda x: -max(rows[x][k] for k in range(len(rows[x])) if k != none))[0]
        best = None
        for k in range(len(rows[j])):
            if k != none and (best is None or rows[j][k] > rows[j][best]):
                best = k
        gene.append((RNN_OPS[best], j))
        start += i + 1
    return gene


@pytest.mark.parametrize("seed", range(6))
def test_derivation_matches_darts_genotype_on_random_weights(seed):
    g = torch.Generator().manual_seed(seed)
    alpha = torch.randn(36, 5, generator=g) * (0.001 if seed % 2 else 1.0)
    if seed == 4:  # ties: equal rows and equal ops
        alpha = torch.round(alpha * 2) / 2
    probs = torch.softmax(alpha, dim=-1)
    genotype = RecurrentRule()(RNN, {"recurrent": probs})
    assert list(genotype.cells["recurrent"]) == _official_genotype(probs.tolist())
    assert genotype.concat["recurrent"] == tuple(range(1, 9))


def test_published_recurrent_genotypes_are_darts_genotypes_py():
    v2 = PUBLISHED["DARTS_V2_RNN"].genotype
    assert v2.cells["recurrent"] == (("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
                                     ("sigmoid", 5), ("tanh", 3), ("relu", 5))
    assert PUBLISHED["ENAS_RNN"].genotype.concat["recurrent"] == (2, 5, 6, 9, 10, 11)
    assert "node 6 <- sigmoid(5)" in v2.describe() and Genotype.from_dict(v2.to_dict()) == v2


# ----- the fused cell against its reference ----------------------------------------------------------------
def _cells(ninp=5, nhid=4, dropout=0.3):
    torch.manual_seed(0)
    fused = FusedRecurrentCell(ninp, nhid, RNN_OPS, 8, dropout_x=dropout, dropout_h=dropout).double()
    reference = ReferenceRecurrentCell(ninp, nhid, RNN_OPS, 8, dropout_x=dropout, dropout_h=dropout).double()
    reference.load_state_dict(fused.state_dict())
    return fused, reference


@pytest.mark.parametrize("training", [True, False])
def test_fused_cell_matches_the_per_edge_reference_in_float64(training):
    """Outputs, the final state, the BatchNorm statistics and the gradient of every weight, of alpha, of
    the inputs and of the initial state agree: the fused node computation is the formula of DARTS' code."""
    fused, reference = _cells()
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    hidden = torch.randn(3, 4, generator=g, dtype=torch.float64)
    alpha = torch.randn(36, 5, generator=g, dtype=torch.float64)
    upstream = torch.randn(4, 3, 4, generator=g, dtype=torch.float64)
    results = []
    for cell in (fused, reference):
        cell.train(training)
        x, h, a = (t.clone().requires_grad_(True) for t in (inputs, hidden, alpha))
        torch.manual_seed(7)  # the same dropout masks
        out, last = cell(x, h, torch.softmax(a, dim=-1))
        ((out * upstream).sum() + last.square().sum()).backward()
        results.append((out, last, x.grad, h.grad, a.grad, [p.grad for p in cell.parameters()],
                        [b.clone() for b in cell.buffers()]))
    (out_f, last_f, *grads_f, bufs_f), (out_r, last_r, *grads_r, bufs_r) = results
    torch.testing.assert_close(out_f, out_r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last_f, last_r, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads_f[:3], grads_r[:3], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    for got, want in zip(grads_f[3], grads_r[3], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    for got, want in zip(bufs_f, bufs_r, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def _official_search_cell_step(cell, x, h_prev, probs, x_mask, h_mask):
    """model_search.py DARTSCellSearch.cell, one time step (the official per-op loop over all edges of a node)."""
    xh = torch.cat([x * x_mask, h_prev * h_mask], dim=-1)
    c0, h0 = torch.split(xh.mm(cell.w0), cell.nhid, dim=-1)
    s0 = cell.bn(h_prev + c0.sigmoid() * (h0.tanh() - h_prev))
    states, offset = s0.unsqueeze(0), 0
    for i in range(8):
        ch = (states * h_mask.unsqueeze(0)).view(-1, cell.nhid).mm(cell.ws[i]).view(i + 1, -1, 2 * cell.nhid)
        c, h = torch.split(ch, cell.nhid, dim=-1)
        c = c.sigmoid()
        s = torch.zeros_like(s0)
        for k, name in enumerate(RNN_OPS):
            if name == "none":
                continue
            fn = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda t: t}[name]
            weighted = probs[offset:offset + i + 1, k].unsqueeze(-1).unsqueeze(-1) * (states + c * (fn(h) - states))
            s = s + torch.sum(weighted, dim=0)
        states = torch.cat([states, cell.bn(s).unsqueeze(0)], 0)
        offset += i + 1
    return torch.mean(states[-8:], dim=0)


def test_fused_cell_step_matches_a_transcription_of_darts_search_cell():
    fused, _ = _cells(dropout=0.0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 5, generator=g, dtype=torch.float64)
    h = torch.randn(3, 4, generator=g, dtype=torch.float64)
    probs = torch.softmax(torch.randn(36, 5, generator=g, dtype=torch.float64), dim=-1)
    ones_x, ones_h = torch.ones(3, 5, dtype=torch.float64), torch.ones(3, 4, dtype=torch.float64)
    reference_cell, _ = _cells(dropout=0.0)
    want = _official_search_cell_step(reference_cell, x[0], h, probs, ones_x, ones_h)
    out, _ = fused(x, h, probs)
    torch.testing.assert_close(out[0], want, rtol=1e-10, atol=1e-12)


def test_evaluation_cell_matches_darts_cell_and_the_published_size():
    """RecurrentEvalCell is DARTSCell.cell (no BatchNorm); DARTS_V2 at 850 units on 10,000 words has the
    23M parameters of DARTS' Table 2 (10000*850 + 10000 + 1700*1700 + 8*850*1700)."""
    torch.manual_seed(0)
    genotype = PUBLISHED["DARTS_V2_RNN"].genotype
    cell = RecurrentEvalCell(genotype, 5, 4).double().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    h = torch.randn(3, 4, generator=g, dtype=torch.float64)
    out, _ = cell(x, h)
    h_prev = h
    for t in range(2):  # DARTSCell.cell in eval mode
        c0, h0 = torch.split(torch.cat([x[t], h_prev], -1).mm(cell.w0), 4, dim=-1)
        states = [highway(h_prev, c0, torch.tanh(h0))]
        for i, (name, pred) in enumerate(genotype.cells["recurrent"]):
            c, z = torch.split(states[pred].mm(cell.ws[i]), 4, dim=-1)
            fn = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda t: t}[name]
            states.append(states[pred] + c.sigmoid() * (fn(z) - states[pred]))
        h_prev = torch.mean(torch.stack([states[i] for i in genotype.concat["recurrent"]], -1), -1)
        torch.testing.assert_close(out[t], h_prev, rtol=1e-10, atol=1e-12)
    with torch.device("meta"):
        model = build_recurrent_model(genotype, 10_000, 850)
    assert count_parameters(model) == 22_960_000 and round(count_parameters(model) / 1e6) == 23


def test_supernet_shares_alpha_across_stacked_cells_and_ties_its_decoder():
    net = RecurrentSupernet(RNN, 20, 6, layers=2)
    assert net.decoder.weight is net.encoder.weight and net.cell_types == ["recurrent", "recurrent"]
    weights = torch.softmax(torch.zeros(36, 5), -1)
    logits, finals, raw = net(torch.randint(0, 20, (5, 3)), net.init_hidden(3), [weights, weights])
    assert logits.shape == (15, 20) and len(finals) == 2 and raw.shape == (5, 3, 6)


# ----- the recurrent problem and the estimators -------------------------------------------------------------
def _problem(dtype=torch.float64):
    torch.manual_seed(0)
    net = RecurrentSupernet(RNN, 12, 4).to(dtype)
    activation = Softmax()
    activation.bind(RNN)
    alphas = torch.nn.ParameterDict({"recurrent": torch.nn.Parameter(torch.randn(36, 5, dtype=dtype))})
    return RecurrentProblem(net, alphas, activation, tar=0.0)


def test_second_order_on_segments_is_the_derivative_through_the_virtual_step():
    """Every forward of the estimator starts from the segments' carried states: with the exact product the
    estimate is d/dalpha L_val(w - xi (grad_w L_train(w, alpha) + lambda w), alpha), computed by autograd."""
    problem = _problem()
    g = torch.Generator().manual_seed(4)
    data = torch.randint(0, 12, (7, 3), generator=g)
    hidden = [torch.randn(3, 4, generator=g, dtype=torch.float64)]
    train, val = Segment(data[:5], data[1:6], hidden), Segment(data[1:6], data[2:7], [-hidden[0]])
    xi, decay = 0.3, 0.01
    opt = torch.optim.SGD(problem.weights, lr=xi, weight_decay=decay)
    from dnas.bilevel.problem import StepContext

    ctx = StepContext(weight_lr=xi, weight_optimizer=opt)
    for p in problem.arch:
        p.grad = None
    SecondOrder(hvp="exact", clip=1e9).arch_gradient(problem, train, val, ctx)
    got = problem.arch[0].grad.clone()
    assert val.carried is not None  # the validation stream continues from the objective's forward

    weights, alpha = problem.weights, problem.arch[0]
    loss_train, _ = problem.loss(train)
    grads = torch.autograd.grad(loss_train, weights, create_graph=True)
    shifted = [w - xi * (gw + decay * w) for w, gw in zip(weights, grads, strict=True)]
    originals = [w.detach().clone() for w in weights]
    # evaluate L_val at the shifted weights through torch.func.functional_call
    names = [n for n, p in problem.net.named_parameters() if p.requires_grad]
    params = dict(zip(names, shifted, strict=True))
    inputs, targets = val
    logits, _, _ = torch.func.functional_call(problem.net, params, (inputs, val.hidden,
                                                                     [torch.softmax(alpha, -1)]))
    want = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, targets.reshape(-1)), alpha)[0]
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)
    assert all(torch.equal(w, o) for w, o in zip(weights, originals, strict=True))


# ----- searches ---------------------------------------------------------------------------------------------
def _search(corpus_dir, tmp_path, method="darts", name="run", epochs=2, extra=()):
    cfg = resolve_config({"space": "rnn", "method": method, "dataset": str(corpus_dir), "epochs": epochs,
                          "batch_size": 4}, [*TINY, *extra])
    return Search(cfg, tmp_path / name, progress=False)


def test_recurrent_search_writes_the_run_directory_with_the_collapse_diagnostics(corpus_dir, tmp_path):
    search = _search(corpus_dir, tmp_path)
    genotype = search.run()
    out = tmp_path / "run"
    assert {"config.yaml", "env.json", "metrics.jsonl", "checkpoint.pt", "genotype.json", "results.json"} <= {
        p.name for p in out.iterdir()}
    assert Genotype.load(out / "genotype.json") == genotype and len(genotype.cells["recurrent"]) == 8
    epochs = read_metrics(out, "epoch")
    assert len(epochs) == 2 and all(math.isfinite(r["valid_ppl"]) for r in epochs)
    results = json.loads((out / "results.json").read_text())
    free = sum(op in ("none", "identity") for op, _ in genotype.cells["recurrent"])
    assert results["parameter_free"] == free and set(results["margin"]) == {"recurrent"}
    assert 0 <= results["entropy"]["recurrent"] <= 1 and results["arch_steps"] == results["steps"]
    steps = read_metrics(out, "step")
    assert steps and "val_loss" in steps[0] and all(0 <= r["train_acc"] <= 1 for r in steps)


def test_interrupted_recurrent_search_resumes_to_the_same_result(corpus_dir, tmp_path, interrupt_at):
    extra = ["checkpoint_every=3"]
    reference = _search(corpus_dir, tmp_path, name="ref", extra=extra)
    g_ref = reference.run()
    interrupt_at(Search, 7)
    with pytest.raises(DnasError, match="interrupted; the search is saved"):
        _search(corpus_dir, tmp_path, name="resumed", extra=extra).run()
    interrupt_at(Search, None)
    resumed = _search(corpus_dir, tmp_path, name="resumed", extra=extra)
    assert resumed.run() == g_ref
    assert torch.equal(resumed.problem.alphas["recurrent"], reference.problem.alphas["recurrent"])
    for p, q in zip(resumed.problem.weights, reference.problem.weights, strict=True):
        assert torch.equal(p, q)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "ref")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "resumed")]


@pytest.mark.parametrize("method", ["darts-2nd", "amended-darts", "lambda-darts", "darts-prime"])
def test_every_recurrent_preset_searches(corpus_dir, tmp_path, method):
    extra = {"lambda-darts": ["hidden_size=8"],  # (its preset sets 200 units)
             # the Fisher trace of this tiny model stays above the initial threshold for many steps: start higher
             "darts-prime": ["schedule.threshold=1000"]}.get(method, [])
    search = _search(corpus_dir, tmp_path, method=method, epochs=2, extra=extra)
    search.run()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    alpha = search.problem.alphas["recurrent"].detach()
    assert results["arch_steps"] >= 1 and torch.isfinite(alpha).all()
    if method == "lambda-darts":  # two stacked cells; their alignment is logged and lambda_t ramps
        steps = read_metrics(tmp_path / "run", "step")
        assert len(search.problem.net.cells) == 2 and any("alignment.recurrent" in r for r in steps)
        assert steps[-1]["weight_regularizers.0.lambda_t"] > 0
    if method == "darts-prime":  # the Fisher schedule skips most architecture steps
        assert results["arch_steps"] < results["steps"]


def test_recurrent_search_refusals_are_one_sentence(corpus_dir, capsys):
    base = ["search", "--space", "rnn", "--dataset", str(corpus_dir), "--quiet"]
    cases = [
        (["--method", "pr-darts"], "PR-DARTS is defined on CNN cells only"),
        (["--method", "gdas"], "gdas has no version for the rnn space"),
        (["image_size=16"], "image_size does not apply to the rnn space"),
        (["--method", "lambda-darts", "layers=1"], "weight regularizer lambda aligns"),
        (["activation=gumbel"], "activation gumbel is not available on the rnn space"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["search", "--space", "nb201", "bptt=20"]) == 2
    assert "bptt applies to the recurrent space" in capsys.readouterr().err
    assert main(["search", "--space", "rnn", "--quiet"]) == 2
    assert "searches a text corpus" in capsys.readouterr().err


def test_methods_lists_only_what_runs_on_the_recurrent_space(capsys):
    assert main(["methods", "--space", "rnn"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.split("components")[0].splitlines() if line and not line[0].isspace()}
    assert listed == {"darts", "darts-2nd", "amended-darts", "lambda-darts", "darts-prime"}


# ----- retraining ---------------------------------------------------------------------------------------
def _train_cfg(corpus_dir, **flags):
    items = ["hidden_size=8", "bptt=6", "test_batch_size=2", "log_every=2", *[f"{k}={v}" for k, v in flags.items()]]
    return resolve_train_config("DARTS_V2_RNN", {"dataset": str(corpus_dir), "epochs": 2, "batch_size": 4}, items)


def test_a_recurrent_genotype_trains_and_reports_perplexities(corpus_dir, tmp_path):
    cfg, resolved = _train_cfg(corpus_dir)
    assert cfg.preset == "darts-ptb" and cfg.lr == 20.0 and cfg.weight_decay == 8e-7 and cfg.dropout_e == 0.1
    result = Trainer(cfg, resolved.genotype, tmp_path / "train", progress=False).run()
    assert result is not None and math.isfinite(result["test_ppl"]) and result["valid_ppl"] > 1
    assert result["params"] == count_parameters(build_recurrent_model(resolved.genotype, result["vocabulary"], 8))
    epochs = read_metrics(tmp_path / "train", "epoch")
    assert [r["optimizer"] for r in epochs] == ["sgd", "sgd"] and "train_loss" in epochs[0]


def test_nt_asgd_switches_after_nonmono_worse_epochs_and_keeps_the_best_weights(corpus_dir, monkeypatch):
    cfg, resolved = _train_cfg(corpus_dir, nonmono=2)
    step = LanguageTrainStep(cfg, resolved.genotype)
    losses = iter([5.0, 4.0, 4.5, 4.2, 4.1, 3.9])  # epoch 3: 4.2 < min(5.0); epoch 4: 4.1 > min(5.0, 4.0)
    monkeypatch.setattr(step, "evaluate", lambda data: next(losses))
    optimizers = [step.end_epoch(e)["optimizer"] for e in range(6)]
    # the switch needs len(history) > nonmono and the loss above the best of all but the last nonmono epochs
    assert optimizers == ["sgd", "sgd", "sgd", "sgd", "asgd", "asgd"]
    assert step.best_loss == 3.9 and isinstance(step.optimizer, torch.optim.ASGD)


def test_training_refuses_image_keys_for_a_recurrent_genotype(corpus_dir, capsys):
    assert main(["train", "DARTS_V2_RNN", "--dataset", str(corpus_dir), "--quiet", "cutout=16"]) == 2
    err = capsys.readouterr().err
    assert "cutout does not apply to a language model" in err and len(err.strip().splitlines()) == 1
