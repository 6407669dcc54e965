#!/usr/bin/env python
"""Training speed and memory of ``vrae_lstm`` against fairseq's ``lstm_lm`` (or, with
``--family transformer``, ``vrae_transformer`` against ``transformer_lm`` with the same
decoder; with ``--family translation``, ``cvae_transformer`` against fairseq's
``transformer`` on a pair from scripts/prepare_pairs.sh), and the speed of sampling
sentences from the prior.  A benchmark, not a test: it prints figures.

Both models get the same embedding and hidden sizes, the same binarized data (Penn
Treebank from ../shared/data/ptb when it is there, else the bundled demo corpus), the
same batch size in tokens and fairseq's own Trainer (optimizer, clipping, fp16
wrappers).  After warm-up, timed windows of training steps alternate between the two
models so that machine noise hits both alike; the table gives the median target
tokens/s over the windows and the ratio VAE / LM.  On a GPU every configuration runs
in fp32 and fp16.  Prior sampling decodes z ~ N(0, I) greedily (beam 1) in batches.

    python scripts/benchmark_speed.py                      # CPU, and the GPU if present
    python scripts/benchmark_speed.py --devices cuda --windows 10 --steps 20
    python scripts/benchmark_speed.py --family transformer
    python scripts/benchmark_speed.py --family translation --data <pair bin> --layers 3 --ffn-embed-dim 512
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PTB_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "ptb")
DEMO_CORPUS = os.path.join(REPO_ROOT, "scripts", "demo_data", "stdlib_sentences.txt")


def binarized_data(workdir: str) -> Tuple[str, str]:
    """(bin folder, description): Penn Treebank when present, else the demo corpus."""
    from fairseq import options
    from fairseq_cli import preprocess

    destdir = os.path.join(workdir, "bin")
    if os.path.exists(os.path.join(PTB_DIR, "ptb.train.txt")):
        train, name = os.path.join(PTB_DIR, "ptb.train.txt"), "Penn Treebank (train split)"
    else:
        train, name = DEMO_CORPUS, "bundled demo corpus (word level)"
    if not os.path.exists(os.path.join(destdir, "train.idx")):
        argv = ["--only-source", "--trainpref", train, "--destdir", destdir, "--workers", "2"]
        preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return destdir, name


#: --family -> (fairseq's language model, the VAE with the same decoder)
PAIRS = {"lstm": ("lstm_lm", "vrae_lstm"), "transformer": ("transformer_lm", "vrae_transformer"),
         "translation": ("transformer", "cvae_transformer")}


def model_argv(kind: str, data: str, args, device: str, precision: str) -> List[str]:
    common = [
        data, "--optimizer", "adam", "--lr", "0.001", "--clip-norm", "5",
        "--max-tokens", str(args.max_tokens), "--dropout", "0.3", "--seed", "1",
        "--num-workers", "0", "--distributed-world-size", "1", "--max-update", "1000000",
    ]
    if device == "cpu":
        common.append("--cpu")
    if precision == "fp16":
        common.append("--fp16")
    elif precision == "bf16":
        common.append("--bf16")
    if kind == "lstm_lm":
        return common + [
            "--task", "language_modeling", "--sample-break-mode", "eos", "--arch", "lstm_lm",
            "--decoder-embed-dim", str(args.embed_dim), "--decoder-hidden-size", str(args.hidden_size),
            "--decoder-out-embed-dim", str(args.hidden_size), "--decoder-layers", "1",
            "--criterion", "cross_entropy",
        ]
    ffn = str(args.ffn_embed_dim or 4 * args.embed_dim)
    if kind in ("transformer", "cvae_transformer"):  # translation, the bench's settings
        sizes = ["--share-all-embeddings", "--encoder-layers", str(args.layers), "--decoder-layers", str(args.layers),
                 "--encoder-embed-dim", str(args.embed_dim), "--decoder-embed-dim", str(args.embed_dim),
                 "--encoder-ffn-embed-dim", ffn, "--decoder-ffn-embed-dim", ffn,
                 "--encoder-attention-heads", str(args.heads), "--decoder-attention-heads", str(args.heads)]
        if kind == "transformer":
            return common + ["--task", "translation", "--arch", "transformer", *sizes,
                             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
        return common + ["--user-dir", os.path.join(REPO_ROOT, "fairseq_vrae"), "--task", "translation",
                         "--arch", "cvae_transformer", *sizes, "--latent-dim", str(args.latent_dim),
                         "--criterion", "vrae_elbo", "--label-smoothing", "0.1", "--kl-schedule", "linear",
                         "--kl-warmup-updates", "600", "--free-bits", "0.1", "--bow-loss-weight", "1", *args.vae_flags.split()]
    if kind == "transformer_lm":
        return common + [
            "--task", "language_modeling", "--sample-break-mode", "eos", "--arch", "transformer_lm",
            "--decoder-embed-dim", str(args.embed_dim), "--decoder-ffn-embed-dim", ffn,
            # transformer_lm keeps 512-d input/output embeddings unless told otherwise
            "--decoder-input-dim", str(args.embed_dim), "--decoder-output-dim", str(args.embed_dim),
            "--decoder-layers", str(args.layers), "--decoder-attention-heads", str(args.heads),
            "--share-decoder-input-output-embed", "--tokens-per-sample", "512", "--criterion", "cross_entropy",
        ]
    if kind == "vrae_transformer":
        return common + [
            "--user-dir", os.path.join(REPO_ROOT, "fairseq_vrae"), "--task", "vrae_lm",
            "--arch", "vrae_transformer", "--criterion", "vrae_elbo",
            "--embed-dim", str(args.embed_dim), "--ffn-embed-dim", ffn,
            "--encoder-layers", str(args.layers), "--decoder-layers", str(args.layers),
            "--attention-heads", str(args.heads), "--latent-dim", str(args.latent_dim),
            "--kl-schedule", "logistic", "--word-dropout", "0.25", *args.vae_flags.split(),
        ]
    return common + [
        "--user-dir", os.path.join(REPO_ROOT, "fairseq_vrae"), "--task", "vrae_lm",
        "--arch", "vrae_lstm", "--criterion", "vrae_elbo",
        "--embed-dim", str(args.embed_dim), "--encoder-hidden-size", str(args.hidden_size),
        "--decoder-hidden-size", str(args.hidden_size), "--latent-dim", str(args.latent_dim),
        "--kl-schedule", "logistic", "--word-dropout", "0.25", *args.vae_flags.split(),
    ]


class Runner:
    """One model under fairseq's Trainer, stepping through its training batches."""

    def __init__(self, argv: List[str]):
        from fairseq import options, tasks, utils
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf
        from fairseq.trainer import Trainer

        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
        utils.import_user_module(cfg.common)
        utils.set_torch_seed(cfg.common.seed)
        self.cfg = cfg
        self.task = tasks.setup_task(cfg.task)
        model = self.task.build_model(cfg.model)
        criterion = self.task.build_criterion(cfg.criterion)
        self.trainer = Trainer(cfg, self.task, model, criterion)
        self.epoch = 1
        self.epoch_itr = self.trainer.get_train_iterator(epoch=1)
        self.iterator = self.epoch_itr.next_epoch_itr(shuffle=True)
        self.cuda = not cfg.common.cpu

    def _next_sample(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.epoch += 1
            self.epoch_itr = self.trainer.get_train_iterator(epoch=self.epoch)
            self.iterator = self.epoch_itr.next_epoch_itr(shuffle=True)
            return next(self.iterator)

    def steps(self, count: int) -> Tuple[int, float]:
        """Train ``count`` steps; return (target tokens, seconds)."""
        import torch

        tokens = 0
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(count):
            sample = self._next_sample()
            tokens += int(sample["ntokens"])
            self.trainer.train_step([sample])
        if self.cuda:
            torch.cuda.synchronize()
        return tokens, time.perf_counter() - start


def measure_pair(data: str, args, device: str, precision: str) -> Dict[str, dict]:
    import torch

    lm_kind, vae_kind = PAIRS[args.family]
    runners = {kind: Runner(model_argv(kind, data, args, device, precision)) for kind in (lm_kind, vae_kind)}
    results = {kind: {"speeds": [], "peak_mib": 0.0} for kind in runners}
    for runner in runners.values():
        runner.steps(args.warmup)
    for _ in range(args.windows):
        for kind, runner in runners.items():
            if runner.cuda:
                torch.cuda.reset_peak_memory_stats()
            tokens, seconds = runner.steps(args.steps)
            results[kind]["speeds"].append(tokens / seconds)
            if runner.cuda:
                peak = torch.cuda.max_memory_allocated() / 2**20
                results[kind]["peak_mib"] = max(results[kind]["peak_mib"], peak)
    if device == "cpu":
        for kind in runners:
            results[kind]["peak_mib"] = cpu_peak_memory(kind, data, args, precision)
    if args.family != "translation":
        results[vae_kind]["sampling"] = prior_sampling_speed(runners[vae_kind], args)
    return results


def cpu_peak_memory(kind: str, data: str, args, precision: str) -> Optional[float]:
    """Peak resident memory that training steps add to the loaded model, optimizer and
    data, in a fresh process (CPU allocations are not tracked per model in one process)."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-child", kind, "--data", data,
               "--embed-dim", str(args.embed_dim), "--hidden-size", str(args.hidden_size),
               "--latent-dim", str(args.latent_dim), "--max-tokens", str(args.max_tokens),
               "--steps", str(args.steps), "--precision", precision, "--layers", str(args.layers),
               "--heads", str(args.heads), "--family", args.family]
    if args.ffn_embed_dim:
        command += ["--ffn-embed-dim", str(args.ffn_embed_dim)]
    if args.vae_flags:
        command += ["--vae-flags=" + args.vae_flags]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("MEMORY "):
            return float(line.split()[1])
    sys.stderr.write(done.stderr[-2000:])
    return None


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(args) -> None:
    import threading

    runner = Runner(model_argv(args.memory_child, args.data, args, "cpu", args.precision))
    runner.steps(1)  # optimizer state exists from here on
    baseline = resident_mib()
    peak = [baseline]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.002)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    runner.steps(args.steps)
    done.set()
    watcher.join()
    print(f"MEMORY {peak[0] - baseline:.1f} {baseline:.1f}")


def prior_sampling_speed(runner: Runner, args) -> dict:
    """Sentences/s decoding prior samples greedily, batches of ``--sample-batch``, with
    the model being trained or, better, a trained ``--sample-checkpoint`` (a briefly
    trained model ends its sentences early and flatters the figure)."""
    import torch
    from fairseq import checkpoint_utils
    from fairseq_vrae.hub_interface import VRAEHubInterface

    if args.sample_checkpoint:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [args.sample_checkpoint], arg_overrides={"data": runner.cfg.task.data}
        )
        hub = VRAEHubInterface(cfg, task, models)
        if runner.cfg.common.fp16:
            hub.half()
    else:
        hub = VRAEHubInterface(runner.cfg, runner.task, [runner.trainer.model])
    if runner.cuda:
        hub.cuda()
    hub.cfg.dataset.batch_size = args.sample_batch
    hub.cfg.dataset.max_tokens = None
    hub.sample_prior(min(args.sample_batch, 50), seed=0)  # warm-up
    rates, lengths = [], []
    for window in range(args.sample_windows):
        if runner.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        sentences = hub.sample_prior(args.sample_batch, seed=window + 1, max_len_b=args.sample_max_len)
        if runner.cuda:
            torch.cuda.synchronize()
        rates.append(len(sentences) / (time.perf_counter() - start))
        lengths += [len(s.split()) for s in sentences]
    return {"sentences_per_s": statistics.median(rates), "mean_words": statistics.mean(lengths)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="fairseq-preprocess --only-source folder (default: PTB or the demo corpus)")
    parser.add_argument("--devices", default="auto", help="cpu, cuda or both (comma separated); auto = cpu and cuda if present")
    parser.add_argument("--precisions", default="fp32,fp16", help="on a GPU; the CPU runs fp32")
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=256, help="LSTM family")
    parser.add_argument("--family", choices=sorted(PAIRS), default="lstm", help="network family of the pair")
    parser.add_argument("--layers", type=int, default=2, help="transformer family: layers of each network")
    parser.add_argument("--heads", type=int, default=4, help="transformer families: attention heads")
    parser.add_argument("--ffn-embed-dim", type=int, help="transformer families: feed-forward size (default 4 x embedding)")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per model")
    parser.add_argument("--steps", type=int, default=8, help="training steps per window")
    parser.add_argument("--sample-batch", type=int, default=500)
    parser.add_argument("--sample-windows", type=int, default=3)
    parser.add_argument("--sample-max-len", type=int, default=60, help="longest sampled sentence in tokens")
    parser.add_argument("--sample-checkpoint", help="a trained vrae checkpoint (same dictionary) for prior sampling")
    parser.add_argument("--vae-flags", default="",
                        help="extra fairseq-train flags for the VAE of the pair, e.g. '--share-embeddings'")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    for name in ("fairseq", "fairseq_vrae", "fairseq_cli"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.memory_child:
        memory_child(args)
        return 0

    import torch

    workdir = tempfile.mkdtemp(prefix="vrae_bench_")
    if args.family == "translation" and not args.data:
        parser.error("--family translation needs --data, a pair binarized by scripts/prepare_pairs.sh")
    data, data_name = (args.data, args.data) if args.data else binarized_data(workdir)
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.devices.split(",")
    hardware = {"cpu": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"}
    if torch.cuda.is_available():
        hardware["cuda"] = torch.cuda.get_device_name(0)
    sizes = f"hidden {args.hidden_size}" if args.family == "lstm" else f"{args.layers} layers, {args.heads} heads, FFN {args.ffn_embed_dim or 4 * args.embed_dim}"
    print(f"{' vs '.join(PAIRS[args.family])}; data: {data_name}; embedding {args.embed_dim}, {sizes}, latent {args.latent_dim}, "
          f"--max-tokens {args.max_tokens}; {args.warmup} warm-up steps, {args.windows} windows of {args.steps} steps")

    rows, report = [], []
    for device in devices:
        for precision in (["fp32"] if device == "cpu" else args.precisions.split(",")):
            results = measure_pair(data, args, device, precision)
            lm_kind, vae_kind = PAIRS[args.family]
            lm, vae = results[lm_kind], results[vae_kind]
            lm_speed, vae_speed = statistics.median(lm["speeds"]), statistics.median(vae["speeds"])
            report.append({"device": device, "hardware": hardware[device], "precision": precision,
                           lm_kind: lm, vae_kind: vae})
            rows.append((device, precision, lm_speed, vae_speed, lm["peak_mib"], vae["peak_mib"], vae.get("sampling")))

    def mib(value):
        return "–" if value is None else f"{value:,.0f}"

    print()
    lm_kind, vae_kind = PAIRS[args.family]
    print(f"| device | precision | {lm_kind} tokens/s | {vae_kind} tokens/s | VAE / LM | {lm_kind} step memory MiB | "
          f"{vae_kind} step memory MiB | prior samples/s (greedy, batch {args.sample_batch}) |")
    print("|---|---|---|---|---|---|---|---|")
    for device, precision, lm_speed, vae_speed, lm_mem, vae_mem, sampling in rows:
        print(f"| {device} ({hardware[device]}) | {precision} | {lm_speed:,.0f} | {vae_speed:,.0f} | "
              f"{vae_speed / lm_speed:.2f} | {mib(lm_mem)} | {mib(vae_mem)} | "
              + ("– |" if sampling is None else f"{sampling['sentences_per_s']:,.0f} ({sampling['mean_words']:.1f} words) |"))
    gpu_rows = {precision: vae for device, precision, _, vae, _, _, _ in rows if device == "cuda"}
    if "fp32" in gpu_rows and "fp16" in gpu_rows:
        print(f"\nGPU {vae_kind} fp16 / fp32 tokens/s: {gpu_rows['fp16'] / gpu_rows['fp32']:.2f}")
    print("\nTokens/s: median over the timed windows of target tokens (</s> included) per second of "
          "fairseq Trainer.train_step. Step memory: on CUDA the peak allocated during the timed "
          "windows; on CPU the peak resident memory the training steps add to the loaded model, "
          "optimizer and data (a separate process per model, sampled every 2 ms).")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
