"""The docs say what the code does: every command in README.md and docs/ parses, every page is reachable from
the README, every relative link lands, and docs/records.md documents exactly the fields of scaling/record.py.

They describe what is, not the work that made it: no page narrates rounds of work or cites the work items
behind it, and no commit hash appears outside the dated results pages (docs/results/), which name the commit
behind each number. Code comments, docstrings, config comments and the Makefile follow the same rule.

Commands are the lines of ```bash blocks that start with `python sweep.py`, `python -m analysis`, `python -m
scaling` or `make`. Each runs for real, without training anything:
- `make T ...`: `make -n T ...` (the target exists, its recipe expands);
- `python -m tool ...`: `python -m tool --help`;
- `python sweep.py -m ...`: the sweep with `--plan-only` (no cost probe, outputs in a temp folder): it composes
  every point, plans it and writes its plan; `python sweep.py ...` (one trial): `--cfg job`.
- paper-sized commands (`preset=paper`) are composed only (`--cfg job`, without -m): planning full B0 at
  224-300 px on this CPU takes over ten minutes.
A placeholder ImageNet path (`/path/to/imagenet`) becomes a small generated ImageFolder, and the transfer
study's strategy files are written first by the docs' own `python -m tools.strategies` command.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from scaling import record

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
PREFIXES = ("python sweep.py", "python -m analysis", "python -m scaling", "python -m tools", "make ")
IMAGENET = "/path/to/imagenet"  # the docs' placeholder for an ImageNet folder
PAPER = "preset=paper"  # paper-sized: composed, not planned (full B0 at 224-300 px, minutes per network here)
FIELDS_BEGIN, FIELDS_END = "<!-- begin fields", "<!-- end fields -->"
NARRATION = re.compile(r"\b(this|previous|earlier) round\b|\bused to\b", re.IGNORECASE)
ISSUES = re.compile(r"\bissues?\s*#?\d+|\bthe issue(?:'s)?\b|\breview(?:s|'s)?\b", re.IGNORECASE)
# a commit hash: 7-40 hex digits with at least one digit and one letter (not a plain number or word)
HASH = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
RESULTS = ROOT / "docs" / "results"  # the dated pages: the one place a commit hash belongs
# a measured figure that config comments and `make help` must link to, not repeat: a time, or a seed noise
MEASURED = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?:\s*[-–]\s*\d+(?:[.,]\d+)?)?\s*"
                      r"(?:s|seconds?|min|minutes?|h|hours?)\b"
                      r"|(?:σ|sigma|s\.d\.)\s*(?:=|≈|~|of|is)?\s*\d", re.IGNORECASE)
# "what has run on a GPU" is stated once in the docs, on this page, and once in the README; the others link to it
GPU_STATUS = re.compile(r"\bno (?:GPU|test) has (?:run|trained)\b|has (?:not|never) (?:trained|run|been run) on a GPU",
                        re.IGNORECASE)
GPU_PAGE = "docs/slurm.md"
# Known hits in files whose owners have yet to reword them (path -> what is pending): such a file's hits are
# reported as an expected failure, and a file that is clean again is checked like any other.
PENDING: dict[str, str] = {}
README_LINES = 140  # "about 120 lines": a front door, not a manual


# ---- reading the pages ---- #


def bash_blocks(text: str) -> list[str]:
    """The contents of the ```bash blocks of a markdown text."""
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(page: Path) -> list[str]:
    """The commands of a page's bash blocks (continued lines joined, comments dropped), in page order."""
    found = []
    for block in bash_blocks(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()  # a trailing comment
            if line.startswith(PREFIXES):
                found.append(line)
    return found


def every_command() -> list[str]:
    """Each command of the README and docs once, in page order."""
    return list(dict.fromkeys(c for page in PAGES for c in commands(page)))


def of_kind(prefix: str) -> list[str]:
    return [c for c in every_command() if c.startswith(prefix)]


def links(page: Path) -> list[str]:
    """The targets of a page's markdown links and images (not inside code)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


# ---- the pages ---- #


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.split("#")[0]).resolve() for target in links(README) if not target.startswith("http")}
    missing = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_land(page):
    broken = []
    for target in links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_describe_what_is_not_rounds_of_work(page):
    hits = [m.group(0) for m in NARRATION.finditer(re.sub(r"<!--.*?-->", "", page.read_text(), flags=re.DOTALL))]
    assert not hits, f"{page.relative_to(ROOT)} narrates history: {hits}"


def hashes(text: str) -> list[str]:
    """The commits of this repository that the text names (another project's commit, cited as a source, is not one)."""
    found = HASH.findall(text)
    if not found:
        return []
    out = subprocess.run(["git", "cat-file", "--batch-check"], cwd=ROOT, input="\n".join(found) + "\n",
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return [h for h, line in zip(found, out) if line.split()[1:2] == ["commit"]]


def pending(name: str, found: list[str]) -> None:
    """Report the hits of a file listed in PENDING as an expected failure."""
    if found and name in PENDING:
        pytest.xfail(f"pending with its owner: {PENDING[name]} {found}")


@pytest.mark.parametrize("page", [p for p in PAGES if RESULTS not in p.parents],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_commit_hashes_live_on_the_results_pages_only(page):
    name = str(page.relative_to(ROOT))
    found = hashes(re.sub(r"\]\([^)\s]+\)", "]()", page.read_text()))  # a results file's name may hold its commit
    pending(name, found)
    assert not found, f"{name} names commits {found}: say it on its dated results page (docs/results/) instead"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_name_no_issue_or_review(page):
    found = [m.group(0) for m in ISSUES.finditer(page.read_text())]
    assert not found, f"{page.relative_to(ROOT)} names {found}: say what is, not which work item made it"


def tracked(*patterns: str) -> list[Path]:
    """The repository's tracked files that match the git pathspecs."""
    out = subprocess.run(["git", "ls-files", "--", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def python_prose(text: str) -> str:
    """The comments and docstrings of Python source, one per line."""
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(parts)


def config_prose(text: str) -> str:
    """The comments of a YAML file or Makefile, and the Makefile's `## help` strings."""
    return "\n".join(line.partition("#")[2].lstrip("#") for line in text.splitlines() if "#" in line)


