"""bench/elements.py's pure parts: the sizes it reports (the browser run is `python -m
bench.elements` itself, not a test)."""

import gzip

from bench.elements import BUNDLE, ENTRY, STATIC, compressed_sizes, module_graph, sizes


def test_compressed_sizes():
    data = b"gateway " * 1000
    measured = compressed_sizes(data)
    assert measured["raw"] == 8000
    assert measured["gzip"] == len(gzip.compress(data, compresslevel=9, mtime=0))
    assert measured["gzip"] < 200


def test_the_element_module_graph_is_ours_without_the_bundle():
    files = {path.relative_to(STATIC).as_posix() for path in module_graph(ENTRY, skip=BUNDLE)}
    assert {
        "elements.mjs",
        "element-base.mjs",
        "voice-element.mjs",
        "dictation-element.mjs",
        "speech-element.mjs",
        "sdk.mjs",
    } <= files
    assert "vendor/ai-sdk.min.mjs" not in files


def test_sizes_name_the_bundle_and_the_stylesheet():
    measured = sizes()
    assert measured["bundle"]["raw"] == BUNDLE.stat().st_size
    assert "elements.css" in measured["elements"]["files"]
    assert 0 < measured["elements"]["gzip"] < measured["elements"]["raw"]
