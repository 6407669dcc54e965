"""A sentence VAE from the language model a user already has.

``--load-pretrained-decoder-from LM.pt`` fills the VAE's decoder with a fairseq
``lstm_lm`` (into ``vrae_lstm``) or ``transformer_lm`` (into ``vrae_transformer``)
checkpoint trained on the same dictionary: word embeddings, layers and output layer
(``--load-pretrained-encoder-embed`` copies the embeddings into the encoder too).  z's
paths into the decoder start at zero, so before the first update the decoder is the
LM exactly, and its reconstruction term equals the LM's likelihood of the same
sentences.  Only the weights come from the checkpoint; the optimizer, schedule and
update count start fresh, as with fairseq's ``--finetune-from-model`` (a conditional VAE
from a translation model can also take its optimizer state: ``--warm-start-optimizer``,
:func:`carry_optimizer_state`).

Anything that would make the decoder differ from the LM is refused with the option to
set: another dictionary, other sizes, another architecture.
"""

import logging
import os
from dataclasses import field
from typing import Dict, List, Tuple

import torch
from fairseq import checkpoint_utils
from fairseq.utils import safe_getattr
from torch import Tensor
from .latent_injection import starts_silent

logger = logging.getLogger(__name__)

# The options, declared once for both families' configs.


def pretrained_decoder_field():
    return field(
        default=None,
        metadata={"help": "start the decoder from this fairseq language model checkpoint (lstm_lm for "
                  "vrae_lstm, transformer_lm for vrae_transformer, same dictionary); z's paths into it "
                  "start at zero, so training begins from the LM's own likelihood"},
    )


def pretrained_encoder_embed_field():
    return field(
        default=False,
        metadata={"help": "with --load-pretrained-decoder-from: copy the LM's word embeddings into "
                  "the encoder as well"},
    )


class WarmStartError(ValueError):
    pass


PRETRAINED_PATH_OPTIONS = ("load_pretrained_decoder_from", "load_pretrained_encoder_from")


def forget_pretrained_paths(cfg) -> None:
    """Clear the warm-start paths of a saved model's options before it is rebuilt from
    its checkpoint, which holds the trained weights: the checkpoint it started from is
    not read again (and need not exist any more)."""
    import contextlib

    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
        for name in PRETRAINED_PATH_OPTIONS:
            if getattr(cfg, name, None):
                setattr(cfg, name, None)


def _model_cfg(state) -> Tuple[str, object]:
    """(architecture name, model options) of a loaded checkpoint."""
    cfg = state.get("cfg")
    model_cfg = cfg["model"] if cfg is not None and cfg.get("model") is not None else state.get("args")
    if model_cfg is None:
        raise WarmStartError("the checkpoint holds no model options (neither cfg.model nor args)")
    arch = safe_getattr(model_cfg, "arch", None) or safe_getattr(model_cfg, "_name", None)
    return str(arch), model_cfg


