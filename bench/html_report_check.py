#!/usr/bin/env python3
"""Browser check of `kiln validate --html`: build a report that has something to show, open it
in headless Chromium (Debian's `chromium`), take a screenshot, and fail unless the SQNR chart
and every histogram have a non-zero size, the page logs no console error or exception, and it
loads nothing but itself.

The models: tiny_cnn with its intermediate tensors exposed as outputs (so the per-output SQNR
chart has a bar per stage), as the reference; the same with conv2's weights fake-quantized to
int8 (per tensor) and fc.bias[0] moved by 0.5, as the candidate. Compared on 4 synthetic
samples with --min-sqnr 30 and --atol 1e-4, so some outputs pass and some fail.

Talks to Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: fds 3 and 4,
NUL-separated JSON), so it needs nothing but Python, onnx, numpy and chromium.

    python3 bench/html_report_check.py [--out DIR] [--kiln PATH] [--chromium PATH]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def exposed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every node output (not already an output) added as a graph output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    extra = [
        helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)
        for node in m.graph.node
        for out in node.output
        if out not in have
    ]
    # Stages first in graph order, the logits last.
    logits = list(m.graph.output)
    del m.graph.output[:]
    m.graph.output.extend(extra + logits)
    return m


def perturbed(model: onnx.ModelProto) -> onnx.ModelProto:
    """conv2.weight fake-quantized to int8 per tensor; fc.bias[0] += 0.5."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init).astype(np.float32)
        if init.name == "conv2.weight":
            scale = np.abs(w).max() / 127.0
            w = (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)
        elif init.name == "fc.bias":
            w = w.copy()
            w[0] += 0.5
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    return m


class Cdp:
    """A DevTools protocol client over --remote-debugging-pipe."""

    def __init__(self, chromium: str, profile: str):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4. Duplicate first, so
        # neither end is overwritten when the pipes already sit on 3 or 4; dup2 makes the
        # copies inheritable, and close_fds is off so they survive until exec.
        def fds():
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.time() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params=None, session=None, timeout=30.0) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout=30.0) -> dict:
        deadline = time.time() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


MEASURE = """JSON.stringify((() => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const chart = document.getElementById('sqnr-chart');
  const hists = [...document.querySelectorAll('[id^="hist-"]')].map(e => [e.id, ...box(e)]);
  return {chart: chart ? box(chart) : null, bars: chart ? chart.querySelectorAll('rect').length : 0,
          hists, outputs: document.querySelectorAll('#summary tbody tr').length,
          scripts: document.scripts.length,
          height: document.documentElement.scrollHeight};
})())"""


def check_page(chromium: str, html: Path, shot: Path) -> list:
    """Opens the page, screenshots it, and returns the problems found."""
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        cdp = Cdp(chromium, profile)
        try:
            target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.call(
                "Target.attachToTarget", {"targetId": target, "flatten": True}
            )["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cdp.call(f"{domain}.enable", session=session)
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            cdp.events.clear()
            cdp.call("Page.navigate", {"url": html.resolve().as_uri()}, session=session)
            cdp.wait_for("Page.loadEventFired")
            m = json.loads(
                cdp.call(
                    "Runtime.evaluate",
                    {"expression": MEASURE, "returnByValue": True},
                    session=session,
                )["result"]["value"]
            )
            # The whole page in one screenshot.
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1200, "height": int(m["height"]), "deviceScaleFactor": 1,
                 "mobile": False},
                session=session,
            )
            png = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
            import base64

            shot.write_bytes(base64.b64decode(png["data"]))
            events = list(cdp.events)
        finally:
            cdp.close()
    print(f"chart box: {m['chart']} with {m['bars']} rects; page height {m['height']}px")
    print(f"summary rows: {m['outputs']}; histograms: {len(m['hists'])}")
    for h in m["hists"]:
        print(f"  {h[0]}: {h[1]:.0f}x{h[2]:.0f}")
    if not m["chart"] or m["chart"][0] <= 0 or m["chart"][1] <= 0:
        problems.append(f"#sqnr-chart has no size: {m['chart']}")
    if m["bars"] == 0:
        problems.append("#sqnr-chart has no bars")
    if len(m["hists"]) != m["outputs"] or any(w <= 0 or h <= 0 for _, w, h in m["hists"]):
        problems.append(f"histograms missing or empty: {m['hists']} for {m['outputs']} outputs")
    console = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            console.append(f"console.{p['type']}: {p.get('args')}")
        elif method == "Runtime.exceptionThrown":
            console.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            console.append(f"log error: {p['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not url.startswith(("file:", "data:", "about:")):
                console.append(f"external request: {url}")
    print(f"console errors / exceptions / external requests: {len(console)}")
    for c in console:
        print(f"  {c}")
    problems.extend(console)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "html_report_check")
    ap.add_argument("--kiln", default=str(ROOT / "target" / "debug" / "kiln"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not Path(args.chromium).exists():
        print(f"no chromium at {args.chromium}: apt-get install -y chromium", file=sys.stderr)
        return 2

    base = onnx.load(str(ROOT / "models" / "tiny_cnn" / "model.onnx"))
    ref = exposed(base)
    cand = perturbed(ref)
    onnx.save(ref, str(args.out / "reference.onnx"))
    onnx.save(cand, str(args.out / "candidate.onnx"))
    html = args.out / "report.html"
    cmd = [
        args.kiln, "validate", str(args.out / "candidate.onnx"),
        "--reference", str(args.out / "reference.onnx"),
        "--synthetic", "4", "--min-sqnr", "30", "--atol", "1e-4", "--html", str(html),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    print(run.stdout, end="")
    if run.returncode not in (0, 1) or not html.exists():
        print(f"kiln validate failed ({run.returncode}): {run.stderr}", file=sys.stderr)
        return 2
    print(f"report: {html} ({html.stat().st_size} bytes)")
    shot = args.out / "report.png"
    problems = check_page(args.chromium, html, shot)
    print(f"screenshot: {shot}")
    if problems:
        print("FAIL: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("OK: chart drawn, histograms drawn, no console errors, no external requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
