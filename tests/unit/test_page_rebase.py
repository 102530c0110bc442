"""The web page's JS rebase must agree with hd_protocol.apps.rebase (SPEC 6.1.1).

Runs the page's own functions under Node.js (present on every machine of this
project's kind) on a batch of generated edits and compares with the Python helper.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hd_protocol.apps.rebase import rebase

NODE = shutil.which("node")
# BMP only: JS indexes UTF-16 code units, Python code points; the page never needs
# the two to agree on astral characters, only each with itself.
TEXT = st.text(alphabet=st.sampled_from("ab c\n\u00e9\u2603"), max_size=12)


def _page_js() -> str:
    js = resources.files("hd_node").joinpath("static/rebase.js").read_text()
    m = re.search(r"function changeBetween[\s\S]*?\n}\nfunction rebase[\s\S]*?\n}\n", js)
    assert m is not None, "static/rebase.js defines changeBetween and rebase"
    return m.group(0)


def _run_js(cases: list[tuple[str, str, str]]) -> list[str]:
    assert NODE is not None, "node is installed on this machine kind"
    prog = _page_js() + (
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(cases.map(c => rebase(c[0], c[1], c[2]))));"
    )
    out = subprocess.run([NODE, "-e", prog], input=json.dumps(cases), capture_output=True,
                         text=True, timeout=30, check=True)
    return list(json.loads(out.stdout))


def test_page_rebase_keeps_a_non_overlapping_edit() -> None:
    assert _run_js([("hello world", "hello brave world", "hello world!")]) == [
        "hello brave world!"
    ]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=50, max_size=50))
def test_page_rebase_agrees_with_python(cases: list[tuple[str, str, str]]) -> None:
    assert _run_js(cases) == [rebase(b, m, t) for b, m, t in cases]
