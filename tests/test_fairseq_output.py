"""fairseq_vrae.fairseq_output on sample lines of fairseq-generate, -validate and -train."""

import json

import pytest

from fairseq_vrae import fairseq_output as fo

GENERATE = [
    "2026-01-01 | INFO | fairseq_cli.generate | loading model\n",
    "S-3\tein Mann fährt Rad\n",
    "T-3\ta man rides a bike\n",
    "H-3\t-0.41\ta man rides a bike\n",
    "D-3\t-0.41\ta man rides a bike\n",
    "P-3\t-0.1 -0.2 -0.3\n",
    "H-3\t-0.90\t\n",
    "D-3\t-0.90\t\n",
    "Generate test with beam=5: BLEU4 = 30.1\n",
]


def test_generate_records_keep_file_order_scores_and_empty_hypotheses():
    output = fo.parse_generate(GENERATE)
    assert output.skipped == 2
    assert output.texts("D") == {3: ["a man rides a bike", ""]}
    assert output.texts("T") == {3: ["a man rides a bike"]}
    assert [r.score for r in output.records if r.kind == "H"] == [-0.41, -0.90]


def test_a_hypothesis_line_without_a_score_is_an_error_naming_the_line():
    with pytest.raises(fo.FairseqOutputError, match="gen.out:2"):
        fo.parse_generate(["S-0\tx\n", "H-0\tno score here\n"], "gen.out")
    with pytest.raises(fo.FairseqOutputError, match="malformed"):
        fo.parse_generate(["H-1 -0.5 text without tabs\n"])


def test_validate_metrics_come_from_the_last_result_line(tmp_path):
    log = tmp_path / "test.log"
    log.write_text("x | valid on 'test' subset | loss 9 | ppl 999\n"
                   "x | INFO | valid | valid on 'test' subset | loss 7.5 | kl 12.3 | au 20 | note n/a\n")
    assert fo.validate_metrics(str(log)) == {"loss": 7.5, "kl": 12.3, "au": 20.0}
    assert fo.parse_validate_line(log.read_text().splitlines()[1])[1] == ["note n/a"]
    (tmp_path / "empty.log").write_text("training\n")
    with pytest.raises(fo.FairseqOutputError, match="no fairseq-validate result line"):
        fo.validate_metrics(str(tmp_path / "empty.log"))


def test_json_log_records_are_grouped_by_logger_and_broken_json_is_counted(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("2026 | INFO | fairseq_cli.train | not a record\n"
                   f"2026 | INFO | train_inner | {json.dumps({'num_updates': '1', 'wps': '10'})}\n"
                   "2026 | INFO | train_inner | {\"num_updates\": \n"
                   f"2026 | INFO | valid | {json.dumps({'valid_kl': '3.5'})}\n")
    read = fo.read_json_log([str(log)])
    assert read.records["train_inner"] == [{"num_updates": "1", "wps": "10"}]
    assert read.records["valid"] == [{"valid_kl": "3.5"}]
    assert read.skipped == 1


def test_generate_bleu_reads_both_scorers_lines_and_is_none_without_one(tmp_path):
    bleu, sacrebleu, none = tmp_path / "bleu.txt", tmp_path / "sacrebleu.txt", tmp_path / "none.txt"
    bleu.write_text("2026 | INFO | fairseq_cli.generate | Generate test with beam=5: BLEU4 = 30.10, 60.1/35.2/22.0/14.3\n")
    sacrebleu.write_text("x | Generate test with beam=5: BLEU = 35.12 66.1/41.2/27.9/19.3 (BP = 1.000)\n")
    none.write_text("x | INFO | fairseq_cli.generate | loading model\n")
    assert fo.generate_bleu(str(bleu)) == 30.10
    assert fo.generate_bleu(str(sacrebleu)) == 35.12
    assert fo.generate_bleu(str(none)) is None


def test_training_speed_is_the_median_without_each_logs_first_record(tmp_path):
    first, second = tmp_path / "pretrain.log", tmp_path / "train.log"
    for path, speeds in ((first, ["1", "100", "300"]), (second, ["2", "500"])):
        path.write_text("".join(f"x | INFO | train_inner | {json.dumps({'wps': w})}\n" for w in speeds)
                        + f"x | INFO | valid | {json.dumps({'valid_wps': '9999'})}\n")
    assert fo.train_tokens_per_second([str(first), str(second), str(tmp_path / "absent.log")]) == 300.0
    assert fo.train_tokens_per_second([str(tmp_path / "absent.log")]) is None


def test_wall_seconds_add_up_the_stages(tmp_path):
    (tmp_path / "wall").write_text("60.5\n\n30\n")
    assert fo.wall_seconds(str(tmp_path / "wall")) == 90.5


def test_trained_epochs_are_the_last_finished_and_the_lowest_validation_loss_later_on_ties(tmp_path):
    log = tmp_path / "train.log"
    lines = [("train_inner", {"epoch": 1, "wps": "5"})]
    for epoch, loss in ((1, "5.0"), (2, "4.1"), (3, "4.3"), (4, "4.1"), (5, "4.6")):
        lines += [("train", {"epoch": epoch, "train_loss": "6"}), ("valid", {"epoch": epoch, "valid_loss": loss})]
    log.write_text("".join(f"x | INFO | {name} | {json.dumps(record)}\n" for name, record in lines))
    assert fo.trained_epochs(str(log)) == (5, 4)
    unvalidated = tmp_path / "unvalidated.log"
    unvalidated.write_text("".join(f"x | INFO | train | {json.dumps({'epoch': e})}\n" for e in (1, 2)))
    assert fo.trained_epochs(str(unvalidated)) == (2, None)
    (tmp_path / "plain.log").write_text("x | INFO | train | epoch 001 | loss 6\n")
    with pytest.raises(fo.FairseqOutputError, match="no end-of-epoch train record"):
        fo.trained_epochs(str(tmp_path / "plain.log"))


def test_the_learning_rate_an_epoch_ended_at_is_its_train_record_s(tmp_path):
    log = tmp_path / "train.log"
    records = [("train_inner", {"epoch": 2, "lr": "0.0009"}), ("train", {"epoch": 1, "train_lr": "0.0005"}),
               ("train", {"epoch": 2, "train_lr": "0.000423"}), ("valid", {"epoch": 2, "valid_loss": "4"})]
    log.write_text("".join(f"x | INFO | {name} | {json.dumps(record)}\n" for name, record in records))
    assert fo.epoch_learning_rate(str(log), 2) == 0.000423
    assert fo.epoch_learning_rate(str(log), 1) == 0.0005
    with pytest.raises(fo.FairseqOutputError, match="epoch 3"):
        fo.epoch_learning_rate(str(log), 3)
