"""Quality and diversity of K translations per source (Shen et al. 2019): average,
oracle and pairwise BLEU and the share of identical lists, with sacreBLEU, from
``fairseq-generate`` output read by :mod:`fairseq_vrae.fairseq_output`.  Used by
``scripts/diversity.py`` (one system) and ``scripts/quality_front.py`` (the front)."""

import statistics
from typing import Dict, List, Optional, Tuple

from .fairseq_output import read_generate


def read_generate_output(paths: List[str]) -> Tuple[Dict[int, str], Dict[int, List[str]]]:
    """(reference by source id, hypotheses by source id in output order)."""
    output = read_generate(paths)
    references = {index: texts[-1] for index, texts in output.texts("T").items()}
    hypotheses = output.texts("D") or output.texts("H")
    if not hypotheses:
        raise SystemExit(f"{', '.join(paths)}: no H- or D- lines (is this fairseq-generate output?)")
    missing = sorted(set(hypotheses) - set(references))
    if missing:
        raise SystemExit(f"sources {missing[:5]} have hypotheses but no T- line: generate with references")
    return references, hypotheses


def add_postprocessing_args(parser) -> None:
    """``--remove-bpe`` and ``--detokenize LANG``, the options of :func:`postprocessor`."""
    parser.add_argument("--remove-bpe", action="store_true", help="strip '@@ ' (fastBPE/subword-nmt) first")
    parser.add_argument("--detokenize", metavar="LANG", help="Moses-detokenise first, in this language")


def postprocessor(remove_bpe: bool, detokenize: Optional[str]):
    detokenizer = None
    if detokenize:
        from sacremoses import MosesDetokenizer

        detokenizer = MosesDetokenizer(lang=detokenize)

    def process(text: str) -> str:
        if remove_bpe:
            text = (text + " ").replace("@@ ", "").rstrip()
        if detokenizer is not None:
            text = detokenizer.detokenize(text.split())
        return text

    return process


def diversity(references: List[str], hypotheses: List[List[str]], tokenize: str = "13a") -> Dict[str, float]:
    """The metrics for ``hypotheses[i]`` (K strings) translating the source of ``references[i]``."""
    from sacrebleu import corpus_bleu, sentence_bleu

    count = {len(h) for h in hypotheses}
    if len(count) != 1:
        raise ValueError(f"every source needs the same number of hypotheses, found {sorted(count)}")
    k = count.pop()
    if k < 2:
        raise ValueError("diversity needs at least 2 hypotheses per source (e.g. --nbest 5)")

    def bleu(system: List[str], reference: List[str]) -> float:
        return corpus_bleu(system, [reference], tokenize=tokenize).score

    sets = [[h[j] for h in hypotheses] for j in range(k)]
    best = [max(h, key=lambda text, r=r: sentence_bleu(text, [r], tokenize=tokenize).score)
            for h, r in zip(hypotheses, references)]
    pooled_system, pooled_reference = [], []
    for h in hypotheses:
        for a in range(k):
            for b in range(k):
                if a != b:
                    pooled_reference.append(h[a])
                    pooled_system.append(h[b])
    return {
        "sources": len(references),
        "k": k,
        "average_bleu": statistics.mean(bleu(s, references) for s in sets),
        "oracle_bleu": bleu(best, references),
        "pairwise_bleu": bleu(pooled_system, pooled_reference),
        "pairwise_bleu_mean_of_pairs": statistics.mean(
            bleu(sets[b], sets[a]) for a in range(k) for b in range(k) if a != b
        ),
        "all_identical": sum(len(set(h)) == 1 for h in hypotheses) / len(hypotheses),
    }
