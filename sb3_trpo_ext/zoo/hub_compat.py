"""Hugging Face Hub: what the Zoo's ``push_to_hub`` / ``load_from_hub`` need from the installed hub packages.

:func:`_hub_compat` patches other libraries for the duration of one Zoo command, and restores them after:

1. ``generate_metadata`` for ``rl_zoo3.push_to_hub`` (a fix: only where upstream is broken, see
   :func:`_needs_generate_metadata_shim`);
2. ``requests``' ``HTTPError`` for a missing file, for ``rl_zoo3.load_from_hub`` (a fix: only where upstream is
   broken, see :func:`_needs_missing_entry_translation`);
3. the model card of our keys (not a fix, our own content: for our keys only, whatever the versions).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

__all__ = ["PACKAGE_NAME"]

PACKAGE_NAME = "sb3-trpo-ext"

_MISSING = object()


# ----------------------------------------------------------------------------------------------- gates
def _needs_generate_metadata_shim(hf_push: ModuleType) -> bool:
    """Whether ``huggingface_sb3.push_to_hub`` lacks the ``generate_metadata`` that ``rl_zoo3.push_to_hub`` imports.

    What breaks upstream: rl-zoo3 (2.9.2, the version read here, and earlier) does
    ``from huggingface_sb3.push_to_hub import _evaluate_agent, _generate_replay, generate_metadata``, so
    ``python -m rl_zoo3.push_to_hub`` dies with ``ImportError: cannot import name 'generate_metadata'`` under
    sb3-team-hf-integration 3.2 (the ``huggingface_sb3`` provider for huggingface_hub 2.x that rl-zoo3 2.9
    requires, ``>=3.0,<4.0``), which renamed it ``_generate_metadata`` and returns a ``ModelCardData`` instead of
    the dict ``metadata_save`` takes. The older provider, huggingface-sb3 (<= 3.0), still has ``generate_metadata``.

    Gate: feature detection, not a version number: two distributions with unrelated version lines install
    ``huggingface_sb3``, and the failure is exactly a missing attribute. The shim is added only when the module
    has ``_generate_metadata`` but no ``generate_metadata``; an installed ``generate_metadata`` is never replaced.
    """
    return not hasattr(hf_push, "generate_metadata") and hasattr(hf_push, "_generate_metadata")


def _missing_entry_error() -> type[BaseException] | None:
    """The exception ``huggingface_hub.hf_hub_download`` raises for a file the repository does not have."""
    try:
        from huggingface_hub import errors
    except ImportError:  # huggingface_hub < 0.23 kept them in huggingface_hub.utils (and based them on requests)
        return None
    return getattr(errors, "RemoteEntryNotFoundError", None) or getattr(errors, "EntryNotFoundError", None)


def _needs_missing_entry_translation() -> bool:
    """Whether a missing file on the hub no longer reaches ``rl_zoo3.load_from_hub`` as ``requests``' ``HTTPError``.

    What breaks upstream: rl-zoo3 (2.9.2, read here, and earlier) downloads ``vec_normalize.pkl`` inside
    ``try: ... except requests.exceptions.HTTPError`` ("No normalization file"). Up to huggingface_hub 0.x the
    missing-file error (``EntryNotFoundError``, an ``HfHubHTTPError``) derived from ``requests.HTTPError``; since
    huggingface_hub 1.0 (2.4 installed here) the hub client no longer uses ``requests``, and
    ``RemoteEntryNotFoundError`` escapes that ``except``, so ``load_from_hub`` of any model trained without
    ``VecNormalize`` fails.

    Gate: feature detection on the class itself (is the missing-file error a ``requests.HTTPError``?), which is
    what rl-zoo3's ``except`` depends on, rather than on a huggingface_hub version. No ``requests`` means no
    patch: ``rl_zoo3.load_from_hub`` cannot be imported then anyway.
    """
    try:
        import requests.exceptions
    except ImportError:
        return False
    missing = _missing_entry_error()
    return missing is not None and not issubclass(missing, requests.exceptions.HTTPError)


# --------------------------------------------------------------------------------------------- patches
def _rewrite_model_card(text: str, algo: str, env_id: str) -> str:
    """Point a Zoo model card for one of our keys at our package and a command that resolves the key."""
    for script in ("load_from_hub", "enjoy", "train", "push_to_hub"):
        text = text.replace(f"python -m rl_zoo3.{script} ", f"python -m sb3_trpo_ext.zoo {script} ")
    text = text.replace("pip install rl_zoo3", f'pip install "{PACKAGE_NAME}[zoo]"')
    note = (
        f"\nThe agent is **`sb3_trpo_ext.TRPO`** from [{PACKAGE_NAME}](https://pypi.org/project/{PACKAGE_NAME}/) "
        f"(RL Zoo key `{algo}`), not sb3-contrib's TRPO: its `target_kl` bounds the true KL of the action "
        "distribution. The plain `rl_zoo3` scripts do not know the key; use "
        f"`python -m sb3_trpo_ext.zoo <command>` (same flags), e.g.\n\n"
        "```\n"
        f"python -m sb3_trpo_ext.zoo enjoy --algo {algo} --env {env_id} -f logs/\n"
        "```\n\n"
        "From Python:\n\n"
        "```python\n"
        "from sb3_trpo_ext.zoo import load_zoo_model\n\n"
        f'model, env = load_zoo_model("{algo}", "{env_id}", folder="logs")  # VecNormalize stats restored\n'
        "```\n"
    )
    lines = text.split("\n")
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1)
    lines.insert(title + 1, note)
    return "\n".join(lines)


def _entry_not_found_http_error(entry_not_found: type[BaseException]) -> type[BaseException]:
    """An error that is both ``requests``' ``HTTPError`` (what rl-zoo3 2.9 catches) and the hub's own error
    (what a fixed rl-zoo3 would catch), so the translation cannot hide the error from either."""
    import requests.exceptions

    return type("EntryNotFoundHTTPError", (requests.exceptions.HTTPError, entry_not_found), {})


@contextlib.contextmanager
def _hub_compat(algo: str | None, env_id: str | None) -> Iterator[None]:
    """Make the Zoo's hub scripts work with the installed ``huggingface_sb3`` / ``huggingface_hub``.

    Each fix applies only where its gate finds upstream broken (see the ``_needs_*`` functions); the model
    card of our keys names our package and ``python -m sb3_trpo_ext.zoo`` commands. Everything is restored
    on exit.
    """
    import huggingface_hub.repocard
    import huggingface_sb3

    # The package's ``push_to_hub`` attribute is the function of that name, not the module.
    hf_push = importlib.import_module("huggingface_sb3.push_to_hub")

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, getattr(owner, name, _MISSING)))
        setattr(owner, name, value)

    if _needs_generate_metadata_shim(hf_push):
        new_metadata = hf_push._generate_metadata

        def generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
            metadata = new_metadata(model_name, env_id, mean_reward, std_reward)
            return metadata.to_dict() if hasattr(metadata, "to_dict") else dict(metadata)

        patch(hf_push, "generate_metadata", generate_metadata)

    if _needs_missing_entry_translation():
        from huggingface_hub.errors import EntryNotFoundError  # the gate found huggingface_hub.errors

        original_load = huggingface_sb3.load_from_hub
        # The base class (remote and local): in huggingface_hub 0.x every EntryNotFoundError was an HTTPError,
        # which is what rl-zoo3's ``except`` was written against.
        translated = _entry_not_found_http_error(EntryNotFoundError)

        def load_from_hub(repo_id: str, filename: str) -> str:
            try:
                return original_load(repo_id, filename)
            except EntryNotFoundError as error:
                raise translated(f"{filename} not found in {repo_id}: {error}") from error

        patch(huggingface_sb3, "load_from_hub", load_from_hub)

    if algo in ZOO_ALGORITHMS:
        original_save = huggingface_hub.repocard.metadata_save

        def metadata_save(local_path: str | Path, data: dict[str, Any]) -> str | None:
            path = Path(local_path)
            if path.name == "README.md" and path.is_file():
                path.write_text(
                    _rewrite_model_card(path.read_text(encoding="utf-8"), algo, env_id or "<env>"), encoding="utf-8"
                )
            tags = list(data.get("tags", []))
            tags += [tag for tag in (PACKAGE_NAME, "trpo") if tag not in tags]
            return original_save(local_path, {**data, "tags": tags})

        patch(huggingface_hub.repocard, "metadata_save", metadata_save)

    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
