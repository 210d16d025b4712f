"""Sphinx configuration of the documentation site (``make docs``; output in ``docs/_build/html``).

The narrative pages are Markdown (MyST). The Markdown pages kept in ``docs/`` (benchmark.md, vine.md, zoo.md,
private_api.md, the benchmark report) and ``CHANGELOG.md`` are included, never copied: their relative links are
rebased onto this folder when they are read (``rebase_included_links`` below). The API reference is autodoc
over the package's ``:param:`` docstrings. No network: nothing is fetched (no intersphinx), external links are
not checked.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent
ROOT = SITE.parents[1]
sys.path.insert(0, str(ROOT))

import sb3_trpo_ext  # noqa: E402

project = "sb3-trpo-ext"
author = "sb3-trpo-ext contributors"
copyright = "sb3-trpo-ext contributors"
version = release = sb3_trpo_ext.__version__

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []

# -- MyST: the Markdown pages ---------------------------------------------------------------------------------
# GitHub-style anchors for headings down to level 4, so that links like ``benchmark.md#critic-optimizer-step``
# written for GitHub resolve here too.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# -- autodoc --------------------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}
# Our overrides of SB3 methods carry their own docstrings; an undocumented one must not show SB3's text (whose
# cross-references point into SB3's documentation).
autodoc_inherit_docstrings = False
python_use_unqualified_type_names = True
# Markdown as GitHub shows it: "--envs" stays two hyphens (docutils would make an en dash of it), quotes stay straight.
smartquotes = False

# -- nitpicky (make docs passes -n): every cross-reference must resolve, except into the third-party packages
# whose documentation is not part of this site (no intersphinx: the build is offline).
nitpick_ignore_regex = [
    (
        "py:.*",
        r"(torch|th|nn|np|numpy|gym|gymnasium|spaces|stable_baselines3|sb3_contrib|rl_zoo3|optuna|dask|"
        r"distributed|yaml|pandas|matplotlib|mujoco|ale_py|huggingface_hub|cloudpickle|io|pathlib|argparse|"
        r"collections|typing|types|enum|concurrent|multiprocessing|subprocess|pickle|_pickle|zipfile|os|re|json|"
        r"threading|runpy)(\..*)?",
    ),
    # bare names of other packages' classes in annotations (``from __future__ import annotations``: autodoc sees
    # the name as written): pathlib, rl_zoo3, rich and SB3
    ("py:class", r"(Path|EvalCallback|CheckpointCallback|ExperimentManager|rich\..*)"),
    (
        "py:class",
        r"(GymEnv|Schedule|RolloutBuffer|DictRolloutBuffer|VecEnv|VecEnvWrapper|BaseAlgorithm|BasePolicy|"
        r"ActorCriticPolicy|BaseCallback|MaybeCallback|Distribution|PyTorchObs|RolloutBufferSamples|SubprocVecEnv)",
    ),
    # the ``Self...`` type variables of the algorithms' fluent methods (``learn`` returns the model)
    ("py:class", r"sb3_trpo_ext\..*\.Self[A-Za-z]*"),
    # private helpers named in docstrings for readers of the code; private names are not documented here
    ("py:.*", r"(.*\.)?_[A-Za-z][A-Za-z0-9_]*"),
]

# -- HTML -----------------------------------------------------------------------------------------------------
try:
    import sphinx_rtd_theme  # noqa: F401

    html_theme = "sphinx_rtd_theme"
    html_theme_options = {"navigation_depth": 3, "collapse_navigation": False}
except ImportError:  # the default theme: the site still builds without the docs extra's theme
    html_theme = "alabaster"
html_title = f"sb3-trpo-ext {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_copy_source = False


# -- included Markdown pages -----------------------------------------------------------------------------------
# Pages of docs/ (and the changelog) that the site includes; a link to one of them from another included page
# becomes a link to its page here.
INCLUDED_PAGES = {
    ROOT / "docs" / "benchmark.md": "benchmarks.md",
    ROOT / "docs" / "bench" / "report.md": "bench_report.md",
    ROOT / "docs" / "bench" / "claims.md": "benchmark_suite.md",
    ROOT / "docs" / "vine.md": "vine_measurements.md",
    ROOT / "docs" / "zoo.md": "zoo.md",
    ROOT / "docs" / "private_api.md": "private_api.md",
    ROOT / "CHANGELOG.md": "changelog.md",
    ROOT / "README.md": "index.md",
}

# [text](target) and ![alt](target); the target ends at the first ")" or space (an optional "title" follows)
_LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _rebase(target: str, included: Path, including_dir: Path) -> str:
    if target.startswith("#") or _SCHEME.match(target):
        return target
    path, hash_, fragment = target.partition("#")
    absolute = Path(os.path.normpath(included.parent / path))
    page = INCLUDED_PAGES.get(absolute)
    if page is not None:
        absolute = SITE / page
    return os.path.relpath(absolute, including_dir) + hash_ + fragment


def rebase_included_links(app, relative_path, parent_docname, content) -> None:
    """Relative links and images of an included Markdown file, rebased from the file's folder onto the
    including page's (MyST resolves them from the including page): data files become downloads, links to
    another included page go to its page of the site."""
    included = Path(os.path.normpath(Path(app.srcdir) / relative_path))
    if included.suffix != ".md":
        return
    # the including pages all live at the site's top level
    including_dir = Path(app.srcdir)
    content[0] = _LINK.sub(lambda m: m.group(1) + _rebase(m.group(2), included, including_dir), content[0])


# -- cross-references written for readers of the code ------------------------------------------------------------
# The docstrings name objects the way the code's readers see them: ``:func:`lstm_sequence``` from another module of
# the package, ``:meth:`VineSampler.run_branches```, ``:data:`COLUMNS``` (a constant without a doc comment).
# Sphinx resolves a name only from the current module; this resolves what is left: a name that ends exactly one
# documented object's full name links to it; a name that imports (a real object of the package that has no entry
# of its own) is set as code without a link. Anything else (a typo, a renamed object) stays a broken reference:
# -n -W fails the build.


def _imports(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def resolve_package_names(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    domain = env.get_domain("py")
    matches = [
        name
        for name, entry in domain.objects.items()
        if name.startswith("sb3_trpo_ext.") and name.endswith("." + target) and not entry.aliased
    ]
    if len(matches) == 1:
        entry = domain.objects[matches[0]]
        return domain.resolve_xref(env, node["refdoc"], app.builder, entry.objtype, matches[0], node, contnode)
    module, cls = node.get("py:module") or "", node.get("py:class") or ""
    scopes = [f"{module}.{cls}" if cls else None, module or None, None]
    if any(_imports(f"{scope}.{target}" if scope else target) for scope in scopes):
        return contnode
    return None


def setup(app):
    app.connect("include-read", rebase_included_links)
    app.connect("missing-reference", resolve_package_names)
