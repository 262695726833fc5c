"""Canonical XML 1.1 (inclusive, without comments) of a document or of one element.

Enough of W3C's Canonical XML 1.1 for signed SWID tags such as NVIDIA's RIMs: documents
without DTD, entity declaration or processing instruction (all refused). Namespace
declarations are rendered where their value differs from the nearest rendered
ancestor's (at an apex element: every namespace in scope), sorted by prefix; attributes
sorted by namespace URI then local name; character data and attribute values escaped as
the specification prescribes. Expat has already normalised line ends and attribute
values and resolved character references.
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field

from ..errors import FormatError

XMLNS = "xmlns"


@dataclass
class Element:
    """One element as written: its qualified name, attributes in document order, and
    children (elements and character data) in order."""

    name: str
    attributes: list[tuple[str, str]]
    children: list[Element | str] = field(default_factory=list)

    def declarations(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, value in self.attributes:
            if name == XMLNS:
                found[""] = value
            elif name.startswith(XMLNS + ":"):
                found[name[len(XMLNS) + 1 :]] = value
        return found

    def elements(self) -> list[Element]:
        return [c for c in self.children if isinstance(c, Element)]


def parse_document(data: bytes, what: str) -> Element:
    """The document element of ``data``; FormatError for anything outside the subset."""
    parser = xml.parsers.expat.ParserCreate()
    parser.ordered_attributes = True
    parser.buffer_text = True
    stack: list[Element] = []
    root: list[Element] = []

    def refuse(*_args: object) -> None:
        raise FormatError(f"{what}: DTDs, entities and processing instructions are refused")

    def start(name: str, attrs: list[str]) -> None:
        element = Element(name, list(zip(attrs[::2], attrs[1::2], strict=True)))
        if stack:
            stack[-1].children.append(element)
        elif root:
            raise FormatError(f"{what}: more than one document element")
        else:
            root.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].children.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ProcessingInstructionHandler = refuse
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise FormatError(f"{what}: not well-formed XML ({exc})") from None
    if not root:
        raise FormatError(f"{what}: no document element")
    return root[0]


def canonicalize(
    element: Element, in_scope: dict[str, str] | None = None, *, skip: Element | None = None
) -> bytes:
    """The canonical form of ``element`` as an apex (``in_scope``: the namespaces its
    ancestors declare); ``skip`` is left out with its subtree (enveloped signature)."""
    out: list[str] = []
    _render(element, dict(in_scope or {}), {}, out, skip)
    return "".join(out).encode()


def _render(
    element: Element,
    scope: dict[str, str],
    rendered: dict[str, str],
    out: list[str],
    skip: Element | None,
) -> None:
    scope = {**scope, **element.declarations()}
    decls = []
    for prefix in sorted(scope):
        value = scope[prefix]
        if prefix == "" and value == "" and rendered.get("", "") == "":
            continue
        if rendered.get(prefix) != value:
            decls.append((prefix, value))
    now_rendered = {**rendered, **dict(decls)}
    attrs = []
    for name, value in element.attributes:
        if name == XMLNS or name.startswith(XMLNS + ":"):
            continue
        prefix, colon, local = name.partition(":")
        if colon:
            if prefix not in scope and prefix != "xml":
                raise FormatError(f"XML: undeclared namespace prefix {prefix!r}")
            uri = "http://www.w3.org/XML/1998/namespace" if prefix == "xml" else scope[prefix]
            attrs.append(((uri, local), name, value))
        else:
            attrs.append((("", name), name, value))
    attrs.sort(key=lambda a: a[0])
    out.append(f"<{element.name}")
    for prefix, value in decls:
        name = f"{XMLNS}:{prefix}" if prefix else XMLNS
        out.append(f' {name}="{_attr(value)}"')
    for _key, name, value in attrs:
        out.append(f' {name}="{_attr(value)}"')
    out.append(">")
    for child in element.children:
        if isinstance(child, str):
            out.append(_text(child))
        elif child is not skip:
            _render(child, scope, now_rendered, out, skip)
    out.append(f"</{element.name}>")


def _text(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")
    )


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace('"', "&quot;")
        .replace("\t", "&#x9;")
        .replace("\n", "&#xA;")
        .replace("\r", "&#xD;")
    )
