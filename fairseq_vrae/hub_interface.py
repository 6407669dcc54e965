"""Python API in the fairseq hub style: ``VRAEModel.from_pretrained(...)`` returns this."""

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from fairseq.data import data_utils
from fairseq.hub_utils import GeneratorHubInterface
from torch import Tensor

from .evaluation import importance_weighted_evaluation
from .vae_math import sentence_seeds

Sentences = Union[str, Sequence[str]]


class VRAEHubInterface(GeneratorHubInterface):
    """Encode, reconstruct, sample, interpolate and impute sentences.

    Every generation method takes fairseq's generation options as keywords (``beam``,
    ``sampling=True``, ``sampling_topk``, ``sampling_topp``, ``temperature``,
    ``max_len_b``, ``unkpen``, ...) and applies the model's tokenizer/BPE (if it was
    loaded with them) on the way in and out.

    Unlike the base class, ``encode`` returns the posterior (mu, logvar); the token ids
    of a sentence come from ``to_token_ids``.  ``translate``/``sample`` keep their base
    meaning (the model's output for each input sentence: here, its reconstruction).
    """

    # ---------------------------------------------------------------- text <-> tokens

    def to_token_ids(self, sentence: str) -> torch.LongTensor:
        """Tokenize, apply BPE and binarize one sentence (the base class's ``encode``)."""
        return super().encode(sentence)

    def _token_ids(self, sentences: Sentences) -> List[torch.LongTensor]:
        return [self.to_token_ids(s) for s in ([sentences] if isinstance(sentences, str) else sentences)]

    # ---------------------------------------------------------------- latent space

    def encode(self, sentences: Sentences) -> Tuple[Tensor, Tensor]:
        """Posterior parameters (mu, logvar), each ``(len(sentences), latent_dim)``."""
        tokens = self._token_ids(sentences)
        batch = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=self.src_dict.pad())
        encoder = self.models[0].encoder
        with torch.no_grad():
            out = encoder(batch.to(self.device), sample_posterior=False)
        return out["mu"], out["logvar"]

    def _mode(self, mode: str, **options):
        """The task generates with ``mode`` and ``options`` inside the ``with`` block."""
        return self.task.using_generation_mode(mode, **options)

    def _best(self, hypotheses) -> List[str]:
        return [self.decode(hypos[0]["tokens"]) for hypos in hypotheses]

    def reconstruct(self, sentences: Sentences, beam: int = 1, sample_posterior: bool = False, **kwargs) -> List[str]:
        """Decode each sentence from its posterior mean (or a posterior sample)."""
        mode = "posterior-sample" if sample_posterior else "posterior-mean"
        with self._mode(mode):
            return self._best(self.generate(self._token_ids(sentences), beam=beam, **kwargs))

    def sample_prior(self, n: int, beam: int = 1, seed: Optional[int] = None, **kwargs) -> List[str]:
        """``n`` sentences decoded from z ~ N(0, I); the same seed gives the same codes."""
        dummy = [torch.LongTensor([self.src_dict.eos()]) for _ in range(n)]
        options = {"num_samples": n}
        if seed is not None:
            options["seed"] = seed
        with self._mode("prior", **options):
            return self._best(self.generate(dummy, beam=beam, **kwargs))

    def interpolate(
        self, start: str, end: str, steps: int = 5, method: str = "linear", beam: int = 1, **kwargs
    ) -> List[str]:
        """``steps + 2`` sentences from start's posterior mean to end's, in order."""
        with self._mode("interpolate", interpolation_steps=steps, interpolation=method):
            hypos = self.generate([torch.cat(self._token_ids([start, end]))], beam=beam, **kwargs)
        return [self.decode(point["tokens"]) for point in hypos[0]]

    def impute(self, sentences: Sentences, fraction: float = 0.2, beam: int = 5, method: str = "prefix",
               iterations: int = 3, **kwargs) -> List[str]:
        """Remove the final ``fraction`` of each sentence's words and fill them in again
        (``method``: ``prefix``, ``open-prefix`` or ``iterative``, see --impute-method)."""
        with self._mode("impute", impute_fraction=fraction, impute_method=method, impute_iterations=iterations):
            return self._best(self.generate(self._token_ids(sentences), beam=beam, **kwargs))

    def string(self, tokens: Tensor) -> str:
        """Token ids -> words.  The base class iterates the tensor element by element,
        which costs a device synchronisation per token on a GPU; one copy to a list
        first makes decoding a batch of samples cheap on any device."""
        if torch.is_tensor(tokens) and tokens.dim() == 1:
            return self.tgt_dict.string(tokens.tolist())
        return super().string(tokens)

    # ---------------------------------------------------------------- base methods

    def sample(self, sentences: Sentences, beam: int = 1, verbose: bool = False, **kwargs):
        """As in fairseq: the model's output for each sentence, i.e. its reconstruction."""
        single = isinstance(sentences, str)
        hypos = self.generate(self._token_ids(sentences), beam, verbose, **kwargs)
        out = self._best(hypos)
        return out[0] if single else out

    def score(self, sentences: Sentences, iw_samples: int = 1, seed: int = 1):
        """How well the model explains each sentence: -log p(x), nats per sentence.

        Estimated with the importance-weighted bound of ``iw_samples`` draws from q(z|x)
        (1 = the single-sample negative ELBO, 500 the usual protocol), the noise fixed
        by ``seed`` and the sentence's position.  Returns, per sentence, a dict with
        ``tokens``, ``nll`` (nats), ``ntokens`` (with ``</s>``) and ``ppl``.
        """
        single = isinstance(sentences, str)
        tokens = self._token_ids(sentences)
        for sentence in tokens:
            self.task.generation_mode().check_length(sentence)
        pad, eos = self.src_dict.pad(), self.src_dict.eos()
        source = data_utils.collate_tokens(tokens, pad, eos).to(self.device)
        sample = {
            "net_input": {
                "src_tokens": source,
                "src_lengths": source.ne(pad).sum(1),
                "prev_output_tokens": data_utils.collate_tokens(tokens, pad, eos, move_eos_to_beginning=True).to(self.device),
            },
            "target": source,
        }
        seeds = sentence_seeds(seed, torch.arange(len(tokens)))
        with torch.no_grad():
            nll = importance_weighted_evaluation(self.models[0], sample, iw_samples, pad, sentence_seeds=seeds)["iw_nll"]
        scored = [
            {"tokens": t, "nll": float(n), "ntokens": t.numel(), "ppl": math.exp(float(n) / t.numel())}
            for t, n in zip(tokens, nll.tolist())
        ]
        return scored[0] if single else scored