def _read_checkpoint(path: str, option: str):
    """(state, architecture name, model options) of the checkpoint an option names."""
    if not os.path.exists(path):
        raise WarmStartError(f"{option}: no such file: {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    return (state, *_model_cfg(state))


def _require(checks: List[Tuple[str, object, object, str]], path: str) -> None:
    """Each check: (what, the LM's value, the VAE's value, how to make them agree)."""
    for what, lm_value, vae_value, fix in checks:
        if lm_value != vae_value:
            raise WarmStartError(f"{path}: the language model's {what} is {lm_value}, the VAE's {vae_value}; {fix}")


def _check_dictionary(lm_state: Dict[str, Tensor], model, path: str) -> None:
    embed = lm_state.get("decoder.embed_tokens.weight")
    if embed is None:
        raise WarmStartError(f"{path}: no decoder.embed_tokens.weight in the checkpoint")
    found, expected = embed.size(0), model.decoder.embed_tokens.weight.size(0)
    if found != expected:
        raise WarmStartError(
            f"{path}: dictionary mismatch: the language model was trained with a dictionary of {found} entries, "
            f"the VAE's data has {expected}; binarize the VAE's data with the LM's dictionary "
            f"(fairseq-preprocess --srcdict <the LM's dict.txt>)"
        )


def _fill(target, weights: Dict[str, Tensor], what: str) -> None:
    """Load ``weights`` into ``target``; every parameter must come from them but z's own
    (``target.latent_parameter_prefixes``), and every weight must find its place."""
    missing, unexpected = target.load_state_dict(weights, strict=False)
    missing = [key for key in missing if not key.startswith(getattr(target, "latent_parameter_prefixes", ()))]
    if missing or unexpected:
        raise WarmStartError(f"{what} does not fit (missing: {missing}, unexpected: {list(unexpected)})")


def load_pretrained_lm(model, cfg) -> None:
    """Fill ``model``'s decoder (and optionally its encoder's embeddings) from the
    checkpoint named by ``cfg.load_pretrained_decoder_from``; no-op when unset."""
    path = safe_getattr(cfg, "load_pretrained_decoder_from", None)
    if not path:
        return
    state, arch, lm_cfg = _read_checkpoint(path, "--load-pretrained-decoder-from")
    lm_state = state["model"]
    family = model.warm_start_family
    loaders = {"lstm_lm": _lstm_lm_state, "transformer_lm": _transformer_lm_state}
    expected_arch = {"lstm": "lstm_lm", "transformer": "transformer_lm"}[family]
    if not (arch == expected_arch or arch.startswith(expected_arch + "_")):
        raise WarmStartError(
            f"{path} is a '{arch}' checkpoint; --arch {model.warm_start_arch} starts from fairseq's "
            f"{expected_arch} (architectures {expected_arch}*)"
        )
    _check_dictionary(lm_state, model, path)
    _fill(model.decoder, loaders[expected_arch](lm_state, lm_cfg, model, cfg, path), f"{path}: the language model's decoder")
    model.decoder.silence_latent_paths()
    if safe_getattr(cfg, "load_pretrained_encoder_embed", False):
        with torch.no_grad():
            if model.encoder.embed_tokens.weight.shape != model.decoder.embed_tokens.weight.shape:
                raise WarmStartError("--load-pretrained-encoder-embed needs the encoder's embeddings of the decoder's size")
            model.encoder.embed_tokens.weight.copy_(model.decoder.embed_tokens.weight)
    logger.info(f"decoder{' and encoder embeddings' if safe_getattr(cfg, 'load_pretrained_encoder_embed', False) else ''} "
                f"loaded from the {arch} checkpoint {path}; z's paths into the decoder start at zero")


def _lstm_lm_state(lm_state, lm_cfg, model, cfg, path) -> Dict[str, Tensor]:
    decoder = model.decoder
    embed_dim = decoder.embed_tokens.embedding_dim
    lm_tied = bool(safe_getattr(lm_cfg, "share_decoder_input_output_embed", False))
    lm_hidden = int(safe_getattr(lm_cfg, "decoder_hidden_size", -1))
    lm_out_embed = int(safe_getattr(lm_cfg, "decoder_out_embed_dim", -1))
    _require([
        ("cell", "lstm", decoder.cell, "set --decoder-cell lstm (lstm_lm has LSTM layers)"),
        ("embedding size (--decoder-embed-dim)", int(safe_getattr(lm_cfg, "decoder_embed_dim", -1)), embed_dim,
         "set --embed-dim to it"),
        ("hidden size (--decoder-hidden-size)", lm_hidden, decoder.hidden_size, "set --decoder-hidden-size to it"),
        ("number of layers (--decoder-layers)", int(safe_getattr(lm_cfg, "decoder_layers", -1)), decoder.num_layers,
         "set --decoder-layers to it"),
        ("--share-decoder-input-output-embed", lm_tied, decoder.tie_output_embeddings,
         "set --tie-output-embeddings to match it"),
        ("--residuals", bool(safe_getattr(lm_cfg, "residuals", False)), False,
         "the VAE's decoder has no residual connections: start from an LM trained without --residuals"),
        ("adaptive softmax (--adaptive-softmax-cutoff with adaptive_loss)",
         any(key.startswith("decoder.adaptive_softmax") for key in lm_state), False,
         "start from an LM trained with the cross_entropy criterion"),
    ], path)
    if not lm_tied and lm_out_embed != lm_hidden:
        raise WarmStartError(
            f"{path}: the language model projects its {lm_hidden}-d states to {lm_out_embed} dimensions before its "
            f"output layer (--decoder-out-embed-dim); the VAE's untied output layer reads the states directly: "
            f"start from an LM trained with --decoder-out-embed-dim {lm_hidden}, or tie both (--tie-output-embeddings "
            f"with an LM trained with --share-decoder-input-output-embed)"
        )
    out: Dict[str, Tensor] = {"embed_tokens.weight": lm_state["decoder.embed_tokens.weight"]}
    for layer in range(decoder.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            value = lm_state[f"decoder.layers.{layer}.{name}"]
            if name == "weight_ih" and layer == 0 and decoder.latent_input:
                # z's input columns, after the word embedding's, start silent
                value = torch.cat([value, value.new_zeros(value.size(0), decoder.rnn.weight_ih_l0.size(1) - value.size(1))], 1)
            out[f"rnn.{name}_l{layer}"] = value
    if lm_tied:
        if "decoder.additional_fc.weight" in lm_state:
            out["hidden_to_embed.weight"] = lm_state["decoder.additional_fc.weight"]
            out["hidden_to_embed.bias"] = lm_state["decoder.additional_fc.bias"]
    else:
        out["output_projection.weight"] = lm_state["decoder.fc_out.weight"]
        out["output_projection.bias"] = lm_state["decoder.fc_out.bias"]
    return out


def _transformer_lm_state(lm_state, lm_cfg, model, cfg, path) -> Dict[str, Tensor]:
    decoder = model.decoder
    dim = decoder.embed_tokens.embedding_dim

    def lm(name, default=None):
        return safe_getattr(lm_cfg, name, default)

    if not starts_silent(str(cfg.latent_injection)):
        raise WarmStartError(
            f"--load-pretrained-decoder-from with --latent-injection {cfg.latent_injection}: z's memory position "
            f"changes every self-attention of the LM, so the decoder would not start as the LM; set "
            f"--latent-injection embedding, output or embedding+output"
        )
    _require([
        ("embedding size (--decoder-embed-dim)", int(lm("decoder_embed_dim")), dim, "set --embed-dim to it"),
        ("input and output sizes (--decoder-input-dim, --decoder-output-dim)",
         (int(lm("decoder_input_dim", dim)), int(lm("decoder_output_dim", dim))), (dim, dim),
         "the VAE's decoder has no projections: start from a transformer_lm trained with "
         "--decoder-input-dim and --decoder-output-dim equal to --decoder-embed-dim"),
        ("FFN size (--decoder-ffn-embed-dim)", int(lm("decoder_ffn_embed_dim")), int(cfg.ffn_embed_dim),
         "set --ffn-embed-dim to it"),
        ("number of layers (--decoder-layers)", int(lm("decoder_layers")), len(decoder.layers),
         "set --decoder-layers to it"),
        ("number of heads (--decoder-attention-heads)", int(lm("decoder_attention_heads")), int(cfg.attention_heads),
         "set --attention-heads to it"),
        ("--decoder-normalize-before", bool(lm("decoder_normalize_before", False)), bool(cfg.normalize_before),
         "set --normalize-before to match it"),
        ("--share-decoder-input-output-embed", bool(lm("share_decoder_input_output_embed", False)),
         bool(cfg.share_decoder_input_output_embed), "set --share-decoder-input-output-embed to match it"),
        ("activation (--activation-fn)", str(lm("activation_fn", "relu")), "relu",
         "the VAE's layers use relu: start from a transformer_lm trained with it"),
        ("position embeddings (--decoder-learned-pos, --no-token-positional-embeddings)",
         (bool(lm("decoder_learned_pos", False)), bool(lm("no_token_positional_embeddings", False))), (False, False),
         "the VAE's decoder has sinusoidal positions: start from a transformer_lm trained with them"),
        ("embedding options (--no-scale-embedding, --layernorm-embedding, --adaptive-input)",
         (bool(lm("no_scale_embedding", False)), bool(lm("layernorm_embedding", False)), bool(lm("adaptive_input", False))),
         (False, False, False), "start from a transformer_lm trained without them"),
    ], path)
    return {key[len("decoder."):]: value for key, value in lm_state.items() if key.startswith("decoder.")}


# ---------------------------------------------------------------------------------------
# conditional VAEs from a translation model: cvae_transformer from transformer, cvae_lstm from lstm

#: options that change what a network computes without changing a parameter's shape
SHAPELESS_OPTIONS = {
    "transformer": ("encoder_attention_heads", "decoder_attention_heads", "encoder_normalize_before",
                    "decoder_normalize_before", "activation_fn", "no_scale_embedding", "layernorm_embedding",
                    "encoder_learned_pos", "decoder_learned_pos", "no_token_positional_embeddings",
                    "share_decoder_input_output_embed", "share_all_embeddings", "no_decoder_final_norm"),
    "lstm": ("encoder_bidirectional", "decoder_attention", "share_decoder_input_output_embed",
             "share_all_embeddings", "residuals"),
}


def load_pretrained_translation(model, args):
    """``model`` (a conditional VAE) with its source encoder from
    ``--load-pretrained-encoder-from`` and its decoder from ``--load-pretrained-decoder-from``
    (usually the same fairseq translation checkpoint); returns the model."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    loaded = []
    for side in ("encoder", "decoder"):
        path = getattr(args, f"load_pretrained_{side}_from", None)
        if not path:
            continue
        state, arch, base_args = _read_checkpoint(path, f"--load-pretrained-{side}-from")
        base_class = ARCH_MODEL_REGISTRY.get(arch)
        if base_class is None or not issubclass(base_class, model.warm_start_base) or hasattr(base_class, "bag_of_words_logits"):
            raise WarmStartError(
                f"{path} is a '{arch}' checkpoint; --arch {model.warm_start_arch} starts from fairseq's "
                f"{model.warm_start_base.__name__} (--arch {model.warm_start_family} and its sizes)"
            )
        if not starts_silent(getattr(args, "latent_injection", "embedding")):
            raise WarmStartError(
                f"--load-pretrained-{side}-from with --latent-injection {args.latent_injection}: z's extra source "
                f"position changes the decoder's attention, so it would not start as the translation model; set "
                f"--latent-injection embedding, output or embedding+output"
            )
        for name in SHAPELESS_OPTIONS[model.warm_start_family]:
            theirs, ours = safe_getattr(base_args, name, None), getattr(args, name, None)
            if theirs != ours:
                raise WarmStartError(f"{path}: the {arch} model has --{name.replace('_', '-')} {theirs}, "
                                     f"the CVAE {ours}; set it to match")
        prefix = f"{side}."
        weights = {key[len(prefix):]: value for key, value in state["model"].items() if key.startswith(prefix)}
        target = model.encoder.source_network if side == "encoder" else model.decoder
        embed = weights.get("embed_tokens.weight")
        expected = target.embed_tokens.weight
        if embed is not None and embed.size(0) != expected.size(0):
            raise WarmStartError(
                f"{path}: dictionary mismatch: the {arch} model's {side} has a dictionary of {embed.size(0)} "
                f"entries, the CVAE's data {expected.size(0)}; binarize the pairs with the model's dictionaries "
                f"(fairseq-preprocess --srcdict/--tgtdict)"
            )
        own = target.state_dict()
        for key, value in weights.items():
            if key in own and own[key].shape != value.shape:
                raise WarmStartError(
                    f"{path}: {prefix}{key} is {tuple(value.shape)} in the {arch} model, {tuple(own[key].shape)} in "
                    f"the CVAE; give --arch {model.warm_start_arch} the {arch} model's size options"
                )
        _fill(target, weights, f"{path}: the {arch} model's {side}")
        loaded.append(f"{side} from the {arch} checkpoint {path}")
    if loaded:
        model.decoder.silence_latent_paths()
        logger.info("; ".join(loaded) + "; z's paths into the decoder start at zero")
    return model


def carry_optimizer_state(optimizer, model, task, path: str, sides=("encoder", "decoder")) -> int:
    """Give ``optimizer`` (a fairseq optimizer over ``model``, a conditional VAE warm-started
    from the translation checkpoint ``path``) that checkpoint's optimizer state (Adam's
    moments and step counts) for the parameters of ``sides`` the two models share, as
    resuming the translation model's training would; z's own parameters keep none and
    start fresh.  The checkpoint's state is indexed by the position of each parameter in
    its model, so that model is built again from the checkpoint's options to name them.
    Returns how many parameters got a state."""
    from fairseq.models import build_model

    state, arch, base_cfg = _read_checkpoint(path, "--warm-start-optimizer")
    saved = state.get("last_optimizer_state") or {}
    if not saved.get("state"):
        raise WarmStartError(f"--warm-start-optimizer: {path} holds no optimizer state (saved with "
                             f"--no-save-optimizer-state or before any update); drop --warm-start-optimizer")
    inner = getattr(optimizer, "wrapped_optimizer", optimizer)  # --memory-efficient-fp16 wraps it
    theirs = (state.get("optimizer_history") or [{}])[-1].get("optimizer_name")
    if theirs != type(inner).__name__:
        raise WarmStartError(f"--warm-start-optimizer: {path} was trained with {theirs}, this run uses "
                             f"{type(inner).__name__}; give the run the checkpoint's --optimizer")
    own = {id(p) for group in inner.optimizer.param_groups for p in group["params"]}
    base = [p for p in build_model(base_cfg, task).named_parameters() if p[1].requires_grad]
    indices = [index for group in saved["param_groups"] for index in group["params"]]
    if len(indices) != len(base):
        raise WarmStartError(f"--warm-start-optimizer: {path}'s optimizer state covers {len(indices)} parameters, "
                             f"its {arch} model has {len(base)}: a state that is not this model's")
    modules = {"encoder": model.encoder.source_network, "decoder": model.decoder}
    carried = 0
    for index, (name, base_param) in zip(indices, base):
        side, rest = name.split(".", 1)
        entry = saved["state"].get(index)
        if side not in sides or entry is None:
            continue
        param = modules[side].get_parameter(rest)
        if id(param) not in own:
            raise WarmStartError("--warm-start-optimizer needs an optimizer that updates the model's own "
                                 "parameters: train in fp32 or with --memory-efficient-fp16 (--fp16 keeps a "
                                 "flat fp32 copy)")
        shapes = {key: tuple(value.shape) for key, value in entry.items() if torch.is_tensor(value) and value.dim() > 0}
        if any(shape != tuple(param.shape) or shape != tuple(base_param.shape) for shape in shapes.values()):
            raise WarmStartError(f"--warm-start-optimizer: {path}'s optimizer state for {name} is {shapes}, "
                                 f"the parameter {tuple(param.shape)}")
        inner.optimizer.state[param] = {key: value.to(param.device) if torch.is_tensor(value) and value.dim() > 0 else value
                                        for key, value in entry.items()}
        carried += 1
    logger.info(f"--warm-start-optimizer: the optimizer state of {carried} parameters carried from {path}; "
                f"z's own parameters start fresh")
    return carried
