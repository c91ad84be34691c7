"""
The code blocks of README.rst and of the pages in docs/, as a reader copies
them: every C{::} literal block and C{.. code-block::} directive, read with
docutils (so what is found is what is rendered).
"""

from dataclasses import dataclass

from docutils import nodes
from docutils.core import publish_doctree

from procs import ROOT

DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Block:
    """
    One code block.

    @ivar path: the file, relative to the repository.
    @ivar line: the line of the block in that file (roughly: docutils'
        count), to find it when a test names it.
    @ivar language: the C{code-block} language, or C{"::"} for a literal
        block.
    @ivar text: the block's text, dedented, ending in a newline.
    """

    path: str
    line: int
    language: str
    text: str


def documents():
    """
    README.rst and every C{docs/*.rst}, relative to the repository.
    """
    return ["README.rst", *sorted(str(p.relative_to(ROOT)) for p in DOCS.glob("*.rst"))]


def blocks(path):
    """
    The code blocks of C{path} (relative to the repository), in order.
    Directives docutils does not know (Sphinx's C{toctree}) are not blocks.
    """
    tree = publish_doctree(
        (ROOT / path).read_text(),
        source_path=str(ROOT / path),
        settings_overrides={"report_level": 5, "halt_level": 5},
    )
    found = []
    for node in tree.findall(nodes.literal_block):
        if isinstance(node.parent, nodes.system_message):
            continue
        classes = node.get("classes", [])
        language = classes[1] if classes[:1] == ["code"] and len(classes) > 1 else "::"
        found.append(Block(path, node.line or 0, language, node.astext().rstrip("\n") + "\n"))
    return found


def blockWith(language, words, paths=None):
    """
    The one block in the given documents (by default README.rst and
    docs/) in C{language} that contains C{words}.
    """
    found = [
        block
        for path in (paths or documents())
        for block in blocks(path)
        if block.language == language and words in block.text
    ]
    assert len(found) == 1, f"{len(found)} {language} blocks with {words!r}: {found}"
    return found[0].text