def prose_files() -> list[Path]:
    return [*tracked("*.py"), *tracked("conf/**.yaml", "sweeps/**.yaml", "Makefile")]


@pytest.mark.parametrize("path", prose_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_comments_name_no_issue_review_or_commit(path):
    name = str(path.relative_to(ROOT))
    text = path.read_text()
    prose = python_prose(text) if path.suffix == ".py" else config_prose(text)
    found = [m.group(0) for m in ISSUES.finditer(prose)] + hashes(prose)
    pending(name, found)
    assert not found, f"{name}: comments or docstrings name {found}; say what the code does and why"


def help_strings(makefile: str) -> str:
    """The `make help` strings: what follows `## ` on a target's line."""
    return "\n".join(m.group(1) for m in re.finditer(r"^[\w-]+:.*?##\s*(.*)$", makefile, flags=re.MULTILINE))


@pytest.mark.parametrize("path", tracked("conf/**.yaml", "sweeps/**.yaml", "Makefile"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_config_comments_and_make_help_repeat_no_measurement(path):
    """A time or a seed noise is measured: it lives on its dated results page, and these link to it."""
    name = str(path.relative_to(ROOT))
    text = path.read_text()
    prose = help_strings(text) if path.name == "Makefile" else config_prose(text)
    found = [m.group(0) for m in MEASURED.finditer(prose)]
    pending(name, found)
    assert not found, f"{name} repeats measured figures {found}: link to docs/results/ instead"


def test_the_narration_checks_catch_what_they_look_for():
    """The patterns catch a commit and two work items in prose, and leave numbers, words, code and others' commits."""
    prose = python_prose('"""Fixed in 0e63a7b."""\n# see issue 14\nx = "3f2a9c1"  # after the review\n')
    assert hashes(prose) == ["0e63a7b"] and len(ISSUES.findall(prose)) == 2
    assert not hashes("timm's results at huggingface/pytorch-image-models@c865028c34fc05cc7deea8e753b30d8cd1952591")
    assert not hashes("1234567 decade 10,000 images at 2.04x") and not ISSUES.findall("issues of a trial")
    assert config_prose("demo: install  ## the demo (c3667dc)\nx: 1\n").strip() == "the demo (c3667dc)"
    assert help_strings("demo: install  ## the demo (20-22 min)\n\t@printf '%-12s'\n") == "the demo (20-22 min)"
    found = MEASURED.findall("took 20-22 min; ~15 s each; pooled s.d. 0.77; σ = 1.03; 10k images x 3 epochs, v1.5")
    assert found == ["20-22 min", "15 s", "s.d. 0", "σ = 1"]
    said = "No GPU has run any of this. No test has run on a GPU. `train=paper` has not trained on a GPU yet."
    assert len(GPU_STATUS.findall(said)) == 3 and not GPU_STATUS.findall("when the planning machine has no GPU")


def test_what_has_run_on_a_gpu_is_said_once():
    """One statement in docs/slurm.md (and one in the README); every other page links to it."""
    said = {str(p.relative_to(ROOT)): len(GPU_STATUS.findall(p.read_text())) for p in PAGES}
    extra = {name: n for name, n in said.items() if n > (1 if name in (GPU_PAGE, "README.md") else 0)}
    if extra and set(extra) <= set(PENDING) | {GPU_PAGE}:
        pytest.xfail(f"pending with their owners: {extra}")
    assert not extra, f"what has run on a GPU is said again in {extra}: link to {GPU_PAGE} instead"


def test_the_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= README_LINES


@pytest.mark.parametrize("title, page", [("What `make demo` answers", "demo.md"),
                                         ("What `make transfer` answers", "transfer.md")])
def test_the_readmes_numbers_are_their_results_pages(title, page):
    """Every decimal the README shows for a study is on the dated page that measured it (one owner)."""
    text = README.read_text()
    start = text.index(f"## {title}")
    section = text[start:text.index("\n## ", start + 3)]
    numbers = set(re.findall(r"(?<![\w.])[−+-]?(\d+\.\d+)(?![\w.])", section))
    measured = (RESULTS / page).read_text()
    assert len(numbers) > 10 and not [n for n in numbers if n not in measured]


def test_the_docs_have_commands_of_every_kind():
    """The parser finds what the pages hold (a change of fence or prefix must not make the checks vacuous)."""
    assert all(of_kind(prefix) for prefix in PREFIXES if prefix != "python sweep.py")
    assert any(" -m " in c for c in of_kind("python sweep.py")) and "python sweep.py train=quick" in every_command()


# ---- the record schema ---- #


def fields_table() -> str:
    """docs/records.md's field table, as generated from record.MEANINGS."""
    rows = [f"| `{name}` | {meaning} |" for name, meaning in record.MEANINGS.items()]
    return "\n".join(["| field | meaning |", "|---|---|", *rows])


def test_records_page_documents_every_field_with_its_meaning_and_nothing_else():
    page = ROOT / "docs" / "records.md"
    text = page.read_text()
    start, end = text.index(FIELDS_BEGIN), text.index(FIELDS_END)
    head = text.index("\n", start) + 1
    if os.environ.get("UPDATE_DOCS"):
        text = text[:head] + fields_table() + "\n" + text[end:]
        page.write_text(text)
        start, end = text.index(FIELDS_BEGIN), text.index(FIELDS_END)
    documented = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text[head:end], flags=re.MULTILINE))
    assert set(record.FIELDS) == set(record.MEANINGS) and len(record.FIELDS) == len(record.MEANINGS)
    assert list(documented) == list(record.FIELDS), (
        f"undocumented: {sorted(set(record.FIELDS) - set(documented))}; not record fields: "
        f"{sorted(set(documented) - set(record.FIELDS))}; rerun with UPDATE_DOCS=1")
    wrong = {k: v for k, v in documented.items() if v != record.MEANINGS[k]}
    assert not wrong, f"meanings differ from scaling/record.py MEANINGS: {wrong}; rerun with UPDATE_DOCS=1"
    assert all(record.MEANINGS.values()) and not any("|" in v for v in record.MEANINGS.values())


# ---- the commands ---- #


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def tokens(command: str, cwd: Path) -> list[str]:
    """The command's words as bash would pass them ($PWD: `cwd`), with `python` as this interpreter."""
    words = [w.replace("$PWD", str(cwd)) for w in shlex.split(command.replace("'$PWD'", "$PWD"))]
    return [sys.executable if w == "python" else w for w in words]


def explain(proc: subprocess.CompletedProcess, command: str) -> str:
    return f"{command!r} exited {proc.returncode}\n{proc.stdout[-2500:]}\n{proc.stderr[-2500:]}"


@pytest.mark.parametrize("command", of_kind("make "))
def test_make_commands_name_real_targets(command):
    words = shlex.split(command)
    proc = run(["make", "-n", "-C", str(ROOT), *words[1:]], ROOT)
    assert proc.returncode == 0, explain(proc, command)


@pytest.mark.parametrize("module", sorted({shlex.split(c)[2] for c in every_command() if c.startswith("python -m")}))
def test_python_tools_answer_help(module):
    proc = run([sys.executable, "-m", module, "--help"], ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), explain(proc, f"python -m {module} --help")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder to run the docs' commands in: a fit file where `make demo` leaves one, and a tiny ImageFolder."""
    work = tmp_path_factory.mktemp("docs")
    fit = work / "reports" / "demo" / "fit.json"
    fit.parent.mkdir(parents=True)
    fit.write_text('{"selected": {"alpha": 1.2, "beta": 1.05, "gamma": 1.35}}')  # a point of the matched grid
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            folder = work / "imagenet" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (120 * c, 60, 90)).save(folder / f"{i}.jpg")
    return work


