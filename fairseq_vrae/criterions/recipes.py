"""Named flag sets against posterior collapse, scaled to the run's --max-update.

``--vae-recipe NAME`` sets the KL schedule and its parameters, ``--word-dropout`` and
``--free-bits`` from the table below (replacing values given for those flags); the
docs/training.md ("Recipes against posterior collapse") compares them.
"""

from typing import Callable, Dict

#: recipe -> settings of vrae_elbo for a run of U updates
RECIPES: Dict[str, Callable[[int], dict]] = {
    # Bowman et al. (2016): logistic KL annealing (half-way at U/3) and word dropout
    "bowman": lambda updates: dict(
        kl_schedule="logistic", kl_logistic_midpoint=updates // 3, kl_logistic_steepness=12 / updates,
        word_dropout=0.25, free_bits=0.0,
    ),
    # Fu et al. (2019): four cycles over the run, rising over half of each
    "cyclical": lambda updates: dict(
        kl_schedule="cyclical", kl_cycles=4, kl_cycle_rising=0.5, kl_total_updates=updates,
        word_dropout=0.0, free_bits=0.0,
    ),
    # linear annealing over half the run with free bits of 0.25 nats per dimension
    "anneal-free-bits": lambda updates: dict(
        kl_schedule="linear", kl_warmup_updates=max(1, updates // 2), free_bits=0.25, word_dropout=0.0,
    ),
}


def recipe_settings(name: str, max_update: int) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown --vae-recipe {name!r}; choose from {', '.join(RECIPES)}")
    if not max_update or max_update <= 0:
        raise ValueError(f"--vae-recipe {name} scales its schedule to the run: give --max-update")
    return RECIPES[name](int(max_update))
