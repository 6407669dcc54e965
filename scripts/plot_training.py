#!/usr/bin/env python
"""Training curves of a vrae run and a PCA view of its posterior means.

Curves (the analogue of Bowman et al.'s Figure 2), from the log of ``fairseq-train
--log-format json`` (its stdout, or ``--log-file``): reconstruction and -ELBO per
sentence on the left, KL per sentence and the KL weight beta on the right, against
the update count; validation points are drawn where the log has them.

    python scripts/plot_training.py train.log --output curves.png
    python scripts/plot_training.py train.log --output curves.png \\
        --checkpoint checkpoints/checkpoint_best.pt --data data-bin --split test \\
        --pca-output posterior_pca.png
"""

import argparse
import os
import sys
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fairseq_vrae.fairseq_output import read_json_log  # noqa: E402

CURVE_KEYS = ("rec", "kl", "elbo", "kl_weight")


def numeric_values(record: dict) -> Dict[str, float]:
    """The numeric values of a json log record, ``valid_`` taken off the keys."""
    numbers = {}
    for key, value in record.items():
        try:
            numbers[key[len("valid_"):] if key.startswith("valid_") else key] = float(value)
        except (TypeError, ValueError):
            pass
    return numbers


def read_log(paths: List[str]) -> Tuple[List[Dict[str, float]], List[Dict[str, float]]]:
    """(train_inner records, valid records) with numeric values, in update order."""
    log = read_json_log(paths, ("train_inner", "valid")).records
    train, valid = [numeric_values(r) for r in log["train_inner"]], [numeric_values(r) for r in log["valid"]]
    if not train:
        raise SystemExit(
            f"no train_inner records in {', '.join(paths)}: train with --log-format json "
            "and keep its output (or --log-file)"
        )
    missing = [key for key in CURVE_KEYS if key not in train[0]]
    if missing:
        raise SystemExit(f"the log has no {', '.join(missing)}: is it a vrae_elbo run?")
    train.sort(key=lambda r: r["num_updates"])
    valid.sort(key=lambda r: r.get("num_updates", 0))
    return train, valid


def plot_curves(train, valid, output: str, title: str = "") -> None:
    updates = [r["num_updates"] for r in train]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(updates, [r["elbo"] for r in train], label="−ELBO (train)")
    left.plot(updates, [r["rec"] for r in train], label="reconstruction (train)")
    if valid:
        left.plot([r["num_updates"] for r in valid], [r["elbo"] for r in valid], "o-", label="−ELBO (valid)")
    left.set_xlabel("update")
    left.set_ylabel("nats per sentence")
    left.legend()

    right.plot(updates, [r["kl"] for r in train], color="tab:red", label="KL (train)")
    if valid:
        right.plot([r["num_updates"] for r in valid], [r["kl"] for r in valid], "o-", color="tab:orange", label="KL (valid)")
    right.set_xlabel("update")
    right.set_ylabel("KL, nats per sentence")
    beta_axis = right.twinx()
    beta_axis.plot(updates, [r["kl_weight"] for r in train], "--", color="tab:gray", label="KL weight β")
    beta_axis.set_ylabel("KL weight β")
    beta_axis.set_ylim(-0.02, max(1.0, max(r["kl_weight"] for r in train)) * 1.05)
    lines = right.get_legend_handles_labels()
    more = beta_axis.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def posterior_means(checkpoint: str, data: str, split: str, max_tokens: int = 4096):
    """Posterior means of every sentence of ``split``, ``(N, latent_dim)``, in file order."""
    import torch
    import fairseq_vrae  # noqa: F401
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    task.load_dataset(split)
    dataset = task.dataset(split)
    iterator = task.get_batch_iterator(dataset, max_tokens=max_tokens, ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
    ids, means = [], []
    with torch.no_grad():
        for sample in iterator:
            net_input = sample["net_input"]
            posterior = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
            ids.append(sample["id"])
            means.append(posterior["mu"].float())
    order = torch.cat(ids).argsort()
    return torch.cat(means)[order]


def plot_pca(means, output: str, title: str = "") -> Tuple[float, float]:
    """Scatter of the first two principal components; returns their variance shares."""
    import torch

    centred = means.double() - means.double().mean(0)
    _, singular, vectors = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ vectors[:2].T
    share = (singular.pow(2) / singular.pow(2).sum().clamp(min=1e-12))[:2].tolist()
    fig, axis = plt.subplots(figsize=(5.5, 5))
    axis.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=4, alpha=0.5)
    axis.set_xlabel(f"PC 1 ({share[0]:.0%} of the variance)")
    axis.set_ylabel(f"PC 2 ({share[1]:.0%} of the variance)")
    axis.set_title(title or f"posterior means, {means.size(0)} sentences")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return share[0], share[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", help="fairseq-train output with --log-format json")
    parser.add_argument("--output", default="training_curves.png")
    parser.add_argument("--title", default="")
    parser.add_argument("--checkpoint", help="also plot the posterior means of this model")
    parser.add_argument("--data", help="with --checkpoint: the fairseq-preprocess folder")
    parser.add_argument("--split", default="valid", help="with --checkpoint: the split to encode")
    parser.add_argument("--pca-output", default="posterior_pca.png")
    args = parser.parse_args(argv)

    train, valid = read_log(args.logs)
    plot_curves(train, valid, args.output, args.title)
    print(f"{args.output}: {len(train)} training and {len(valid)} validation points")
    if args.checkpoint:
        if not args.data or not os.path.isdir(args.data):
            raise SystemExit("--checkpoint needs --data, the folder the model was trained on")
        means = posterior_means(args.checkpoint, args.data, args.split)
        first, second = plot_pca(means, args.pca_output)
        print(f"{args.pca_output}: {means.size(0)} sentences of {args.split}; "
              f"PC 1 and 2 explain {first:.0%} and {second:.0%} of the variance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
