"""The code blocks of README.md and docs/ that tests run as written: snakemake commands, the files the docs ask
a user to write, and docs/extending.md's method of your own (its files and command)."""

import re
import shlex

from workflow_copy import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXTENDING = REPO / "docs" / "extending.md"
OWN_METHOD = "## A method of your own"  # the section whose files belong in the user's folder of methods
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PATH_LINE = re.compile(r"# ([\w./-]+\.(?:yaml|py))")


def fenced_blocks(text: str, language: str | None = None) -> list[tuple[str, str]]:
    """(language, body) of each fenced block of ``text``, of ``language`` only if given."""
    return [(lang, body) for lang, body in FENCE.findall(text) if language in (None, lang)]


def shell_commands(block: str) -> list[str]:
    """The snakemake commands of a bash block: continuation lines joined, comments dropped, `&&` chains split."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            if words[0].endswith("snakemake"):
                commands.append(shlex.join(words[:end]))
            words = words[end + 1 :]
    return commands


def named_files(text: str) -> dict[str, str]:
    """The blocks of ``text`` that name their file in a ``# <path>`` line among their first two (a Hydra
    ``# @package`` line comes first), by that path."""
    files = {}
    for _, block in fenced_blocks(text):
        for line in block.splitlines()[:2]:
            if match := PATH_LINE.fullmatch(line):
                files[match.group(1)] = block
    return files


def _sections(text: str) -> tuple[str, str]:
    """``text`` without the own-method section, and that section."""
    if OWN_METHOD not in text:
        return text, ""
    before, rest = text.split(OWN_METHOD, 1)
    section, _, after = rest.partition("\n## ")
    return before + after, section


def files_to_write() -> dict[str, str]:
    """The files the docs ask the user to write in the workflow's folder (paths relative to it)."""
    files = {}
    for doc in DOCS:
        files |= named_files(_sections(doc.read_text())[0])
    return files


def own_method_files() -> dict[str, str]:
    """docs/extending.md's method of your own: its files, by their paths in the user's folder of methods."""
    return named_files(_sections(EXTENDING.read_text())[1])


def own_method_command() -> str:
    """The snakemake command that runs it."""
    section = _sections(EXTENDING.read_text())[1]
    (command,) = [c for _, block in fenced_blocks(section, "bash") for c in shell_commands(block)]
    return command
