"""What every platform's commands share: the ``deploy`` and ``destroy`` groups, the
recipe check, publish-and-print, list-confirm-delete, and ``run``'s options.

Each platform's ``cli`` module adds its subcommand to :data:`deploy` and
:data:`destroy` and declares the ``run`` options it takes (``RUN_OPTIONS``), so
``run`` refuses every other platform's options by one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from aicert.builder.job_file import JobFile
from aicert.builder.job_runner import JobOutcome
from aicert.builder.mkosi import PROFILES, profile_platform
from aicert.builder.recipe import load_recipe
from aicert.verifier.errors import InputError

from .base import Platform, Say

ScopeT = TypeVar("ScopeT")


def say(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def deploy() -> None:
    """Publish the built image where it can be booted."""


@click.group()
def destroy() -> None:
    """Delete what aicert created on a cloud (found by its tags, labels or names)."""


def require_profile(image_dir: Path, profile: str, why: str) -> None:
    """Refuse an image built for another platform (``why``: what it would lack)."""
    recipe_path = image_dir / "recipe.json"
    inputs = load_recipe(recipe_path).get("inputs")
    built = inputs.get("profile") if isinstance(inputs, dict) else None
    if built not in PROFILES or profile_platform(built) != profile:
        over = [name for name in PROFILES if name != profile and profile_platform(name) == profile]
        also = f" or {', '.join(over)}" if over else ""
        raise InputError(
            f"{recipe_path} is the recipe of a {built!r} image; deploy {profile} publishes "
            f"only images built with 'aicert-build image --profile {profile}'{also} ({why})"
        )


def publish_and_print(platform: Platform[Any, Any, Any], spec: object) -> None:
    """Publish; what was sent goes to stderr, the image id alone to stdout."""
    published = platform.publish(spec, say=say)
    if published.summary is not None:
        say(published.summary)
    click.echo(published.image_id)


def destroy_confirmed(
    platform: Platform[Any, Any, ScopeT], scope: ScopeT, *, where: str, yes: bool
) -> None:
    """List what ``destroy`` would delete, ask (unless ``yes``), then delete it.

    Declining exits 5, as an interrupt does: nothing was deleted.
    """
    found = platform.leftovers(scope)
    if not found:
        say(f"no aicert resources in {where}")
        return
    for item in found:
        say(f"  {item.kind}  {item.id}")
    if not yes and not click.confirm(
        f"delete these {len(found)} resources?", default=False, err=True
    ):
        say("nothing deleted")
        raise SystemExit(5)
    deleted = platform.destroy(scope, say=say)
    say(f"deleted {len(deleted)} resources")


yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


def deployment_option(what: str) -> Any:
    return click.option(
        "--deployment", default=None, help=f"Only resources of {what}; default: all."
    )


@dataclass(frozen=True)
class RunOptions:
    """The values of ``aicert-build run``'s options; each platform reads its own."""

    image: Path
    output: Path
    scratch_gib: int | None
    boot_timeout: float
    ca_dir: Path | None
    recipe: Path | None
    caller_ip: str | None
    platform_profile: str | None
    trust_roots: tuple[Path, ...]
    subscription: str | None
    resource_group: str | None
    location: str | None
    image_version_id: str | None
    vm_size: str | None
    region: str | None
    ami: str | None
    instance_type: str | None
    subnet: str | None
    gcp_project: str | None
    zone: str | None
    gcp_image: str | None
    secure_boot: bool

    @property
    def recipe_path(self) -> Path:
        """``--recipe``, else the image directory's recipe.json."""
        return self.recipe or self.image / "recipe.json"

    def verify_hint(self) -> str:
        """The options an auditor gives aicert-verify for a cloud run's certificate."""
        return f"--recipe {self.recipe_path}" + "".join(
            [
                f" --platform-profile {self.platform_profile}" if self.platform_profile else "",
                *(f" --trust-root {p}" for p in self.trust_roots),
            ]
        )


RunJob = Callable[[click.Context, JobFile, RunOptions, Say], tuple[JobOutcome, str]]
"""A platform's ``run``: the job's outcome and the options auditors give aicert-verify."""


@dataclass(frozen=True)
class RunPlatform:
    """What a platform declares for ``aicert-build run``."""

    options: frozenset[str]
    """The names of the ``run`` options it takes besides the common ones; ``run``
    refuses every other platform's options."""
    run_job: RunJob


def need(platform: str, required: Mapping[str, object]) -> None:
    """Refuse a run that lacks options the platform cannot do without (label: value)."""
    missing = [label for label, value in required.items() if not value]
    if missing:
        raise click.UsageError(f"--platform {platform} needs {', '.join(missing)}")
