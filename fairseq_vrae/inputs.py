"""Interactive inputs a task cannot take: skipped with a message and counted.

fairseq-interactive hands a task one buffer of lines at a time
(``get_interactive_tokens_and_lengths``, then ``build_dataset_for_inference`` and the
batch iterator's size filter); one unusable line must not stop the others, nor go
missing without a word.  Both tasks (``vrae_lm``, ``latent_translation``) skip such a
line with :func:`skip_input`, which keeps the task's ``skipped_inputs`` count and logs
it with the reason.
"""

import logging

logger = logging.getLogger(__name__)


def skip_input(task, reason) -> int:
    """Count one skipped input line on ``task`` and log why; returns the count so far."""
    task.skipped_inputs = getattr(task, "skipped_inputs", 0) + 1
    logger.warning(f"skipping an input line ({task.skipped_inputs} skipped so far): {reason}")
    return task.skipped_inputs


class InteractiveLines(list):
    """The token tensors of one buffer of fairseq-interactive's lines.

    ``first_id`` is the id fairseq-interactive prints for the buffer's first line
    (``S-<first_id>``), so that a message can name the line it skips.  The mark tells
    the inference dataset built from these lines (whose ``src`` this list becomes)
    from the hub interface's inputs, which fairseq's own size check keeps handling.
    """

    def __init__(self, tokens, first_id: int = 0):
        super().__init__(tokens)
        self.first_id = first_id


def interactive_lines(dataset):
    """The :class:`InteractiveLines` a dataset was built from, or None."""
    source = getattr(dataset, "src", None)
    return source if isinstance(source, InteractiveLines) else None
