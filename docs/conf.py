"""Sphinx configuration for the scferry documentation (``bash inst/build_docs.sh``).

Everything that describes code is generated from that code at build time, so it cannot rot:
- the Python API pages: one page per public namespace (``scferry``, ``scferry.metrics``, ...),
  listing the names that namespace exports (``__all__``, else its public functions and classes);
  autosummary then writes one page per name from its numpydoc docstring;
- the R reference: every ``rbridge/man/*.Rd`` converted with ``tools::Rd2HTML`` (needs R);
- the R tutorials: ``vignettes/*.Rmd`` turned into MyST pages (prose and code, not run).
Generated files live in ``docs/api/gen``, ``docs/r/gen`` and ``docs/tutorials/gen`` (git-ignored).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(DOCS))

import scferry  # noqa: E402

project = "scferry"
author = "scferry authors"
copyright = "scferry authors"
version = release = scferry.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
templates_path = ["_templates"]
html_theme = "furo"
html_title = f"scferry {release}"
html_static_path = ["_static"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"          # the numpydoc "Parameters" sections say the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Keep Python's own import side effects (torch threads, OMP policy) out of the way of the build.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# --------------------------------------------------------------------------------------------
# Python API: one page per public namespace, from what the namespace exports
# --------------------------------------------------------------------------------------------
from api_pages import NAMESPACES, public_names  # noqa: E402


def write_api_pages() -> None:
    gen = DOCS / "api" / "gen"
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)
    for modname, title in NAMESPACES.items():
        names = public_names(modname)
        heading = f"``{modname}``: {title}"
        lines = [heading, "=" * len(heading), "", f".. automodule:: {modname}", "   :no-members:", "",
                 f".. currentmodule:: {modname}", "", ".. autosummary::", "   :toctree: generated", "",
                 *[f"   {n}" for n in names], ""]
        (gen / f"{modname}.rst").write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------
# R reference from rbridge/man/*.Rd, and R tutorials from vignettes/*.Rmd
# --------------------------------------------------------------------------------------------
RD2HTML = r"""
args <- commandArgs(TRUE); out <- args[1]
for (f in args[-1]) {
  rd <- tools::parse_Rd(f)
  tools::Rd2HTML(rd, out = file.path(out, sub("\\.Rd$", ".html", basename(f))),
                 package = "scferry", no_links = TRUE)
}
"""


def write_r_reference() -> None:
    gen = DOCS / "r" / "gen"
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)
    rds = sorted((REPO / "rbridge" / "man").glob("*.Rd"))
    if shutil.which("Rscript") is None:
        raise RuntimeError("building the docs needs R (Rscript) to convert rbridge/man/*.Rd; "
                           "install it with `bash inst/setup.sh --no-demo`")
    subprocess.run(["Rscript", "-e", RD2HTML, str(gen), *map(str, rds)], check=True)
    for rd in rds:
        name = rd.stem
        html = (gen / f"{name}.html").read_text()
        # Keep the page body (no head, scripts or the "R Documentation" banner); its <h2> title
        # becomes the page title, the rest is shown as is.
        html = re.search(r"<body>(.*)</body>", html, re.S).group(1)
        html = re.sub(r"<table[^>]*>.*?R Documentation.*?</table>", "", html, count=1, flags=re.S)
        html = re.sub(r"<hr />\s*<div style=\"text-align: center;\">.*?</div>", "", html, flags=re.S)
        m = re.search(r"<h2[^>]*>(.*?)</h2>", html, re.S)
        title = re.sub(r"<[^>]+>", "", m.group(1)).strip() if m else name
        body = html[m.end():] if m else html
        # R's fragment headings are <h3>; with the title removed they read fine under the page title
        head = f"``{name}``: {title}"
        page = [head, "=" * len(head), "", ".. raw:: html", "", "   <div class=\"rd-page\">"]
        page += ["   " + line for line in body.splitlines()]
        page += ["   </div>", ""]
        (gen / f"{name}.rst").write_text("\n".join(page))


def rmd_to_myst(text: str, figures: Path) -> str:
    """An R Markdown vignette as a MyST page body: the YAML header and hidden chunks dropped,
    inline R replaced by its text, chunk headers turned into plain ``r`` code blocks, sections
    one level down (the page title is the vignette's). After a chunk named ``label``, the figures
    knitr drew for it (``figures/label-1.png``, ... made by ``docs/make_figures.py``) are shown."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        chunk = re.match(r"^```\{r\b(.*)\}\s*$", line)
        fence = re.match(r"^(```+)", line)
        if chunk or fence:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if not chunk:                       # a plain code block: as it is
                out += lines[i:j + 1]
            elif not re.search(r"include\s*=\s*FALSE|echo\s*=\s*FALSE", chunk.group(1)):
                out += ["```r", *lines[i + 1:j], "```"]
            if chunk:
                label = re.match(r"^\s*([A-Za-z][\w.-]*)", chunk.group(1))
                if label:
                    for png in sorted(figures.glob(f"{label.group(1)}-[0-9]*.png")):
                        rel = os.path.relpath(png, DOCS / "tutorials" / "gen")
                        out += ["", f"![figure of chunk {label.group(1)}]({rel})", ""]
            i = j + 1
            continue
        for macro in ("Githubpkg", "Biocpkg", "CRANpkg"):
            line = re.sub(r"`r\s+" + macro + r"\(\"([^\"]+)\"\)`", r"*\1*", line)
        line = re.sub(r"`r\s+[^`]*`", "", line)
        out.append("#" + line if re.match(r"^#+ ", line) else line)
        i += 1
    return "\n".join(out)


def write_r_tutorials() -> None:
    gen = DOCS / "tutorials" / "gen"
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)
    for rmd in sorted((REPO / "vignettes").glob("*.Rmd")):
        raw = rmd.read_text()
        m = re.search(r'^title:\s*"(.*)"', raw, re.M)
        title = m.group(1) if m else rmd.stem
        figures = DOCS / "_static" / "figures" / "r" / rmd.stem
        body = rmd_to_myst(raw, figures)
        shown = ("with the figures of its last knitting by `docs/make_figures.py`"
                 if any(figures.glob("*.png")) else "without its results")
        note = (f"*This page is `vignettes/{rmd.name}`, shown from its source at every build, {shown}; "
                "`bash inst/run_tests.sh` knits it in full.*")
        (gen / f"{rmd.stem}.md").write_text(f"# {title}\n\n{note}\n\n{body}\n")


write_api_pages()
write_r_reference()
write_r_tutorials()
