"""The README cannot rot: every command in its bash blocks parses against the tool it names
(the `mlops` parser, the Makefile's targets, the modules and their flags), and is run by the test
or script named for it here, which holds it. Run by a test: the same program and subcommand,
with the test's own paths and blocks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# (program, subcommand) -> (the file that runs it, what in that file shows it does)
RUN_BY: dict[tuple[str, str], tuple[str, str]] = {
    ("make", "demo"): ("docs/screenshots.py", "run_demo("),  # `make demo` is `mlops demo`
    ("make", "test"): (".ci/run", "make test"),
    ("make", "bench"): ("Makefile", "python -m bench.monitor"),
    ("mlops", "demo"): ("docs/screenshots.py", "run_demo("),
    ("mlops", "flows"): ("tests/unit/test_registry.py", 'main(["flows"'),
    ("mlops", "datasets"): ("tests/unit/test_spec_inference.py", '"datasets", "init"'),
    ("mlops", "run"): ("tests/flows/test_data_prep_flow.py", 'main(["run", "data-prep"'),
    ("mlops", "generate-data"): ("tests/integration/test_cli_commands.py", '"generate-data"'),
    ("mlops", "server"): ("tests/integration/test_cli_commands.py", '"server", "start"'),
    ("mlops", "serving"): ("tests/integration/test_cli_commands.py", '"serving", "status"'),
    ("mlops", "models"): ("tests/flows/test_deployment_flow.py", 'main(["models"'),
    ("mlops", "approve"): ("tests/integration/test_approval.py", '"approve"'),
    ("mlops", "pipeline-updated"): (".github/workflows/deploy.yml", "mlops pipeline-updated"),
    ("mlops", "features"): (
        "tests/integration/test_feast_cli.py",
        'run_feast_cli(str(repo), "plan"',
    ),
    ("prefect", "work-pool"): ("tests/integration/test_loop.py", '"work-pool", "create"'),
    ("prefect", "--no-prompt"): ("tests/integration/test_loop.py", '"--no-prompt", "deploy"'),
    ("prefect", "worker"): ("tests/integration/test_loop.py", '"worker", "start"'),
    ("prefect", "variable"): ("tests/integration/test_loop.py", '"variable", "set"'),
    ("curl", "/api/v1.0/predictions"): ("tests/flows/test_monitoring_flow.py", "replay(url, apps"),
    ("curl", "/api/v1.0/feedback"): ("tests/flows/test_monitoring_flow.py", "/feedback"),
    ("export", "PREFECT_API_URL"): ("tests/conftest.py", '"PREFECT_API_URL"'),
    # the integration tests' servers get it from LocalServer(database_url=...)
    ("export", "PREFECT_API_DATABASE_CONNECTION_URL"): (
        "tests/servers.py",
        "database_url=postgres.database(",
    ),
}
# `python -m bench.*` are run by `make bench` (minutes each, not by the test suite)
MODULES_RUN_BY = {
    "bench": ("Makefile", "python -m bench."),
    "docs": ("tests/unit/test_docs.py", ""),
}
PLACEHOLDERS = {
    "NAME": "credit-risk-default-v1",
    "VERSION": "2",
    "RUN_ID": "00000000-0000-0000-0000-000000000000",
    "SHA": "0" * 40,
    "TEXT": "why",
    "MODEL": "credit-risk-default-v1",
}


def readme_commands() -> list[list[str]]:
    """Each command of the README's bash blocks as words (continuations and quoted newlines
    joined, comments dropped)."""
    commands: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            text = f"{pending} {line}".strip() if pending else line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                words = shlex.split(text, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                pending = text
                continue
            pending = ""
            if words:
                commands.append(words)
        assert not pending, f"README: unterminated command {pending!r}"
    return commands


def _variants(words: list[str]) -> list[list[str]]:
    """`a|b|c` alternatives expanded, `[...]` optional parts dropped, placeholders filled."""
    out: list[list[str]] = [[]]
    skipping = False
    for word in words:
        if re.match(r"^\[(-|[A-Z_]+\]$)", word):  # `[--flag ...]`, `[NAME]`: optional
            skipping = not word.endswith("]")
            continue
        if skipping:
            skipping = not word.endswith("]")
            continue
        choices = word.split("|") if "|" in word and not word.startswith("{") else [word]
        out = [[*o, PLACEHOLDERS.get(c, c)] for o in out for c in choices]
    return out


def _signature(words: list[str]) -> tuple[str, str]:
    program = Path(words[0]).name
    if program == "curl":
        return program, next(re.sub(r"^[^/]*", "", w) for w in words if "/api/" in w)
    if program == "export":
        return program, words[1].split("=")[0]
    return program, words[1]


def test_the_readmes_pictures_exist_and_nothing_is_left_to_fill_in() -> None:
    text = README.read_text()
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (ROOT / path).is_file(), f"README shows {path}, which is not in the repository"
    assert not re.findall(r"\b(FIRST_MIN|SECOND_MIN|SUMMARY|TODO|TBD)\b", text)


def test_the_readme_shows_commands() -> None:
    commands = readme_commands()
    assert commands[0] == ["make", "demo"] and commands[1] == ["make", "test"]  # the two first
    assert len(commands) > 30


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w)[:60])
def test_every_readme_command_parses_and_is_run(words: list[str]) -> None:
    program = Path(words[0]).name
    if program == "python":
        assert words[1] == "-m", words
        module = words[2]
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.exists(), f"README: no module {module}"
        source = path.read_text()
        for flag in (w.split("=")[0] for w in words[3:] if w.startswith("--")):
            assert f'"{flag}"' in source or flag == "--json", f"{module} has no {flag}"
        runner, shows = MODULES_RUN_BY[module.split(".")[0]]
    else:
        signature = _signature(words)
        assert signature in RUN_BY, f"README: {' '.join(words)} is run by no test or script"
        runner, shows = RUN_BY[signature]
        if program == "make":
            assert re.search(rf"^{words[1]}:", (ROOT / "Makefile").read_text(), re.M)
        if program == "mlops":
            for variant in _variants(words[1:]):
                build_parser().parse_args(variant)  # exits (SystemExit) on a stale command
    assert shows in (ROOT / runner).read_text(), f"{runner} does not hold {shows!r}"
