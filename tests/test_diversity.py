"""scripts/diversity.py against hand computations and fairseq's translation_moe/score.py."""

import importlib.util
import os

import fairseq
import pytest
from sacrebleu import corpus_bleu

from conftest import load_script

diversity = load_script("diversity")

REFERENCES = ["a man rides a red bike", "two dogs play in the snow", "the woman is reading a book", "kids jump into a pool"]
HYPOTHESES = [
    ["a man rides a red bike", "a man is riding a bike", "a person rides a red bicycle"],
    ["two dogs play in snow", "two dogs play in snow", "two dogs play in snow"],
    ["a woman reads a book", "the woman is reading a book", "a lady reads"],
    ["children jump in a pool", "kids jump into the water", "kids are jumping into a pool"],
]


def write_generate_output(path, hypotheses=HYPOTHESES, bpe=False):
    lines = []
    for i, (reference, hypos) in enumerate(zip(REFERENCES, hypotheses)):
        lines += [f"S-{i}\tsource {i}", f"T-{i}\t{reference}"]
        for rank, hypo in enumerate(hypos):
            shown = hypo.replace("ing ", "@@ ing ") if bpe else hypo
            lines += [f"H-{i}\t{-0.1 * rank}\t{shown}", f"D-{i}\t{-0.1 * rank}\t{hypo}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def load_score_py():
    path = os.path.join(os.path.dirname(fairseq.__file__), "examples", "translation_moe", "score.py")
    spec = importlib.util.spec_from_file_location("translation_moe_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pairwise_bleu_agrees_with_fairseqs_translation_moe_score(tmp_path):
    output = write_generate_output(tmp_path / "gen.out")
    score = load_score_py()
    _, _, hypos, _ = score.load_sys([output])
    references, hypotheses = diversity.read_generate_output([output])
    ids = sorted(hypotheses)
    metrics = diversity.diversity([references[i] for i in ids], [hypotheses[i] for i in ids], tokenize="none")
    assert metrics["pairwise_bleu"] == pytest.approx(score.pairwise(hypos), abs=1e-9)


def test_average_and_oracle_bleu_and_identical_share(tmp_path):
    metrics = diversity.diversity(REFERENCES, HYPOTHESES)
    by_rank = [corpus_bleu([h[k] for h in HYPOTHESES], [REFERENCES]).score for k in range(3)]
    assert metrics["average_bleu"] == pytest.approx(sum(by_rank) / 3)
    # the oracle picks, per source, the hypothesis closest to the reference
    # (sentence BLEU of the last source: 23.6, 39.8 and 32.5 for its three hypotheses)
    oracle = [HYPOTHESES[0][0], HYPOTHESES[1][0], HYPOTHESES[2][1], HYPOTHESES[3][1]]
    assert metrics["oracle_bleu"] == pytest.approx(corpus_bleu(oracle, [REFERENCES]).score)
    assert metrics["oracle_bleu"] >= max(by_rank)
    assert metrics["all_identical"] == pytest.approx(0.25)  # the dogs
    assert 0 < metrics["pairwise_bleu"] < 100


def test_identical_hypotheses_are_not_diverse_and_more_variety_lowers_pairwise_bleu():
    same = diversity.diversity(REFERENCES, [[r, r, r] for r in REFERENCES])
    assert same["pairwise_bleu"] == pytest.approx(100.0) and same["all_identical"] == 1.0
    assert same["pairwise_bleu_mean_of_pairs"] == pytest.approx(100.0)
    varied = diversity.diversity(REFERENCES, HYPOTHESES)
    assert varied["pairwise_bleu"] < same["pairwise_bleu"]


def test_the_command_line_prints_a_table_row_from_bpe_output(tmp_path, capsys):
    output = write_generate_output(tmp_path / "gen.out", bpe=True)
    # H- lines only (D- removed): the BPE must be undone before scoring
    text = "\n".join(line for line in open(output, encoding="utf-8").read().splitlines() if not line.startswith("D-"))
    (tmp_path / "h_only.out").write_text(text + "\n", encoding="utf-8")
    assert diversity.main([str(tmp_path / "h_only.out"), "--remove-bpe", "--name", "nbest", "--header"]) == 0
    with_bpe_removed = capsys.readouterr().out.splitlines()[-1]
    assert diversity.main([output, "--name", "nbest"]) == 0
    from_detokenized = capsys.readouterr().out.splitlines()[-1]
    assert with_bpe_removed == from_detokenized and with_bpe_removed.startswith("| nbest | 3 |")
    (tmp_path / "not_generate_output.txt").write_text("hello\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no H- or D- lines"):
        diversity.main([str(tmp_path / "not_generate_output.txt")])
