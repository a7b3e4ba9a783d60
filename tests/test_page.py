"""The page at GET /, in a real headless Chromium over a real socket: it submits a list (from the URL fragment,
as a link would) and the ranked result is read back from the DOM."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import urllib.parse

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from headrank.calibration import fit_calibration  # noqa: E402
from headrank.ranker import HeadRanker  # noqa: E402
from headrank.serve.app import ServeConfig, create_app  # noqa: E402

from .conftest import DOCS, FLEA_QUERY, served  # noqa: E402
from .test_calibration import synthetic_lists  # noqa: E402
from .test_highlights import PLANTED  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Results(html.parser.HTMLParser):
    """The ranked items of the page's DOM: (index, relevance, the marked texts)."""

    def __init__(self):
        super().__init__()
        self.items: list[dict] = []
        self.state = self.kind = None
        self._in_mark = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.state, self.kind = attrs.get("data-state"), attrs.get("data-relevance")
        if tag == "li" and attrs.get("class") == "result":
            self.items.append({"index": int(attrs["data-index"]), "relevance": float(attrs["data-relevance"])})
            self.items[-1]["marks"] = []
        self._in_mark = tag == "mark"

    def handle_endtag(self, tag):
        self._in_mark = False if tag == "mark" else self._in_mark

    def handle_data(self, data):
        if self._in_mark and self.items:
            self.items[-1]["marks"].append(data)


def dump_dom(url: str, profile) -> Results:
    """Chromium loads `url`, runs its script (the fetch included: virtual time waits for the network) and
    prints the DOM."""
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=60000", "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = Results()
    parsed.feed(done.stdout)
    return parsed


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
@pytest.mark.parametrize("calibrated", [True, False])
def test_the_page_ranks_a_pasted_list_in_a_real_browser(lexical, tmp_path, calibrated):
    """With a calibration the page shows P(relevant); without one, the list-relative relevance."""
    ranker = HeadRanker(lexical)
    if calibrated:
        ranker.calibration = fit_calibration(synthetic_lists(50, 0))
    passages = [DOCS[0], PLANTED, DOCS[3]]
    expected = ranker.rank(FLEA_QUERY, passages, highlights=True)
    with served(create_app(ranker, ServeConfig(model_name="lexical"))) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text  # no external assets
        fragment = urllib.parse.urlencode([("q", FLEA_QUERY), *(("p", p) for p in passages)])
        dom = dump_dom(f"{client.base_url}/#{fragment}", tmp_path / "profile")
    assert dom.state == "ranked" and dom.kind == ("calibrated" if calibrated else "list-relative") + " relevance"
    assert [item["index"] for item in dom.items] == [r.index for r in expected]
    shown = [r.calibrated if calibrated else r.relevance for r in expected]
    assert [item["relevance"] for item in dom.items] == pytest.approx(shown, abs=1e-9)
    planted = next(item for item in dom.items if item["index"] == 1)
    assert "fleas live up to a year on the host." in planted["marks"]
