"""scripts/prepare_pairs.sh's module: per-language tokenisation, joint BPE, aligned pairs."""

import os

import pytest
from fairseq.data import Dictionary, data_utils
from fairseq.data.encoders.fastbpe import fastBPE, fastBPEConfig
from fairseq.data.encoders.moses_tokenizer import MosesTokenizer, MosesTokenizerConfig
from sacremoses import MosesPunctNormalizer

from fairseq_vrae import prepare_pairs

EN = [
    "The quick brown fox doesn't jump over the lazy dog.",
    "Prices rose 4.5% in 2023, said the economist.",
    "A man in a red shirt is climbing a rock.",
    "Two dogs play in the snow.",
] * 6
DE = [
    "Der schnelle braune Fuchs springt nicht über den faulen Hund.",
    "Die Preise stiegen 2023 um 4,5 %, sagte der Ökonom.",
    "Ein Mann in einem roten Hemd klettert auf einen Felsen.",
    "Zwei Hunde spielen im Schnee.",
] * 6


def write(path, lines):
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def write_pair(folder, split, sources, targets):
    write(folder / f"{split}.en", sources)
    write(folder / f"{split}.de", targets)
    return str(folder / split)


def prepare(tmp_path, *argv):
    destdir = str(tmp_path / "bin")
    return prepare_pairs.main(["-s", "en", "-t", "de", *argv, "--destdir", destdir]), destdir


def pairs_of(destdir, split):
    dictionary = Dictionary.load(os.path.join(destdir, "dict.en.txt"))
    sides = [data_utils.load_indexed_dataset(os.path.join(destdir, f"{split}.en-de.{lang}"), dictionary) for lang in ("en", "de")]
    return [(dictionary.string(sides[0][i]), dictionary.string(sides[1][i])) for i in range(len(sides[0]))]


def test_each_side_in_its_language_with_one_joint_bpe_and_dictionary(tmp_path):
    train = write_pair(tmp_path, "train", EN, DE)
    code, destdir = prepare(tmp_path, "--trainpref", train, "--validpref", train, "--bpe-merges", "80")
    assert code == 0
    with open(os.path.join(destdir, "dict.en.txt")) as en, open(os.path.join(destdir, "dict.de.txt")) as de:
        assert en.read() == de.read()  # --joined-dictionary
    bpe = fastBPE(fastBPEConfig(bpe_codes=os.path.join(destdir, "bpecodes")))
    pairs = pairs_of(destdir, "valid")
    assert len(pairs) == len(EN)
    assert any("@@" in en or "@@" in de for en, de in pairs)  # subwords were used
    for (en, de), raw_en, raw_de in zip(pairs, EN, DE):
        for text, raw, lang in ((en, raw_en, "en"), (de, raw_de, "de")):
            moses = MosesTokenizer(MosesTokenizerConfig(source_lang=lang, target_lang=lang))
            assert moses.decode(bpe.decode(text)) == MosesPunctNormalizer(lang=lang).normalize(raw).strip()
    # German's decimal comma and its own rules: tokenised as German, not English
    assert "4,5" in bpe.decode(pairs[1][1]).replace("@@ ", "")
    # one model learned on both sides: merges of English-only and of German-only strings
    with open(os.path.join(destdir, "bpecodes"), encoding="utf-8") as handle:
        merged = ["".join(line.split()[:2]).replace("</w>", "") for line in handle]
    english, german = " ".join(EN), " ".join(DE)
    assert any(m in german and m not in english for m in merged)
    assert any(m in english and m not in german for m in merged)


def test_empty_and_over_long_sides_drop_the_whole_pair(tmp_path):
    sources = ["A dog runs.", "", "The cat sleeps.", "word " * 30, "Birds sing."]
    targets = ["Ein Hund rennt.", "Leer.", "", "Wort.", "Vögel singen."]
    train = write_pair(tmp_path, "train", sources, targets)
    code, destdir = prepare(tmp_path, "--trainpref", train, "--bpe", "none", "--max-tokens-per-line", "20")
    assert code == 0
    assert pairs_of(destdir, "train") == [("A dog runs .", "Ein Hund rennt ."), ("Birds sing .", "Vögel singen .")]


def test_sides_of_different_lengths_are_refused(tmp_path, caplog):
    train = write_pair(tmp_path, "train", EN, DE[:-1])
    code, _ = prepare(tmp_path, "--trainpref", train)
    assert code == 2
    assert "has 24 lines but" in caplog.text and "has 23" in caplog.text and "train.de" in caplog.text


def test_an_existing_destination_is_refused_with_a_message(tmp_path, caplog):
    train = write_pair(tmp_path, "train", EN, DE)
    assert prepare(tmp_path, "--trainpref", train, "--bpe", "none")[0] == 0
    assert prepare(tmp_path, "--trainpref", train, "--bpe", "none")[0] == 2
    assert "already holds binarized data (dict.en.txt, dict.de.txt)" in caplog.text


def test_bad_bytes_name_the_file_and_line(tmp_path, caplog):
    write(tmp_path / "train.en", EN[:3])
    (tmp_path / "train.de").write_bytes("Ein Hund.\nZwei\xff Katzen.\nDrei.\n".encode("latin-1"))
    code, _ = prepare(tmp_path, "--trainpref", str(tmp_path / "train"))
    assert code == 2 and "train.de, line 2: not valid UTF-8" in caplog.text


def test_the_output_trains_with_fairseqs_translation_task(tmp_path):
    import helpers

    train = write_pair(tmp_path, "train", EN, DE)
    code, destdir = prepare(tmp_path, "--trainpref", train, "--validpref", train, "--bpe-merges", "50")
    assert code == 0
    records = helpers.run_train([
        destdir, "--task", "translation", "-s", "en", "-t", "de", "--arch", "transformer",
        "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--share-all-embeddings", "--optimizer", "adam", "--lr", "0.001",
        "--max-tokens", "500", "--max-update", "2", "--cpu", "--num-workers", "0", "--distributed-world-size", "1",
        "--save-dir", str(tmp_path / "ckpt"), "--log-format", "json", "--log-interval", "1",
    ])
    valid = [r for r in records if r.get("_logger") == "valid"]
    assert valid and float(valid[-1]["valid_loss"]) > 0
