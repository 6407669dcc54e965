"""In-process drivers for fairseq-preprocess / fairseq-train / fairseq-validate."""

import contextlib
import json
import logging
import os
import random
from typing import Dict, List, Sequence

from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils
from fairseq_cli import preprocess, train

USER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fairseq_vrae")

WORDS = (
    "the a cat dog sat ran on under mat log big small red blue quickly slowly and "
    "with house garden tree bird sings loud quiet today yesterday"
).split()


def write_corpus(path: str, sentences: Sequence[str]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for sentence in sentences:
            handle.write(sentence + "\n")
    return path


def random_sentences(count: int, seed: int = 0, min_len: int = 3, max_len: int = 12) -> List[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len)))
        for _ in range(count)
    ]


def binarize(workdir: str, splits: Dict[str, Sequence[str]], srcdict: str = None) -> str:
    """Write each split to text and run fairseq-preprocess --only-source; return destdir."""
    os.makedirs(workdir, exist_ok=True)
    destdir = os.path.join(workdir, "bin")
    argv = ["--only-source", "--destdir", destdir, "--workers", "1"]
    for split, sentences in splits.items():
        path = write_corpus(os.path.join(workdir, f"{split}.txt"), sentences)
        flag = {"train": "--trainpref", "valid": "--validpref", "test": "--testpref"}[split]
        argv += [flag, path]
    if srcdict:
        argv += ["--srcdict", srcdict]
    parser = options.get_preprocessing_parser()
    preprocess.main(parser.parse_args(argv))
    return destdir


def binarize_pair(workdir: str, splits: Dict[str, Sequence[tuple]], source: str = "en", target: str = "de") -> str:
    """Write (source, target) sentence pairs per split and run fairseq-preprocess -s -t
    --joined-dictionary; return destdir."""
    os.makedirs(workdir, exist_ok=True)
    destdir = os.path.join(workdir, "bin")
    argv = ["--source-lang", source, "--target-lang", target, "--joined-dictionary",
            "--destdir", destdir, "--workers", "1"]
    for split, pairs in splits.items():
        prefix = os.path.join(workdir, split)
        write_corpus(f"{prefix}.{source}", [pair[0] for pair in pairs])
        write_corpus(f"{prefix}.{target}", [pair[1] for pair in pairs])
        flag = {"train": "--trainpref", "valid": "--validpref", "test": "--testpref"}[split]
        argv += [flag, prefix]
    parser = options.get_preprocessing_parser()
    preprocess.main(parser.parse_args(argv))
    return destdir


def vrae_train_args(data: str, save_dir: str, extra: Sequence[str] = ()) -> List[str]:
    return [
        data,
        "--user-dir", USER_DIR,
        "--task", "vrae_lm",
        "--arch", "vrae_lstm",
        "--criterion", "vrae_elbo",
        "--embed-dim", "16",
        "--encoder-hidden-size", "16",
        "--decoder-hidden-size", "16",
        "--latent-dim", "4",
        "--optimizer", "adam",
        "--lr", "0.01",
        "--max-tokens", "200",
        "--cpu",
        "--num-workers", "0",
        "--distributed-world-size", "1",
        "--save-dir", save_dir,
        "--no-epoch-checkpoints",
        "--log-format", "json",
        "--log-interval", "1",
        "--seed", "7",
        *extra,
    ]


def run_train(argv: Sequence[str]) -> List[dict]:
    """Run fairseq-train in this process; return the JSON records it logged."""
    records: List[dict] = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            start = message.find("{")
            if start >= 0:
                with contextlib.suppress(ValueError):
                    parsed = json.loads(message[start:])
                    if isinstance(parsed, dict):
                        parsed["_logger"] = record.name
                        records.append(parsed)

    handler = Collect(level=logging.INFO)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, list(argv))
        cfg = convert_namespace_to_omegaconf(args)
        distributed_utils.call_main(cfg, train.main)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    return records


def train_inner_records(records: List[dict]) -> List[dict]:
    return [r for r in records if r.get("_logger") == "train_inner"]


def posteriors(data: str, checkpoint: str, split: str):
    """mu, logvar (float64) of every sentence of a binarized split, in index order,
    computed one sentence at a time from a checkpoint."""
    import torch
    from fairseq import checkpoint_utils
    from fairseq.data import data_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    sentences = data_utils.load_indexed_dataset(os.path.join(data, split), task.dictionary)
    with torch.no_grad():
        out = [model.encoder(sentences[i].unsqueeze(0), sample_posterior=False) for i in range(len(sentences))]
    return torch.cat([o["mu"] for o in out]).double(), torch.cat([o["logvar"] for o in out]).double()


def reordered_incremental_decoding_matches(model, batch, order, steps_before: int = 3, steps_after: int = 3) -> bool:
    """Decode ``steps_before`` steps incrementally, reorder the state as beam search
    does, decode ``steps_after`` more; True when those match a full pass over the
    reordered rows."""
    import torch

    prev = batch["net_input"]["prev_output_tokens"]
    total = steps_before + steps_after
    with torch.no_grad():
        encoder_out = model.encoder(batch["net_input"]["src_tokens"], sample_posterior=False)
        state = {}
        for t in range(steps_before):
            model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
        model.decoder.reorder_incremental_state_scripting(state, order)
        moved_out = model.encoder.reorder_encoder_out(encoder_out, order)
        moved_prev = prev[order]
        steps = [
            model.decoder(moved_prev[:, : t + 1], encoder_out=moved_out, incremental_state=state)[0]
            for t in range(steps_before, total)
        ]
        full, _ = model.decoder(moved_prev[:, :total], encoder_out=moved_out)
    return torch.allclose(torch.cat(steps, dim=1), full[:, steps_before:total], atol=1e-5)
