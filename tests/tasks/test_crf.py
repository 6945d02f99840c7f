"""flaxtrainer.models.crf against brute-force enumeration of every tag sequence, scheme masks, packing."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrainer.models.crf import (
    CUT_AFTER,
    CUT_BEFORE,
    TRAIN_PENALTY,
    WORD,
    chain_flags,
    crf_chains,
    crf_decode,
    crf_marginals,
    crf_nll,
)
from flaxtrainer.tasks.schemes import allowed_transitions, get_scheme


def _params(rng, n):
    return {
        "transitions": jnp.asarray(rng.normal(size=(n, n)), jnp.float32),
        "start_transitions": jnp.asarray(rng.normal(size=n), jnp.float32),
        "end_transitions": jnp.asarray(rng.normal(size=n), jnp.float32),
    }


def _all_allowed(n):
    return allowed_transitions(None, [f"T{i}" for i in range(n)])


def _score(emissions, seq, params, masks, use_start=True, use_end=True):
    """Score of one tag sequence over the given emission rows (independent reference)."""
    t = np.where(masks.transitions, np.asarray(params["transitions"]), TRAIN_PENALTY)
    s = np.where(masks.start, np.asarray(params["start_transitions"]), TRAIN_PENALTY)
    e = np.where(masks.end, np.asarray(params["end_transitions"]), TRAIN_PENALTY)
    total = sum(float(emissions[i, y]) for i, y in enumerate(seq))
    total += sum(float(t[a, b]) for a, b in zip(seq, seq[1:]))
    total += float(s[seq[0]]) if use_start else 0.0
    total += float(e[seq[-1]]) if use_end else 0.0
    return total


def _brute_nll(emissions, gold, params, masks, **kw):
    n = emissions.shape[1]
    scores = [
        _score(emissions, seq, params, masks, **kw)
        for seq in itertools.product(range(n), repeat=len(gold))
    ]
    logz = float(np.logaddexp.reduce(scores))
    return logz - _score(emissions, list(gold), params, masks, **kw)


def _brute_best(emissions, params, masks):
    n = emissions.shape[1]
    seqs = list(itertools.product(range(n), repeat=emissions.shape[0]))
    return list(max(seqs, key=lambda seq: _score(emissions, seq, params, masks)))


def test_nll_equals_brute_force_3_tags_length_4():
    rng = np.random.default_rng(0)
    params, masks = _params(rng, 3), _all_allowed(3)
    emissions = rng.normal(size=(1, 4, 3)).astype(np.float32) * 2
    gold = np.array([[2, 0, 1, 1]])
    ones = np.ones((1, 4), np.int32)
    nll, count = crf_nll(
        jnp.asarray(emissions), jnp.asarray(gold), crf_chains(ones, ones), params, masks
    )
    assert int(count) == 4
    assert float(nll) == pytest.approx(_brute_nll(emissions[0], gold[0], params, masks), abs=1e-5)


def test_nll_skips_holes_and_restarts_at_a_second_segment():
    """Row: [special, w0, piece, w1, w2 | w3, w4, pad]: the hole (a continuation piece, and a
    special token) is skipped; the second segment (attention_mask 2) is its own sequence."""
    rng = np.random.default_rng(1)
    params, masks = _params(rng, 3), _all_allowed(3)
    emissions = rng.normal(size=(1, 8, 3)).astype(np.float32)
    positions = np.array([[0, 1, 0, 1, 1, 1, 1, 0]])
    segments = np.array([[1, 1, 1, 1, 1, 2, 2, 0]])
    tags = np.array([[-100, 1, 2, 0, 2, 1, 1, -100]])
    nll, count = crf_nll(
        jnp.asarray(emissions), tags, crf_chains(positions, segments), params, masks
    )
    e = emissions[0]
    expected = _brute_nll(e[[1, 3, 4]], [1, 0, 2], params, masks) + _brute_nll(
        e[[5, 6]], [1, 1], params, masks
    )
    assert int(count) == 5
    assert float(nll) == pytest.approx(expected, abs=1e-5)


def test_window_cut_flags_drop_start_and_end_scores():
    rng = np.random.default_rng(2)
    params, masks = _params(rng, 3), _all_allowed(3)
    emissions = rng.normal(size=(1, 4, 3)).astype(np.float32)
    gold = np.array([[0, 2, 2, 1]])
    ones = np.ones((1, 4), np.int32)
    flags = np.array([[WORD | CUT_BEFORE, WORD, WORD, WORD | CUT_AFTER]])
    nll, _ = crf_nll(jnp.asarray(emissions), gold, crf_chains(ones, ones, flags), params, masks)
    expected = _brute_nll(emissions[0], gold[0], params, masks, use_start=False, use_end=False)
    assert float(nll) == pytest.approx(expected, abs=1e-5)


def test_viterbi_equals_brute_force_argmax_and_marginals_sum_to_one():
    rng = np.random.default_rng(3)
    n = 3
    for trial in range(5):
        params = _params(rng, n)
        masks = _all_allowed(n)
        emissions = rng.normal(size=(2, 4, n)).astype(np.float32) * 2
        ones = np.ones((2, 4), np.int32)
        tags = crf_decode(jnp.asarray(emissions), crf_chains(ones, ones), params, masks)
        for row in range(2):
            assert tags[row].tolist() == _brute_best(emissions[row], params, masks), trial
    marginals = crf_marginals(jnp.asarray(emissions), crf_chains(ones, ones), params, masks)
    np.testing.assert_allclose(np.asarray(marginals).sum(-1), 1.0, atol=1e-5)


def test_viterbi_per_segment_matches_separate_rows():
    rng = np.random.default_rng(4)
    params, masks = _params(rng, 3), _all_allowed(3)
    emissions = rng.normal(size=(1, 7, 3)).astype(np.float32) * 2
    positions = np.array([[1, 1, 1, 0, 1, 1, 0]])
    segments = np.array([[1, 1, 1, 1, 2, 2, 0]])
    tags = np.asarray(
        crf_decode(jnp.asarray(emissions), crf_chains(positions, segments), params, masks)
    )[0]
    assert tags[3] == -1 and tags[6] == -1
    assert tags[:3].tolist() == _brute_best(emissions[0, :3], params, masks)
    assert tags[4:6].tolist() == _brute_best(emissions[0, 4:6], params, masks)


def test_scheme_masks_iob2():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    masks = allowed_transitions(get_scheme("IOB2"), labels)
    ix = {label: i for i, label in enumerate(labels)}
    assert not masks.transitions[ix["O"], ix["I-PER"]]
    assert not masks.transitions[ix["B-LOC"], ix["I-PER"]]
    assert not masks.transitions[ix["I-LOC"], ix["I-PER"]]
    assert masks.transitions[ix["B-PER"], ix["I-PER"]]
    assert masks.transitions[ix["I-PER"], ix["I-PER"]]
    assert masks.transitions[ix["I-PER"], ix["B-LOC"]]
    assert masks.start.tolist() == [True, True, False, True, False]
    assert masks.end.all()
    # IOBES: a chunk must be closed (B- -> O and B- -> end forbidden), S- may follow anything.
    iobes = ["O", "B-X", "I-X", "E-X", "S-X"]
    m = allowed_transitions(get_scheme("IOBES"), iobes)
    assert m.start.tolist() == [True, True, False, False, True]
    assert m.end.tolist() == [True, False, False, True, True]
    assert not m.transitions[1, 0] and m.transitions[1, 3] and m.transitions[3, 4]


def test_masked_transitions_forbid_o_then_i_per_even_against_the_emissions():
    labels = ["O", "B-PER", "I-PER"]
    masks = allowed_transitions(get_scheme("IOB2"), labels)
    params = {
        k: jnp.zeros(s)
        for k, s in [
            ("transitions", (3, 3)),
            ("start_transitions", (3,)),
            ("end_transitions", (3,)),
        ]
    }
    # Emissions strongly favour O, I-PER (and I-PER at the start of the second sentence).
    emissions = np.full((1, 5, 3), -5.0, np.float32)
    emissions[0, 0, 0] = 10.0
    emissions[0, 1, 2] = 10.0
    emissions[0, 2, 1] = 1.0
    emissions[0, 3, 2] = 10.0
    emissions[0, 4, 2] = 10.0
    segments = np.array([[1, 1, 1, 2, 2]])
    ones = np.ones((1, 5), np.int32)
    tags = np.asarray(
        crf_decode(jnp.asarray(emissions), crf_chains(ones, segments), params, masks)
    )[0]
    decoded = [labels[t] for t in tags]
    scheme = get_scheme("IOB2")
    assert scheme.violations(decoded[:3]) == [] and scheme.violations(decoded[3:]) == []
    assert decoded[1] != "I-PER" or decoded[0] != "O"
    assert decoded[3] == "B-PER"  # start -> I-PER is forbidden: the cheapest fix
    # The forbidden gold sequence is left out of the loss instead of costing ~1e4.
    gold = np.array([[0, 2, 1, 1, 2]])
    nll, count = crf_nll(jnp.asarray(emissions), gold, crf_chains(ones, segments), params, masks)
    assert int(count) == 2  # only the valid second sentence (B-PER, I-PER) counts
    assert 0 <= float(nll) < 1.0


def test_packing_gives_the_same_loss_and_tags_as_separate_rows():
    rng = np.random.default_rng(5)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    masks = allowed_transitions(get_scheme("IOB2"), labels)
    params = _params(rng, 5)
    lengths = [4, 3, 5]
    sentences = [rng.normal(size=(n, 5)).astype(np.float32) for n in lengths]
    golds = [np.array([1, 2, 0, 3]), np.array([0, 0, 3]), np.array([3, 4, 4, 0, 1])]
    # Separate rows, width 6, padded.
    width = 6
    sep_e = np.zeros((3, width, 5), np.float32)
    sep_t = np.full((3, width), -100)
    sep_m = np.zeros((3, width), np.int32)
    for i, (e, g) in enumerate(zip(sentences, golds)):
        sep_e[i, : len(e)], sep_t[i, : len(g)], sep_m[i, : len(e)] = e, g, 1
    # One packed row with segments 1, 2, 3 and a pad at the end.
    packed_e = np.concatenate([*sentences, np.zeros((1, 5), np.float32)])[None]
    packed_t = np.concatenate([*golds, [-100]])[None]
    packed_m = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [[0]])[None]
    sep_c, packed_c = crf_chains(sep_m, sep_m), crf_chains(packed_m, packed_m)
    sep = crf_nll(jnp.asarray(sep_e), sep_t, sep_c, params, masks)
    packed = crf_nll(jnp.asarray(packed_e), packed_t, packed_c, params, masks)
    assert int(sep[1]) == int(packed[1]) == 12
    assert float(packed[0]) == pytest.approx(float(sep[0]), abs=1e-5)
    sep_tags = np.asarray(crf_decode(jnp.asarray(sep_e), sep_c, params, masks))
    packed_tags = np.asarray(crf_decode(jnp.asarray(packed_e), packed_c, params, masks))
    expected = np.concatenate([sep_tags[i, :n] for i, n in enumerate(lengths)])
    assert packed_tags[0, :-1].tolist() == expected.tolist()


def test_nll_gradient_is_finite_and_matches_marginals():
    """d NLL / d emissions = marginals - one-hot(gold): an independent check of both."""
    rng = np.random.default_rng(6)
    labels = ["O", "B-PER", "I-PER"]
    masks = allowed_transitions(get_scheme("IOB2"), labels)
    params = _params(rng, 3)
    emissions = jnp.asarray(rng.normal(size=(1, 4, 3)), jnp.float32)
    gold = np.array([[1, 2, 0, 1]])
    ones = np.ones((1, 4), np.int32)
    chains = crf_chains(ones, ones)
    grad = jax.grad(lambda e: crf_nll(e, gold, chains, params, masks)[0])(emissions)
    marginals = crf_marginals(emissions, chains, params, masks)
    np.testing.assert_allclose(grad, marginals - jax.nn.one_hot(gold, 3), atol=1e-5)
    grads = jax.grad(lambda p: crf_nll(emissions, gold, chains, p, masks)[0])(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())
    assert float(grads["transitions"][0, 2]) == 0.0  # forbidden O -> I-PER learns nothing


def test_chain_flags_mark_window_cuts():
    masks = [np.array([0, 1, 1, 0, 0]), np.array([0, 0, 1, 1, 0]), np.array([0, 0, 1, 0])]
    flags = chain_flags(masks)
    assert flags[0].tolist() == [0, WORD, WORD | CUT_AFTER, 0, 0]
    assert flags[1].tolist() == [0, 0, WORD | CUT_BEFORE, WORD | CUT_AFTER, 0]
    assert flags[2].tolist() == [0, 0, WORD | CUT_BEFORE, 0]
    assert chain_flags([np.array([0, 1, 1, 0])])[0].tolist() == [0, WORD, WORD, 0]
