#!/usr/bin/env python
"""Copy a vrae checkpoint with the decoder re-initialised and the optimizer state dropped.

Step two of the free-bits recipe (Li et al. 2019, "A Surprisingly Effective Fix for
Deep Latent Variable Modeling of Text"): the encoder of an autoencoder-pretrained
model is kept, the decoder starts afresh, and VAE training continues with
``fairseq-train --finetune-from-model <output>``.

    python scripts/reset_decoder.py checkpoints/ae/checkpoint_last.pt ae_encoder.pt
"""

import argparse
import sys

import torch


def reset_decoder(source: str, destination: str, seed: int = 1) -> int:
    """Write ``destination``; return how many decoder tensors were re-initialised."""
    import fairseq_vrae  # noqa: F401  (registers the model and task)
    from fairseq import checkpoint_utils, tasks
    from omegaconf import OmegaConf

    state = checkpoint_utils.load_checkpoint_to_cpu(source)
    cfg = state.get("cfg")
    if cfg is None or cfg.model is None or cfg.model.get("_name") not in ("vrae", "vrae_lstm", "vrae_lstm_big", "vrae_gru"):
        name = None if cfg is None or cfg.model is None else cfg.model.get("_name")
        raise SystemExit(f"{source}: not a vrae checkpoint (model {name!r})")
    if cfg.model.get("share_embeddings"):
        raise SystemExit("--share-embeddings ties the decoder to the encoder; nothing to reset alone")
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    fresh = task.build_model(cfg.model).state_dict()
    model_state = state["model"]
    replaced = 0
    for key in list(model_state):
        if key.startswith("decoder."):
            model_state[key] = fresh[key].clone()
            replaced += 1
    # --finetune-from-model resets the optimizer, schedule, meters and data position
    state["last_optimizer_state"] = None
    # saved as fairseq saves: the configuration as plain containers, loadable with weights_only
    state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    checkpoint_utils.torch_persistent_save(state, destination)
    return replaced


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="trained vrae checkpoint (e.g. an autoencoder)")
    parser.add_argument("destination", help="where to write the copy")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fresh decoder")
    args = parser.parse_args(argv)
    replaced = reset_decoder(args.source, args.destination, args.seed)
    print(f"{args.destination}: {replaced} decoder tensors re-initialised, encoder kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
