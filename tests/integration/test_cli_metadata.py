"""`image-search search` with people, tags, captions and combined queries (a real
subprocess on a library of real files with real XMP)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import cli_env, run  # noqa: F401  (fixture)
from tests.xmp_factories import write_jpeg_with_xmp, xmp_packet


def test_people_filters_labels_and_combined_queries(
    cli_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    lib = tmp_path / "photos"
    write_jpeg_with_xmp(lib / "both.jpg", xmp_packet(people=["Pat", "Jack"]), seed=1)
    write_jpeg_with_xmp(lib / "pat.jpg", xmp_packet(people=["Pat"]), seed=2)
    write_jpeg_with_xmp(
        lib / "tree.jpg", xmp_packet(caption="Christmas morning at the cabin"), seed=3
    )
    write_jpeg_with_xmp(lib / "plain.jpg", None, seed=4)
    run(cli_env, "index", str(lib))

    found = json.loads(
        run(
            cli_env, "search", "Find all images that include Pat, Jack, and an automobile", "--json"
        ).stdout
    )
    assert found["understood"]["concept"] == "an automobile"
    assert [Path(r["path"]).name for r in found["results"]] == ["both.jpg"]
    assert [p["name"] for p in found["results"][0]["people"]] == ["Jack", "Pat"]

    shown = run(cli_env, "search", "pat", "--people-any", "jack", "--limit", "5").stdout
    assert "understood: concept ''; people: all of pat; people: any of jack" in shown
    assert "people: Jack, Pat" in shown
    assert "pat.jpg" not in shown

    caption = run(cli_env, "search", "Christmas", "--limit", "1").stdout
    assert "tree.jpg" in caption
    assert "caption: Christmas morning at the cabin" in caption

    combined = json.loads(
        run(
            cli_env,
            "search",
            "beach",
            "--image",
            str(lib / "plain.jpg"),
            "--not",
            "people",
            "--image-weight",
            "3",
            "--json",
        ).stdout
    )
    assert combined["understood"]["negative"] == ["people"]
    assert combined["understood"]["examples"] == 1
    assert Path(combined["results"][0]["path"]).name == "plain.jpg"
    literal = json.loads(run(cli_env, "search", "Pat", "--literal", "--json").stdout)
    assert literal["understood"]["people"] == []
    assert len(literal["results"]) == 4
