"""Query understanding: known names become filters, the rest is the concept."""

from __future__ import annotations

import pytest

from image_search_service.services.search.query import split_negatives, understand

KNOWN = {"pat": "Pat", "jack": "Jack", "mary ann": "Mary Ann", "mary": "Mary"}


@pytest.mark.parametrize(
    ("query", "people", "concept"),
    [
        (
            "Find all images that include Pat, Jack, and an automobile",
            ("Pat", "Jack"),
            "an automobile",
        ),
        ("Pat and Jack with a red circle", ("Pat", "Jack"), "a red circle"),
        ("pat AND JACK", ("Pat", "Jack"), ""),
        ("beach with Pat and Jack at sunset", ("Pat", "Jack"), "beach at sunset"),
        ("show me pictures of the dog with Pat", ("Pat",), "the dog"),
        ("a red circle with Jack", ("Jack",), "a red circle"),
        ("photos of Mary Ann", ("Mary Ann",), ""),  # the longest name wins
        ("Mary and Pat", ("Mary", "Pat"), ""),
        ("Patrick on a beach", (), "Patrick on a beach"),  # whole words only
        ("find photos with Zed and a car", (), "find photos with Zed and a car"),
        ("Christmas", (), "Christmas"),
    ],
)
def test_understand(query: str, people: tuple[str, ...], concept: str) -> None:
    understood = understand(query, KNOWN)
    assert understood.people == people
    assert understood.concept == concept
    assert understood.people_keys == tuple(p.lower() for p in people)


def test_no_known_people_changes_nothing() -> None:
    assert understand("Pat and Jack", {}).concept == "Pat and Jack"


def test_negatives() -> None:
    assert split_negatives("beach sunset -people") == ("beach sunset", ["people"])
    assert split_negatives('city -"red car" at night -rain') == (
        "city at night",
        ["red car", "rain"],
    )
    assert split_negatives("a well-known x-ray") == ("a well-known x-ray", [])


@pytest.mark.parametrize(
    ("query", "concept"),
    [
        ("Pat, show me photos of a car", "a car"),  # boilerplate after the names too
        ("Pat: a red car!", "a red car"),  # punctuation left at the edges goes
        ("Pat at the\tbeach  at dusk", "at the\tbeach  at dusk"),  # spacing kept as typed
    ],
)
def test_what_is_left_around_the_names(query: str, concept: str) -> None:
    understood = understand(query, KNOWN)
    assert (understood.people, understood.concept) == (("Pat",), concept)


def test_the_query_is_returned_as_given_without_its_outer_spaces() -> None:
    assert understand("  Christmas  ", KNOWN).query == "Christmas"
    assert understand(" Pat at the beach ", KNOWN).query == "Pat at the beach"
