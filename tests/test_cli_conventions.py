"""One table of bad inputs for every aicert command: exit code, one stderr line, JSON.

Each row runs a command line through the same entry point as the console script
(``run_cli``) and checks docs/exit-codes.md: the exit code, exactly one line on
stderr naming the program, no traceback, and with ``--json`` a JSON error object on
stdout. Nothing here boots, builds or talks to a cloud: every row fails before.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from aicert.agent.cli import main as agent_main
from aicert.builder.cli import main as build_main
from aicert.builder.recipe import RECIPE_FORMAT
from aicert.builder.run_cli import COMMON_OPTIONS, run_command
from aicert.builder.run_cli import PLATFORMS as RUN_PLATFORMS
from aicert.verifier.cli import cli as verify_group
from aicert.verifier.cli_runner import run_cli, use_color

PROGRAMS: dict[str, click.Group] = {
    "aicert-verify": verify_group,
    "aicert-build": build_main,
    "aicert-agent": agent_main,
}
GIB = 1 << 30
NONCE = "00" * 16


@dataclass(frozen=True)
class Files:
    """Bad (and a few good) inputs, made once per test in tmp_path."""

    root: Path

    def __getitem__(self, name: str) -> str:
        return str(self.root / name)


def _make_files(root: Path) -> Files:
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    (root / "garbage.json").write_text("{not json")
    (root / "text.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    # Sparse: 2 GiB on paper, nothing on disk; must be refused without being read.
    with (root / "huge").open("wb") as f:
        f.truncate(2 * GIB)
    (root / "code").mkdir()
    (root / "code" / "train.py").write_text("print('hi')\n")
    (root / "job.toml").write_text(
        'command = ["python3", "train.py"]\noutput = "model"\n[code]\npath = "code"\n'
    )
    (root / "typo.toml").write_text('command = ["true"]\noutput = "model"\n[code]\npath = "cdoe"\n')
    (root / "fifo-input.toml").write_text(
        'command = ["true"]\noutput = "model"\n[code]\npath = "fifo"\n'
    )
    (root / "broken.toml").write_text('command = "not a list"\n')
    (root / "unlinked.toml").write_text(
        'weights = { path = "code" }\nlinked_certificate = "missing.json"\n'
        '[[evaluation]]\nname = "e"\ncode = { path = "code" }\ncommand = ["true"]\n'
        'results = "r.json"\n'
    )
    (root / "nonempty").mkdir()
    (root / "nonempty" / "old").write_text("old result")
    for profile in ("qemu",):
        image = root / f"image-{profile}"
        image.mkdir()
        (image / "disk.raw").write_bytes(bytes(4096))
        (image / "recipe.json").write_text(
            json.dumps({"format": RECIPE_FORMAT, "inputs": {"profile": profile}})
        )
    (root / "bad-pem-dir").mkdir()
    (root / "bad-pem-dir" / "ca.pem").write_text("not a certificate")
    return Files(root)


Row = tuple[str, Callable[[Files], list[str]], int]

AZURE = ["--subscription", "s", "--resource-group", "rg", "--location", "westeurope"]
GCP = ["--project", "p", "--bucket", "b"]
GOA = ["--name", "n", "--description", "d", "--source", "s"]

ROWS: list[Row] = [
    # aicert-verify: the certificate
    ("aicert-verify", lambda f: [f["missing.json"]], 3),
    ("aicert-verify", lambda f: [f["dir"]], 3),
    ("aicert-verify", lambda f: [f["fifo"]], 3),
    ("aicert-verify", lambda f: [f["huge"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"]], 3),
    ("aicert-verify", lambda _f: ["/proc/self/mem"], 3),  # unreadable, even for root
    ("aicert-verify", lambda f: ["-v", f["missing.json"]], 3),
    ("aicert-verify", lambda f: [f["missing.json"], "--verbose"], 3),
    # aicert-verify: option values and option files
    ("aicert-verify", lambda f: [f["garbage.json"], "--nonce", "zz"], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--nonce", "abcd"], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--recipe", "a", "--uki", "b"], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--input", "no-equals-sign"], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--no-such-option"], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--trust-root", f["huge"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--trust-root", f["dir"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--trust-root", f["text.pem"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--recipe", f["fifo"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--recipe", f["garbage.json"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--uki", f["huge"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--uki", f["garbage.json"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--platform-profile", f["dir"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--gpu-rim", f["text.pem"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--gpu-rim", f["missing.json"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--gpu-root", f["text.pem"]], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--require-gpus", "-1"], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--platform-profile", "nope"], 3),
    ("aicert-verify", lambda f: [f["garbage.json"], "--reference", f["garbage.json"]], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--maintainer-key", f["text.pem"]], 2),
    (
        "aicert-verify",
        lambda f: [f["garbage.json"], "--reference", f["dir"], "--maintainer-key", f["text.pem"]],
        3,
    ),
    (
        "aicert-verify",
        lambda f: [
            f["garbage.json"],
            "--reference",
            f["garbage.json"],
            "--maintainer-key",
            f["huge"],
        ],
        3,
    ),
    ("aicert-verify", lambda f: [f["garbage.json"], "--ear", f["missing.json"]], 2),
    ("aicert-verify", lambda f: [f["garbage.json"], "--sigstore-issuer", "https://x"], 2),
    (
        "aicert-verify",
        lambda f: [
            *(f["garbage.json"], "--reference", f["garbage.json"]),
            *("--sigstore-trust-root", f["huge"], "--sigstore-identity", "i"),
            *("--sigstore-issuer", "https://x"),
        ],
        3,
    ),
    (
        "aicert-verify",
        lambda f: [f["garbage.json"], "--ear", f["missing"], "--ear-key", f["text.pem"]],
        3,
    ),
    # aicert-verify digest
    ("aicert-verify", lambda f: ["digest", "--shard-size", "1", f["code"]], 2),
    ("aicert-verify", lambda f: ["digest", "--workers", "0", f["code"]], 2),
    ("aicert-verify", lambda f: ["digest", f["missing"]], 3),
    ("aicert-verify", lambda f: ["digest", f["fifo"]], 3),
    ("aicert-verify", lambda f: ["-v", "digest", f["fifo"]], 3),
    # aicert-build image, check-reproducible, record-profile, lock, measure
    ("aicert-build", lambda _f: ["image", "--profile", "nope"], 2),
    ("aicert-build", lambda f: ["image", "--output", f["garbage.json"]], 3),
    ("aicert-build", lambda f: ["image", "--module-signing-key", f["text.pem"]], 2),
    (
        "aicert-build",
        lambda f: ["image", "--module-signatures", f["garbage.json"], "--profile", "qemu"],
        2,
    ),
    (
        "aicert-build",
        lambda f: [
            *("image", "--profile", "gpu", "--output", f"{f['dir']}/image"),
            *("--module-signing-key", f["text.pem"], "--module-signing-cert", f["text.pem"]),
        ],
        3,
    ),
    (
        "aicert-build",
        lambda f: [
            *("image", "--profile", "gpu", "--output", f"{f['dir']}/image"),
            *("--module-signatures", f["garbage.json"]),
        ],
        3,
    ),
    ("aicert-build", lambda _f: ["check-reproducible", "--profile", "nope"], 2),
    ("aicert-build", lambda f: ["check-reproducible", "--workdir", f["garbage.json"]], 3),
    ("aicert-build", lambda f: ["record-profile", "--image", f["missing"]], 3),
    ("aicert-build", lambda _f: ["record-profile", "--platform", "nope"], 2),
    ("aicert-build", lambda _f: ["lock"], 2),
    ("aicert-build", lambda f: ["lock", f["dir"]], 3),
    ("aicert-build", lambda f: ["measure", f["missing"]], 3),
    ("aicert-build", lambda f: ["measure", f["dir"]], 3),
    ("aicert-build", lambda f: ["measure", f["fifo"]], 3),
    ("aicert-build", lambda f: ["measure", f["huge"]], 3),
    ("aicert-build", lambda f: ["measure", f["garbage.json"]], 3),
    # aicert-build environment: the definition is read before mmdebstrap runs
    ("aicert-build", lambda f: ["environment", f["missing"]], 3),
    ("aicert-build", lambda f: ["environment", f["dir"]], 3),
    ("aicert-build", lambda f: ["environment", f["huge"]], 3),
    ("aicert-build", lambda f: ["environment", f["garbage.json"]], 3),
    ("aicert-build", lambda _f: ["environment", "--bogus"], 2),
    # aicert-build run (and run --check): the job file and its inputs, before any boot
    ("aicert-build", lambda f: ["run", f["missing.toml"]], 3),
    ("aicert-build", lambda f: ["run", f["dir"]], 3),
    ("aicert-build", lambda f: ["run", f["fifo"]], 3),
    ("aicert-build", lambda f: ["run", f["huge"]], 3),
    ("aicert-build", lambda f: ["run", f["broken.toml"]], 3),
    ("aicert-build", lambda f: ["run", f["typo.toml"]], 3),
    ("aicert-build", lambda f: ["run", "--check", f["typo.toml"]], 3),
    ("aicert-build", lambda f: ["run", "--check", f["fifo-input.toml"]], 3),
    ("aicert-build", lambda f: ["run", "--check", f["unlinked.toml"]], 3),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--output", f["nonempty"]], 3),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--nonce", "zz"], 2),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--caller-ip", "203.0.113.9"], 2),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--platform", "azure"], 2),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--platform", "gcp"], 2),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--platform", "mars"], 2),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--scratch-gib", "0"], 2),
    # aicert-build deploy and destroy {azure,gcp,aws}, profile capture
    ("aicert-build", lambda f: ["deploy", "azure", *AZURE, "--image", f["dir"]], 3),
    ("aicert-build", lambda f: ["deploy", "azure", *AZURE, "--image", f["image-qemu"]], 3),
    ("aicert-build", lambda f: ["deploy", "azure", *AZURE, "--image", f["garbage.json"]], 3),
    ("aicert-build", lambda f: ["deploy", "azure", *AZURE, "--workers", "0"], 2),
    ("aicert-build", lambda _f: ["deploy", "azure", "--location", "westeurope"], 2),
    ("aicert-build", lambda _f: ["destroy", "azure", "--subscription", "s"], 2),
    ("aicert-build", lambda f: ["deploy", "aws", "--region", "eu-west-1", "--image", f["dir"]], 3),
    ("aicert-build", lambda f: ["deploy", "aws", "--region", "r", "--image", f["image-qemu"]], 3),
    ("aicert-build", lambda _f: ["deploy", "aws", "--region", "eu-west-1", "--workers", "0"], 2),
    ("aicert-build", lambda _f: ["destroy", "aws", "--region"], 2),
    ("aicert-build", lambda f: ["run", f["job.toml"], "--platform", "aws"], 2),
    ("aicert-build", lambda f: ["deploy", "gcp", *GCP, "--image", f["image-qemu"]], 3),
    ("aicert-build", lambda _f: ["deploy", "gcp", "--project", "p"], 2),
    ("aicert-build", lambda _f: ["destroy", "gcp", "--project"], 2),
    ("aicert-build", lambda _f: ["destroy", "gcp", "--project", "p", "--bogus"], 2),
    ("aicert-build", lambda f: ["profile", "capture", f["missing.json"], "--name", "x"], 3),
    ("aicert-build", lambda f: ["profile", "capture", f["garbage.json"], "--name", "x"], 3),
    ("aicert-build", lambda f: ["profile", "capture", f["garbage.json"]], 2),
    ("aicert-build", lambda f: ["profile", "capture", f["garbage.json"], "--per-vm", "6"], 2),
    ("aicert-build", lambda f: ["profile", "capture", f["garbage.json"], "--per-vm", "4=x"], 2),
    ("aicert-build", lambda f: ["profile", "from-go-attestation", f["missing.json"], *GOA], 3),
    ("aicert-build", lambda f: ["profile", "from-go-attestation", f["garbage.json"], *GOA], 3),
    ("aicert-build", lambda f: ["profile", "from-go-attestation", f["huge"], *GOA], 3),
    ("aicert-build", lambda f: ["profile", "from-go-attestation", f["garbage.json"]], 2),
    ("aicert-build", lambda f: ["profile", "migrate", f["garbage.json"]], 3),
    ("aicert-build", lambda f: ["profile", "migrate", f["missing.json"]], 3),
    # aicert-build publish, maintainer-key
    ("aicert-build", lambda f: ["publish", "--key", f["text.pem"]], 2),
    ("aicert-build", lambda f: ["publish", "--key", f["text.pem"], "--recipe", f["code"]], 3),
    ("aicert-build", lambda f: ["publish", "--key", f["text.pem"], "--profile", f["fifo"]], 3),
    ("aicert-build", lambda f: ["publish", "--key", f["text.pem"], "--valid-days", "0"], 2),
    ("aicert-build", lambda f: ["maintainer-key", f["garbage.json"]], 3),
    ("aicert-build", lambda _f: ["no-such-command"], 2),
    # aicert-agent
    ("aicert-agent", lambda f: ["serve", "--intermediates", f["missing"]], 3),
    ("aicert-agent", lambda f: ["serve", "--intermediates", f["garbage.json"]], 3),
    ("aicert-agent", lambda f: ["serve", "--intermediates", f["bad-pem-dir"]], 3),
    ("aicert-agent", lambda f: ["serve", "--event-log", f["dir"]], 3),
    ("aicert-agent", lambda _f: ["serve", "--port", "x"], 2),
    ("aicert-agent", lambda _f: ["prepare-scratch", "--wait", "-1"], 2),
    ("aicert-agent", lambda _f: ["ready-report", "--console"], 2),
    ("aicert-agent", lambda _f: ["no-such-command"], 2),
]


def _run(program: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(PROGRAMS[program], program, argv)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err


def _command(program: str, argv: list[str]) -> tuple[str, click.Command]:
    """The (sub)command a command line runs, and its name path."""
    command: click.Command = PROGRAMS[program]
    path = [program]
    for arg in argv:
        if isinstance(command, click.Group) and arg in command.commands:
            command = command.commands[arg]
            path.append(arg)
    if isinstance(command, click.Group) and program == "aicert-verify":
        command, path = command.commands["verify"], [*path, "verify"]
    return " ".join(path), command


def _leaves(name: str, command: click.Command) -> set[str]:
    if not isinstance(command, click.Group):
        return {name}
    return set().union(*(_leaves(f"{name} {n}", c) for n, c in command.commands.items()))


_PLACEHOLDER = Files(Path("/t"))


def _cases() -> list[object]:
    cases: list[object] = []
    for program, args, code in ROWS:
        argv = args(_PLACEHOLDER)
        shown = " ".join(a.removeprefix("/t/") for a in argv)
        cases.append(pytest.param(program, args, code, False, id=f"{program} {shown} -> {code}"))
        _, command = _command(program, argv)
        if any("--json" in p.opts for p in command.params):
            cases.append(
                pytest.param(program, args, code, True, id=f"{program} {shown} --json -> {code}")
            )
    return cases


@pytest.mark.parametrize(("program", "args", "expected", "as_json"), _cases())
def test_bad_input_gives_the_documented_code_and_one_line(
    program: str,
    args: Callable[[Files], list[str]],
    expected: int,
    as_json: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    argv = args(_make_files(tmp_path))
    code, out, err = _run(program, [*argv, "--json"] if as_json else argv, capsys)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{program}: error: "), err
    assert code == expected, err
    if as_json:
        error = json.loads(out)["error"]
        assert error["exit_code"] == expected
        assert error["message"] in lines[0]
        assert error["type"] == ("UsageError" if expected == 2 else error["type"])
        assert set(error) == {"check", "type", "message", "exit_code"}


def test_the_table_covers_every_command() -> None:
    """A new subcommand gets rows here."""
    covered = {_command(program, args(_PLACEHOLDER))[0] for program, args, _ in ROWS}
    every = set().union(*(_leaves(name, group) for name, group in PROGRAMS.items()))
    assert every <= covered, sorted(every - covered)


@pytest.mark.parametrize(("no_color", "colored"), [(None, True), ("1", False), ("", True)])
def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, colored: bool
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, open(os.devnull, "w") as pipe_like:
        assert use_color(terminal) is colored
        assert use_color(pipe_like) is False
    os.close(leader)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_bare_command_shows_its_help(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(program, [], capsys)
    assert code == 0
    assert out.startswith(f"Usage: {program} [OPTIONS] COMMAND [ARGS]...")
    assert err == ""


def test_every_run_option_is_common_or_declared_by_a_platform() -> None:
    """A new option of ``run`` names its platforms, and a new platform declares its options."""
    names = {param.name for param in run_command.params}
    declared = set().union(*(run.options for run in RUN_PLATFORMS.values()))
    assert names == COMMON_OPTIONS | declared
    assert not COMMON_OPTIONS & declared
    choice = next(p for p in run_command.params if p.name == "platform").type
    assert isinstance(choice, click.Choice)
    assert list(choice.choices) == list(RUN_PLATFORMS)


def _foreign_options() -> list[object]:
    cases: list[object] = []
    for platform, run in RUN_PLATFORMS.items():
        for param in run_command.params:
            if param.name in COMMON_OPTIONS or param.name in run.options:
                continue
            argv = [param.opts[0]] if getattr(param, "is_flag", False) else [param.opts[0], "x"]
            cases.append(pytest.param(platform, argv, id=f"{platform} {param.opts[0]}"))
    return cases


@pytest.mark.parametrize(("platform", "option"), _foreign_options())
def test_run_refuses_every_option_of_another_platform(
    platform: str, option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _make_files(tmp_path)
    argv = ["run", files["job.toml"], "--output", str(tmp_path / "out"), "--platform", platform]
    code, _out, err = _run("aicert-build", [*argv, *option], capsys)
    assert code == 2
    assert f"not for --platform {platform}: {option[0]} (only for " in err
