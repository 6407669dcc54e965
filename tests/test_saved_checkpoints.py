"""Checkpoints saved by an earlier version of the code, one per model family, load and
decode as they did then (``saved_checkpoints.py`` says how they were made), so long
runs resume and evaluate unchanged across refactorings."""

import json
import os
import tempfile

import pytest

import saved_checkpoints as saved

with open(saved.EXPECTED) as f:
    EXPECTED = json.load(f)


@pytest.fixture(scope="module")
def data():
    with tempfile.TemporaryDirectory() as workdir:
        yield {kind: saved.corpus(kind, workdir) for kind in saved.DECODINGS}


def hypotheses(lines):
    """(id, score, text) with the score rounded: the text must match exactly, the
    log-probability to 4 decimals."""
    out = []
    for line in lines:
        name, score, text = line.split("\t")
        out.append((name, round(float(score), 4), text))
    return out


@pytest.mark.parametrize("family", sorted(saved.FAMILIES))
def test_a_checkpoint_saved_earlier_decodes_and_scores_as_it_did(family, data):
    kind, _ = saved.FAMILIES[family]
    now = saved.decode(family, data[kind], os.path.join(saved.DIRECTORY, f"{family}.pt"))
    then = EXPECTED[family]
    assert set(now) == set(then)
    for mode in saved.DECODINGS[kind]:
        assert hypotheses(now[mode]) == hypotheses(then[mode]), mode
    assert now["validate_kl"] == pytest.approx(then["validate_kl"], abs=1e-3)
