"""The commands of the README and of docs/ work when pasted.

Every ``fairseq-*`` command in a ```bash block is parsed by fairseq's own argument
parsing (with the plugin loaded from this repository), so a misspelt option, a removed
architecture or a value outside its choices fails here.  The README's sentence-VAE
workflows (the blocks made only of fairseq commands) also run, in order, in a scratch
folder holding a tiny corpus at the paths they name, with the budget cut to two updates.
"""

import contextlib
import glob
import io
import logging
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, Iterator, List, Tuple

import pytest
from fairseq import options

import helpers

REPO = os.path.dirname(helpers.USER_DIR)
README = os.path.join(REPO, "README.md")
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
FAIRSEQ_COMMANDS = ("fairseq-preprocess", "fairseq-train", "fairseq-validate", "fairseq-generate",
                    "fairseq-interactive", "fairseq-hydra-train")
# appended to a README command when it runs: tiny budget, CPU, few importance samples
RUN_CAPS = {
    "fairseq-train": ["--max-update", "2", "--cpu", "--num-workers", "0", "--log-format", "simple"],
    "fairseq-validate": ["--cpu", "--num-workers", "0", "--iw-samples", "5"],
    "fairseq-generate": ["--cpu", "--num-workers", "0"],
}


def bash_blocks(path: str) -> List[str]:
    text = open(path, encoding="utf-8").read()
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def shell_commands(block: str) -> Iterator[Tuple[str, List[str]]]:
    """(program, argv) for each simple command of a block: continuations joined, variables
    assigned in the block (NAME=..., export NAME=...) and $PWD expanded, comments, pipes,
    redirections, `&` and `;` split off, `$(which fairseq-x)` read as fairseq-x."""
    variables: Dict[str, str] = {"PWD": os.getcwd()}
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\$\(which (fairseq-[a-z-]+)\)", r"\1", line)
        line = re.sub(r"\s\d*>&\d+", " ", line)  # 2>&1
        line = re.sub(r"\s\d+>", " >", line)  # 2> file
        line = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words, commands = list(lexer), [[]]
        for word in words:
            if set(word) <= set(";&|<>"):
                commands.append([] if word != ">" else [">"])
            elif commands[-1][:1] == [">"]:
                commands[-1] = []  # the redirection's target
            else:
                commands[-1].append(word)
        for command in filter(None, commands):
            while command[0] == "export" or re.fullmatch(r"[A-Za-z_]\w*=.*", command[0]):
                if command[0] != "export":
                    name, value = command[0].split("=", 1)
                    variables[name] = value
                command = command[1:]
                if not command:
                    break
            programs = [i for i, word in enumerate(command) if word in FAIRSEQ_COMMANDS]
            if programs:
                start = programs[0]
                yield command[start], command[start + 1:]


def with_repo_user_dir(argv: List[str]) -> List[str]:
    argv = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word == "--user-dir" and os.path.basename(argv[i + 1].rstrip("/")) == "fairseq_vrae":
            argv[i + 1] = helpers.USER_DIR
    return argv


def parse(program: str, argv: List[str]):
    """fairseq's own parsing of the command line, as the console script does it."""
    argv = with_repo_user_dir(argv)
    if program == "fairseq-preprocess":
        return options.get_preprocessing_parser().parse_args(argv)
    parser = {
        "fairseq-train": options.get_training_parser,
        "fairseq-validate": options.get_validation_parser,
        "fairseq-generate": options.get_generation_parser,
        "fairseq-interactive": lambda: options.get_interactive_generation_parser(),
    }[program]()
    return options.parse_args_and_arch(parser, argv)


def check_parses(program: str, argv: List[str], where: str) -> None:
    if program == "fairseq-hydra-train":
        argv = [word if not word.startswith("common.user_dir=") else f"common.user_dir={helpers.USER_DIR}"
                for word in argv]
        done = subprocess.run([os.path.join(os.path.dirname(sys.executable), program), *argv, "--cfg", "job"],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0, f"{where}: {program} {' '.join(argv)}\n{done.stderr[-2000:]}"
        return
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parse(program, argv)
    except SystemExit as error:
        pytest.fail(f"{where}: {program} {' '.join(argv)} does not parse ({error}):\n{stderr.getvalue()[-300:]}")


def all_commands(paths):
    for path in paths:
        for number, block in enumerate(bash_blocks(path)):
            for program, argv in shell_commands(block):
                yield f"{os.path.relpath(path, REPO)} block {number + 1}", program, argv


def test_the_readme_has_its_workflows():
    programs = [program for _, program, _ in all_commands([README])]
    for program in ("fairseq-preprocess", "fairseq-train", "fairseq-validate", "fairseq-generate"):
        assert program in programs
    argvs = [" ".join(argv) for _, _, argv in all_commands([README])]
    assert any("--load-pretrained-decoder-from" in argv for argv in argvs)
    assert any("cvae_transformer" in argv for argv in argvs)


def test_every_fairseq_command_of_the_readme_and_the_docs_parses(monkeypatch):
    monkeypatch.chdir(REPO)
    checked = 0
    for where, program, argv in all_commands([README, *DOCS]):
        check_parses(program, argv, where)
        checked += 1
    assert checked >= 20


def fake_corpus(root: str) -> None:
    """The raw text the README's commands read, one sentence per line."""
    os.makedirs(os.path.join(root, "data"))
    for split, count, seed in (("train", 200, 0), ("valid", 20, 1), ("test", 20, 2)):
        helpers.write_corpus(os.path.join(root, "data", f"ptb.{split}.txt"), helpers.random_sentences(count, seed=seed))


def run_as_console_script(program: str, argv: List[str]) -> None:
    from fairseq_cli import generate, preprocess, train, validate

    main = {"fairseq-preprocess": preprocess.cli_main, "fairseq-train": train.cli_main,
            "fairseq-validate": validate.cli_main, "fairseq-generate": generate.cli_main}[program]
    from fairseq import checkpoint_utils

    argv = with_repo_user_dir(argv) + RUN_CAPS.get(program, [])
    # fairseq keeps the best validation loss on a function attribute: a new process each time
    if hasattr(checkpoint_utils.save_checkpoint, "best"):
        del checkpoint_utils.save_checkpoint.best
    old_argv = sys.argv
    sys.argv = [program, *argv]
    try:
        main()
    finally:
        sys.argv = old_argv


class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_readme_sentence_vae_workflows_run(tmp_path, monkeypatch):
    warm_start_log, messages = logging.getLogger("fairseq_vrae.models.warm_start"), Messages()
    warm_start_log.addHandler(messages)
    monkeypatch.setattr(warm_start_log, "level", logging.INFO)
    monkeypatch.chdir(tmp_path)
    fake_corpus(str(tmp_path))
    ran = []
    try:
        for block in bash_blocks(README):
            commands = list(shell_commands(block))
            lines = [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
            if not commands or len(commands) != len(lines) or "data-bin/ptb" not in block:
                continue  # a block with other commands (scripts/...) is only parsed
            for program, argv in commands:
                run_as_console_script(program, argv)
                ran.append(program)
    finally:
        warm_start_log.removeHandler(messages)
    assert ran.count("fairseq-train") >= 3 and "fairseq-validate" in ran and "fairseq-generate" in ran
    assert os.path.exists(tmp_path / "checkpoints" / "vrae_from_lm" / "checkpoint_best.pt")
    assert any("loaded from the lstm_lm checkpoint checkpoints/lm/checkpoint_best.pt" in m for m in messages.messages)
