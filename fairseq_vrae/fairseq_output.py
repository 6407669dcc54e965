"""Readers for the text fairseq's command-line tools print.

Pure Python (no torch or fairseq imports):

* :func:`read_generate`: the S-/T-/H-/D-/P- lines of ``fairseq-generate``;
* :func:`validate_metrics`: the last "valid on '<subset>' subset" line of
  ``fairseq-validate`` (or of a training log);
* :func:`generate_bleu`: the corpus BLEU ``fairseq-generate`` prints at the end;
* :func:`read_json_log`: the json records of ``fairseq-train --log-format json``, and
  :func:`train_tokens_per_second` and :func:`trained_epochs`, the training speed and the
  epochs they record;
* :func:`wall_seconds`: the ``wall`` file ``scripts/compare_lib.sh`` writes beside each
  training log (not fairseq's, but read with it by both comparison tables).

A line that looks like a record but cannot be read raises :class:`FairseqOutputError`
naming the file and line; lines that are not records (logging) are counted in ``skipped``.
"""

import json
import os
import re
import statistics
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

RECORD = re.compile(r"^([STHDP])-(\d+)\t(.*)$")
RECORD_START = re.compile(r"^[STHDP]-\d")
VALID_LINE = re.compile(r"\| valid on '[^']+' subset")
BLEU = re.compile(r"BLEU\S* = ([0-9.]+)")


class FairseqOutputError(ValueError):
    """A line that should be a fairseq record and is not."""


class Record(NamedTuple):
    kind: str  # S, T, H, D or P
    index: int  # the source id
    score: float  # H- and D- lines; None otherwise
    text: str


class GenerateOutput(NamedTuple):
    records: List[Record]  # in file order
    skipped: int  # lines that are not records

    def texts(self, kind: str) -> Dict[int, List[str]]:
        """``{source id: [texts of the kind-lines, in file order]}``."""
        found: Dict[int, List[str]] = {}
        for record in self.records:
            if record.kind == kind:
                found.setdefault(record.index, []).append(record.text)
        return found


def parse_generate_line(line: str, where: str = "<line>"):
    """The :class:`Record` of one line, or None where it is not a record."""
    line = line.rstrip("\n")
    match = RECORD.match(line)
    if not match:
        if RECORD_START.match(line):
            raise FairseqOutputError(f"{where}: malformed fairseq-generate line {line[:60]!r}")
        return None
    kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
    if kind not in "HD":
        return Record(kind, index, None, rest)
    score, _, text = rest.partition("\t")
    try:
        value = float(score)
    except ValueError:
        raise FairseqOutputError(f"{where}: {kind}-line without a score: {line[:60]!r}") from None
    return Record(kind, index, value, text)


def parse_generate(lines: Iterable[str], name: str = "<lines>") -> GenerateOutput:
    records, skipped = [], 0
    for number, line in enumerate(lines, 1):
        record = parse_generate_line(line, f"{name}:{number}")
        if record is None:
            skipped += 1
        else:
            records.append(record)
    return GenerateOutput(records, skipped)


def read_generate(paths: Sequence[str]) -> GenerateOutput:
    """The records of one or more fairseq-generate outputs, concatenated."""
    records, skipped = [], 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            output = parse_generate(handle, path)
        records += output.records
        skipped += output.skipped
    return GenerateOutput(records, skipped)


def generate_bleu(path: str) -> Optional[float]:
    """The first corpus BLEU in ``path`` ("Generate test with beam=5: BLEU4 = 30.10, ..."
    of fairseq's bleu scorer, "BLEU = 30.10 ..." of ``--scoring sacrebleu``), or None."""
    with open(path, encoding="utf-8") as handle:
        match = BLEU.search(handle.read())
    return float(match.group(1)) if match else None


def parse_validate_line(line: str):
    """(``{key: value}`` of the numeric items after the subset marker, non-numeric items)."""
    parts = VALID_LINE.split(line.rstrip("\n"), 1)
    if len(parts) != 2:
        raise FairseqOutputError(f"not a fairseq-validate result line: {line[:60]!r}")
    metrics, other = {}, []
    for item in parts[1].split("|"):
        fields = item.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            metrics[fields[0]] = float(fields[1])
        except ValueError:
            other.append(item.strip())
    return metrics, other


def validate_metrics(path: str) -> Dict[str, float]:
    """The numeric items of the last "valid on '<subset>' subset" line of ``path``."""
    found = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if VALID_LINE.search(line):
                found = line
    if found is None:
        raise FairseqOutputError(f"{path}: no fairseq-validate result line")
    return parse_validate_line(found)[0]


class JsonLog(NamedTuple):
    records: Dict[str, List[dict]]  # logger name (train_inner, valid, ...) -> records
    skipped: int  # lines naming such a logger whose json could not be read


def read_json_log(paths: Sequence[str], loggers: Sequence[str] = ("train_inner", "valid")) -> JsonLog:
    """The json records of ``fairseq-train --log-format json`` lines ``... | <logger> | {...}``."""
    records: Dict[str, List[dict]] = {name: [] for name in loggers}
    skipped = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name = next((n for n in loggers if f"| {n} |" in line), None)
                if name is None:
                    continue
                start = line.find("{")
                try:
                    record = json.loads(line[start:]) if start >= 0 else None
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    skipped += 1
                    continue
                records[name].append(record)
    return JsonLog(records, skipped)


def train_tokens_per_second(paths: Sequence[str]) -> Optional[float]:
    """Median words per second (``wps``) over the train_inner records of the logs that
    exist, the first record of each log (start-up) left out; None without records."""
    speeds = []
    for path in paths:
        if os.path.exists(path):
            records = read_json_log([path], ("train_inner",)).records["train_inner"]
            speeds += [float(record["wps"]) for record in records[1:]]
    return statistics.median(speeds) if speeds else None


class TrainedEpochs(NamedTuple):
    last: int  # the last epoch finished
    best: Optional[int]  # the epoch of the lowest valid_loss (checkpoint_best.pt's), None without validation


def trained_epochs(path: str) -> TrainedEpochs:
    """The epochs a ``fairseq-train --log-format json`` log finished (its end-of-epoch
    ``train`` records) and the one whose validation loss was lowest; a tie goes to the
    later epoch, as fairseq's checkpoint_best.pt does."""
    records = read_json_log([path], ("train", "valid")).records
    if not records["train"]:
        raise FairseqOutputError(f"{path}: no end-of-epoch train record (is it a --log-format json log?)")
    best, best_loss = None, None
    for record in records["valid"]:
        if "valid_loss" in record and (best_loss is None or float(record["valid_loss"]) <= best_loss):
            best, best_loss = int(record["epoch"]), float(record["valid_loss"])
    return TrainedEpochs(max(int(record["epoch"]) for record in records["train"]), best)


def epoch_learning_rate(path: str, epoch: int) -> float:
    """The learning rate a ``fairseq-train --log-format json`` log's epoch ended at (its
    end-of-epoch ``train_lr``): where a model fine-tuned from that epoch's checkpoint
    can carry on."""
    for record in read_json_log([path], ("train",)).records["train"]:
        if int(record.get("epoch", -1)) == epoch and "train_lr" in record:
            return float(record["train_lr"])
    raise FairseqOutputError(f"{path}: no end-of-epoch train record with train_lr for epoch {epoch}")


def wall_seconds(path: str) -> float:
    """The total of a ``wall`` file: seconds of each training stage, one a line."""
    with open(path, encoding="utf-8") as handle:
        return sum(float(line) for line in handle if line.strip())