def strategy_files(work: Path) -> None:
    """Write the transfer study's strategy configs with the docs' own `python -m tools.strategies` command."""
    for command in of_kind("python -m tools.strategies"):
        proc = run(tokens(command, work), work)
        assert proc.returncode == 0, explain(proc, command)


@pytest.mark.slow
@pytest.mark.parametrize("command", of_kind("python sweep.py"), ids=lambda c: re.sub(r"[^\w=.,+/-]+", "_", c)[16:90])
def test_sweep_commands_compose_and_plan(command, workdir):
    words = tokens(command.replace(IMAGENET, str(workdir / "imagenet")), workdir)
    words[1] = str(ROOT / "sweep.py")
    out = f"paths.output_dir={workdir / 'outputs'}"
    plan = ("-m" in words or "--multirun" in words) and not any(w.lstrip("+") == PAPER for w in words)
    if plan:
        if any(w.lstrip("+").startswith("transfer=") for w in words):
            strategy_files(workdir)
        args = [*words, out, "hydra.sweeper.estimate=false", *(["--plan-only"] if "--plan-only" not in words else [])]
    else:
        args = [*[w for w in words if w not in ("--plan-only", "-m", "--multirun")], out, "--cfg", "job"]
    proc = run(args, workdir)
    assert proc.returncode == 0, explain(proc, command)
    if plan:
        assert "plan written to" in proc.stdout and "\ntrain " not in proc.stdout, explain(proc, command)
