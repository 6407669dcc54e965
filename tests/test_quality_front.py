"""scripts/quality_front.py on synthetic fairseq-generate outputs whose figures are
computed here independently with sacreBLEU."""

import os

import pytest
from sacrebleu import corpus_bleu

from conftest import load_script

front = load_script("quality_front")

REFERENCES = ["a man rides a red bike", "two dogs play in the snow", "a woman reads a book"]


def write(path, hypotheses):
    """fairseq-generate lines: S-, T-, then K H-/D- lines per source."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        for i, (reference, hyps) in enumerate(zip(REFERENCES, hypotheses)):
            handle.write(f"S-{i}\tsource {i}\nT-{i}\t{reference}\n")
            for h in hyps:
                handle.write(f"H-{i}\t-0.5\t{h}\nD-{i}\t-0.5\t{h}\n")


VARIED = [["a man rides a bike", "a man on a red bike", "one man rides"],
          ["two dogs play in snow", "dogs are playing", "two dogs in the snow"],
          ["a woman reads", "a lady reads a book", "a woman is reading a book"]]


def test_the_front_has_one_row_per_knob_value_with_independent_figures(tmp_path, capsys):
    folder = str(tmp_path)
    write(f"{folder}/copy/front/beam-3.out", [[r] * 3 for r in REFERENCES])
    for value in ("2", "0.5", "1"):
        write(f"{folder}/cvae/front/temperature-{value}.out", VARIED)
    os.makedirs(f"{folder}/moe")  # a system without front outputs is left out
    png = str(tmp_path / "front.png")
    assert front.main([folder, "--png", png]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| copy", "beam", "3"], ["| cvae", "temperature", "0.5"], ["| cvae", "temperature", "1"],
        ["| cvae", "temperature", "2"]]
    # copies of the reference: everything 100, all lists identical
    assert rows[0].endswith("| 100.00 | 100.00 | 100.00 | 100.0% |")
    # the varied lists: average of the three corpus BLEUs; pairwise over ordered pairs
    average = sum(corpus_bleu([h[k] for h in VARIED], [REFERENCES]).score for k in range(3)) / 3
    system, reference = [], []
    for h in VARIED:
        for a in range(3):
            for b in range(3):
                if a != b:
                    system.append(h[b])
                    reference.append(h[a])
    pairwise = corpus_bleu(system, [reference]).score
    cells = rows[1].split(" | ")
    assert float(cells[3]) == pytest.approx(average, abs=0.006)
    assert float(cells[4]) == pytest.approx(pairwise, abs=0.006)
    assert cells[6] == "0.0% |"
    assert os.path.getsize(png) > 1000


def test_a_folder_without_front_outputs_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no <system>/front"):
        front.main([str(tmp_path)])
