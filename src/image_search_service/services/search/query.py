"""Query understanding: known person names become filters, the rest is the concept.

"Find all images that include Pat, Jack, and an automobile" -> people Pat AND Jack,
concept "an automobile". Names match whole words, case-insensitively, longest name
first; a name nobody in the library has stays part of the concept. When names are
taken out, requests such as "find all images that include" or "photos of" around them
are boilerplate, not part of the concept; a query without known names is embedded as
written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from image_search_service.images.metadata import normalise_name

# Words that join names to each other or to the concept ("Pat, Jack and a car",
# "a dog with Pat", "photos of Pat"): dropped along with the names they join.
_CONNECTORS = frozenset(
    {",", "&", "+", ";", "and", "with", "of", "plus", "including", "featuring", "both", "or"}
)
_TOKEN = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]", re.UNICODE)

_VERB = r"(?:find|show|search(?:\s+for)?|get|give|list|display|look\s+for|i\s+want)"
_NOUN = r"(?:images?|photos?|photographs?|pictures?|pics|shots?|snapshots?)"
_LINK = (
    r"(?:include|includes|including|contain|contains|containing|with|of|having|has|have|"
    r"show|shows|showing|featuring|features|feature|where|in\s+which|that\s+have)"
)
# "find all images that include", "show me photos of", "pictures with", "photos of".
_BOILERPLATE = re.compile(
    rf"^\s*(?:please\s+)?(?:(?:{_VERB})\s+(?:me\s+)?(?:(?:all|any|every|the|some|my)\s+)*"
    rf"(?:(?:of\s+)?(?:the\s+|my\s+)?{_NOUN}\s+)?|(?:(?:all|any|every|the|some|my|a|an)\s+)*"
    rf"{_NOUN}\s+)(?:(?:that|which|where|who)\s+)?(?:{_LINK}\s+)?",
    re.IGNORECASE,
)
_EDGE_JUNK = re.compile(r"^[\s,;:&+.!?-]+|[\s,;:&+.!?-]+$")


@dataclass(frozen=True)
class UnderstoodQuery:
    """How a text query was read; returned to the client so a user can correct it."""

    query: str  # as given
    concept: str  # what is embedded ("" when the query named only people)
    people: tuple[str, ...]  # recognised people, as written in the library

    @property
    def people_keys(self) -> tuple[str, ...]:
        return tuple(normalise_name(p) for p in self.people)


def understand(query: str, known_people: Mapping[str, str]) -> UnderstoodQuery:
    """Read ``query`` against ``known_people`` (name key -> name as written)."""
    text = query.strip()
    body = _BOILERPLATE.sub("", text, count=1) if _BOILERPLATE.match(text) else text
    tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(body)]
    keys = [normalise_name(t) for t, _, _ in tokens]
    names = sorted(
        ({tuple(normalise_name(t) for t in _TOKEN.findall(k)): k for k in known_people}).items(),
        key=lambda item: -len(item[0]),
    )
    is_name = [False] * len(tokens)
    found: list[str] = []
    i = 0
    while i < len(tokens):
        for words, key in names:
            if words and tuple(keys[i : i + len(words)]) == words:
                for j in range(i, i + len(words)):
                    is_name[j] = True
                if known_people[key] not in found:
                    found.append(known_people[key])
                i += len(words)
                break
        else:
            i += 1
    if not found:  # nothing to take out: the text is embedded exactly as before
        return UnderstoodQuery(query=text, concept=text, people=())
    # Drop every run of names and connectors that holds at least one name.
    drop = [False] * len(tokens)
    start = 0
    while start < len(tokens):
        end = start
        while end < len(tokens) and (is_name[end] or keys[end] in _CONNECTORS):
            end += 1
        if end > start:
            if any(is_name[start:end]):
                for j in range(start, end):
                    drop[j] = True
            start = end
        else:
            start += 1
    kept = [(t, s, e) for (t, s, e), d in zip(tokens, drop, strict=True) if not d]
    concept = _rejoin(body, kept)
    concept = _BOILERPLATE.sub("", concept, count=1) if _BOILERPLATE.match(concept) else concept
    return UnderstoodQuery(query=text, concept=_EDGE_JUNK.sub("", concept), people=tuple(found))


def _rejoin(text: str, tokens: list[tuple[str, int, int]]) -> str:
    """The kept tokens with the original spacing between neighbours."""
    out: list[str] = []
    previous_end: int | None = None
    for token, start, end in tokens:
        if previous_end is not None:
            gap = text[previous_end:start]
            out.append(gap if gap and gap.isspace() else " ")
        out.append(token)
        previous_end = end
    return "".join(out)


# "beach sunset -people" / -"red car": words to push the search away from.
_NEGATIVE = re.compile(r'(?:(?<=\s)|^)-(?:"([^"]+)"|(\w[\w\'’-]*))')


def split_negatives(text: str) -> tuple[str, list[str]]:
    """Take ``-word`` and ``-"a phrase"`` out of ``text``: (what remains, negatives)."""
    negatives = [quoted or word for quoted, word in _NEGATIVE.findall(text)]
    if not negatives:
        return text, []
    rest = " ".join(_NEGATIVE.sub(" ", text).split())
    return rest, negatives
