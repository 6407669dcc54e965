"""scripts/demo_figures.py: the figures the demo prints about its latent code."""

import pytest

from conftest import load_script

demo_figures = load_script("demo_figures")


def test_own_input_matches_counts_outputs_closest_to_their_own_input():
    inputs = ["the cat sat on the mat", "a dog ran in the park", "birds sing loudly today"]
    # 0: right; 1: closer to input 0 than to its own; 2: shares nothing with anything
    outputs = ["the cat sat", "the cat sat on a mat", "nothing here"]
    assert demo_figures.own_input_matches(inputs, outputs) == pytest.approx(1 / 3)
    assert demo_figures.own_input_matches(inputs, inputs) == 1.0
    # the same output for every input matches at most the input it is closest to
    assert demo_figures.own_input_matches(inputs, [inputs[1]] * 3) == pytest.approx(1 / 3)


def test_unigram_f1_is_lower_cased_and_symmetric():
    a, b = demo_figures.words("The Cat sat ."), demo_figures.words("the cat ran")
    assert demo_figures.unigram_f1(a, b) == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert demo_figures.unigram_f1(a, b) == demo_figures.unigram_f1(b, a)
    assert demo_figures.unigram_f1(a, demo_figures.words("dog")) == 0.0


def test_figures_from_generate_outputs(tmp_path, capsys):
    rec = tmp_path / "rec.txt"
    rec.write_text("S-0\tthe cat sat\nH-0\t-0.1\tthe cat sat\nD-0\t-0.1\tthe cat sat\n"
                   "S-1\ta dog ran\nH-1\t-0.1\tthe cat sat\nD-1\t-0.1\tthe cat sat\n", encoding="utf-8")
    prior = tmp_path / "prior.txt"
    prior.write_text("D-0\t-1\ta b\nD-1\t-1\ta b\nD-2\t-1\tc d\n", encoding="utf-8")
    homotopy = tmp_path / "homotopy.txt"
    homotopy.write_text("D-0\t-1\tthe cat sat\nD-0\t-1\tx y\nD-0\t-1\tthe cat sat\n", encoding="utf-8")
    validate = tmp_path / "validate.log"
    validate.write_text("x | valid on 'test' subset | loss 7.5 | kl 12.3 | ppl 180.5 | au 20\n", encoding="utf-8")
    out_json = tmp_path / "figures.json"
    demo_figures.main(["--reconstructions", str(rec), "--prior", str(prior), "--homotopy", str(homotopy),
                       "--validate", str(validate), "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert "distinct reconstructions: 1 of 2 (50.0%)" in printed
    assert "matches its own input best: 50.0%" in printed
    assert "distinct prior samples: 2 of 3" in printed
    # both inputs reconstruct to "the cat sat", so both ends are their reconstructions
    assert "distinct sentences on the homotopy: 2 of 3 (ends are the reconstructions of its inputs: yes)" in printed
    assert "ppl 180.5" in printed and "kl 12.3" in printed and "au 20" in printed
