#!/usr/bin/env python
"""Imputation as Bowman et al. (2016) evaluate it: the final 20% of the words of each
test sentence are removed and filled in again, by a ``vrae`` checkpoint (its
``impute`` mode: decode from q(z | observed words), forced to begin with them) and by
an ``lstm_lm`` checkpoint (beam search from the observed words: the paper's
baseline).  Reported: corpus BLEU against the true sentences (sacreBLEU, ``--tokenize``)
and the error of an adversarial classifier trained to tell the true sentences from the
imputed ones (bag-of-words logistic regression, as in the paper): trained on the true
and imputed versions of one half of the sentences, tested on the other half.  An
error of 50% means imputations that cannot be told from real sentences.

    python scripts/impute_eval.py --data data-bin/ptb --vae checkpoints/vae/checkpoint_best.pt \\
        --lm checkpoints/lm/checkpoint_best.pt --user-dir fairseq_vrae
"""

import argparse
import logging
import os
import random
import sys
from typing import Dict, List, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def observed_prefix(words: Sequence[str], fraction: float) -> List[str]:
    """The words kept: at least one removed from a sentence of two or more words (as the
    vrae_lm impute mode does)."""
    removed = max(1, round(fraction * len(words))) if len(words) > 1 else 0
    return list(words[: len(words) - removed])


def load_sentences(data: str, split: str, limit: int, seed: int) -> List[str]:
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(os.path.join(data, "dict.txt"))
    dataset = data_utils.load_indexed_dataset(os.path.join(data, split), dictionary)
    if dataset is None:
        raise SystemExit(f"no binarized split {split!r} in {data}")
    sentences = [dictionary.string(dataset[i]) for i in range(len(dataset))]
    sentences = [s for s in sentences if len(s.split()) >= 2]
    if limit and limit < len(sentences):
        sentences = sorted(random.Random(seed).sample(sentences, limit), key=sentences.index)
    return sentences


def impute_with_vae(checkpoint: str, data: str, user_dir: str, sentences: List[str], fraction: float, beam: int,
                    method: str = "prefix", iterations: int = 3) -> List[str]:
    from fairseq import utils

    utils.import_user_module(argparse.Namespace(user_dir=user_dir))  # what fairseq's --user-dir does
    from fairseq_vrae import VRAEModel

    hub = VRAEModel.from_pretrained(os.path.dirname(checkpoint), checkpoint_file=os.path.basename(checkpoint),
                                    data_name_or_path=os.path.abspath(data))
    hub.eval()
    return hub.impute(sentences, fraction=fraction, beam=beam, method=method, iterations=iterations)


def impute_with_lm(checkpoint: str, data: str, sentences: List[str], fraction: float, beam: int) -> List[str]:
    from fairseq.models.lstm_lm import LSTMLanguageModel

    lm = LSTMLanguageModel.from_pretrained(os.path.dirname(checkpoint), checkpoint_file=os.path.basename(checkpoint),
                                           data_name_or_path=os.path.abspath(data))
    lm.eval()
    prefixes = [" ".join(observed_prefix(s.split(), fraction)) for s in sentences]
    return lm.sample(prefixes, beam=beam)


def adversarial_error(real: List[str], imputed: List[str], seed: int = 1, epochs: int = 200) -> float:
    """Error on held-out sentences of a unigram logistic-regression classifier of real
    (1) against imputed (0), trained on the other half's pairs."""
    import torch

    vocabulary: Dict[str, int] = {}
    for sentence in real + imputed:
        for word in sentence.split():
            vocabulary.setdefault(word, len(vocabulary))

    def features(sentences):
        x = torch.zeros(len(sentences), len(vocabulary))
        for row, sentence in enumerate(sentences):
            for word in sentence.split():
                x[row, vocabulary[word]] += 1.0
        return x / x.sum(1, keepdim=True).clamp(min=1)

    order = list(range(len(real)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    train_ids, test_ids = order[:half], order[half:]

    def split(ids):
        x = torch.cat([features([real[i] for i in ids]), features([imputed[i] for i in ids])])
        y = torch.cat([torch.ones(len(ids)), torch.zeros(len(ids))])
        return x, y

    (x_train, y_train), (x_test, y_test) = split(train_ids), split(test_ids)
    torch.manual_seed(seed)
    classifier = torch.nn.Linear(len(vocabulary), 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(classifier(x_train).squeeze(1), y_train)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = classifier(x_test).squeeze(1).gt(0).float()
    return float(predicted.ne(y_test).float().mean())


def evaluate(real: List[str], imputed: List[str], tokenize: str, seed: int) -> Tuple[float, float]:
    from sacrebleu import corpus_bleu

    return corpus_bleu(imputed, [real], tokenize=tokenize).score, adversarial_error(real, imputed, seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fairseq-preprocess --only-source folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--vae", help="a vrae checkpoint")
    parser.add_argument("--lm", help="an lstm_lm checkpoint (task language_modeling) on the same dictionary")
    parser.add_argument("--user-dir", default=os.path.join(REPO_ROOT, "fairseq_vrae"))
    parser.add_argument("--fraction", type=float, default=0.2, help="final fraction of the words to impute")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-sentences", type=int, default=0, help="a random subset of this size (0 = all)")
    parser.add_argument("--tokenize", default="none", help="sacreBLEU tokenisation (none: the text is tokenised)")
    parser.add_argument("--methods", default="prefix",
                        help="comma-separated --impute-method values for the VAE (prefix, open-prefix, iterative)")
    parser.add_argument("--iterations", type=int, default=3, help="--impute-iterations of the iterative method")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not (args.vae or args.lm):
        parser.error("give --vae and/or --lm")
    logging.basicConfig(level=logging.WARNING)
    sentences = load_sentences(args.data, args.split, args.max_sentences, args.seed)
    rows = []
    if args.lm:
        imputed = impute_with_lm(args.lm, args.data, sentences, args.fraction, args.beam)
        rows.append(("lstm_lm, beam search from the observed words", *evaluate(sentences, imputed, args.tokenize, args.seed)))
    descriptions = {
        "prefix": "vrae, posterior mean of the observed words as a sentence (prefix)",
        "open-prefix": "vrae, posterior mean of the observed words without </s> (open-prefix)",
        "iterative": f"vrae, re-encoding each completion, {args.iterations} decodes (iterative)",
    }
    for method in args.methods.split(",") if args.vae else []:
        if method not in descriptions:
            parser.error(f"unknown method {method!r}; choose from {', '.join(descriptions)}")
        imputed = impute_with_vae(args.vae, args.data, args.user_dir, sentences, args.fraction, args.beam,
                                  method, args.iterations)
        rows.append((descriptions[method], *evaluate(sentences, imputed, args.tokenize, args.seed)))
    print(f"{len(sentences)} sentences of {args.split}; final {args.fraction:.0%} of the words imputed, beam {args.beam}")
    print("| imputation | BLEU | adversarial error (unigram logistic regression) |")
    print("|---|---|---|")
    for name, bleu, error in rows:
        print(f"| {name} | {bleu:.2f} | {100 * error:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
