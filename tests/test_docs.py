"""The docs name the source tree as it is: README.md's architecture tree and docs/architecture.md list every
module of model/ and app/, and every module path they name exists."""
import re
from pathlib import Path

import pytest
from helpers import REPO

PACKAGES = ("model", "app")
ENTRY = re.compile(r"^( *)([A-Za-z_][\w]*(?:/|\.py))(?:\s|$)")  # a tree line: indent, then a folder/ or file.py
PATH = re.compile(r"(?<![\w./])((?:[\w-]+/)+[\w-]+\.py)\b")  # a module named by its path: model/nets/blocks.py
BARE = re.compile(r"(?<![\w./])([\w-]+\.py)\b")  # a module named by its file name alone
DOTTED = re.compile(r"(?<![\w./])((?:model|app|experiments)(?:\.\w+)+)")  # model.eval.parts.episode_stats
SOURCE_DIRS = ("model", "app", "experiments", "tests", "scripts")


def source_modules() -> set[str]:
    """Every module under model/ and app/ but the package markers, as repo-relative paths."""
    return {p.relative_to(REPO).as_posix() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}


def section(path: Path, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level."""
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, flags=re.M)
    assert m, f"{path.name} has no '{heading}' heading"
    level = len(m.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", flags=re.M).search(text, m.end())
    return text[m.end():end.start() if end else len(text)]


def tree_paths(text: str) -> list[str]:
    """The files of the first fenced block that lists model/, as paths built from the tree's indentation."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    tree = next((b for b in blocks if re.match(r"model/\s", b)), None)
    assert tree is not None, "no fenced tree block starting with 'model/'"
    folders: list[tuple[int, str]] = []  # (indent, name/) of the folders the current line is inside
    paths = []
    for line in tree.splitlines():
        m = ENTRY.match(line)
        if not m:
            continue
        indent, name = len(m.group(1)), m.group(2)
        while folders and folders[-1][0] >= indent:
            folders.pop()
        if name.endswith("/"):
            folders.append((indent, name))
        else:
            paths.append("".join(f for _, f in folders) + name)
    return paths


def named_paths(text: str) -> tuple[set[str], set[str]]:
    """Module paths (with a folder) and bare module file names a text mentions."""
    return set(PATH.findall(text)), set(BARE.findall(text))


DOCS = {
    "README.md, section 'Architecture'": lambda: section(REPO / "README.md", "Architecture"),
    "docs/architecture.md": lambda: (REPO / "docs" / "architecture.md").read_text(encoding="utf-8"),
}


@pytest.mark.parametrize("doc", list(DOCS))
def test_tree_lists_every_module(doc):
    listed = tree_paths(DOCS[doc]())
    source = source_modules()
    in_packages = {p for p in listed if p.split("/", 1)[0] in PACKAGES}
    missing = sorted(source - in_packages)
    extra = sorted(p for p in listed if not (REPO / p).is_file())
    twice = sorted({p for p in listed if listed.count(p) > 1})
    problems = [f"{what}: {', '.join(names)}" for what, names in
                (("modules missing from the tree", missing), ("tree entries that do not exist", extra),
                 ("listed twice", twice)) if names]
    assert not problems, f"{doc} does not match the source tree:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("doc", list(DOCS))
def test_named_modules_exist(doc):
    paths, bare = named_paths(DOCS[doc]())
    known = {p.name for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")}
    gone = sorted(p for p in paths if not (REPO / p).is_file())
    unknown = sorted(n for n in bare if n not in known)
    problems = [f"{what}: {', '.join(names)}" for what, names in
                (("paths that do not exist", gone), ("file names no module has", unknown)) if names]
    assert not problems, f"{doc} names modules that are not there:\n  " + "\n  ".join(problems)


def unresolved(dotted: str) -> str | None:
    """Why a dotted name (module, then at most one attribute checked) does not resolve, or None."""
    parts = [p for p in dotted.split(".") if p != "py"]
    for i in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:i])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            break
    else:
        return "no such module"
    rest = parts[i:]
    if not rest or (base / f"{rest[0]}.py").is_file() or (base / rest[0]).is_dir():
        return None
    defined = rf"^\s*(?:def|class) {rest[0]}\b|^\s*{rest[0]}\s*[:=]|^\s*from \S+ import .*\b{rest[0]}\b"
    if re.search(defined, source.read_text(encoding="utf-8"), flags=re.M):
        return None
    return f"{source.relative_to(REPO).as_posix()} defines no {rest[0]!r}"


@pytest.mark.parametrize("doc", list(DOCS))
def test_named_python_names_exist(doc):
    text = DOCS[doc]()
    bad = sorted({f"{d} ({why})" for d in DOTTED.findall(text) if (why := unresolved(d))})
    assert not bad, f"{doc} names modules or attributes that are not there:\n  " + "\n  ".join(bad)


def test_tree_parser_reads_folders_and_files():
    text = ("```\nmodel/      x\n  a.py      y\n  nets/     z\n    b.py    w\n            prose that goes on\n"
            "  d.py\napp/\n  e.py\n```\n")
    assert tree_paths(text) == ["model/a.py", "model/nets/b.py", "model/d.py", "app/e.py"]
    assert unresolved("model.eval.parts.episode_stats") is None
    assert unresolved("model.eval.parts.no_such_function") is not None
    assert unresolved("model.no_such_wing") is not None
