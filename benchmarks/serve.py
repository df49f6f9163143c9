"""Load test of ``fewshot serve`` on loopback: throughput, latency percentiles, errors, memory.

Protocol (issue 17): one service process (SQLite, efficientnet_lite0 for photos, all-MiniLM-L6-v2
for sentences) on 127.0.0.1. An image collection of 50 MPEG-7 shape classes x 2 photos and a text
collection of 50 BANKING77 intents x 2 sentences (a seeded random 2 of each class's files /
sentences) are enrolled through the API; then 8 client
threads send 2,000 recognise requests (one photo or one sentence each, half and half; queries from
unseen photos/sentences of the 50 enrolled classes and of 20 MPEG-7 classes / 27 intents that are
not enrolled), with an enrolment mixed in every 20th request. Photos are sent as 224x224 PNG.
Decisions are scored too: top-1 ignoring the threshold, known queries accepted as the right class,
unknown ones rejected. Each ``--variant`` (extra ``fewshot serve`` options) gets its own load run.
Then recognise latency at 1k / 10k / 100k enrolled embeddings (384-d, random unit vectors written
straight into the database, 1,000 classes; brute-force search), one client, 100 text queries each,
and after one enrolment (the matrix is updated in place).

Every request loop is bounded (count and time) and talks to 127.0.0.1 only.

    flock /work/bench.lock python benchmarks/serve.py --variant "" --variant "--image-nice 0"
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SERVE_COMMAND = [sys.executable, "-m", "fewshot", "serve"]
DATA = Path(os.environ.get("FEWSHOT_DATA") or ROOT.parent / "shared" / "data")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> dict:
    """RSS now and peak (MiB), CPU seconds of process ``pid`` (from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mem = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_mib": mem["VmRSS"], "peak_rss_mib": mem["VmHWM"], "cpu_s": cpu}


class Server:
    def __init__(self, db: Path, extra: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*SERVE_COMMAND, "--db", str(db), "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.log = db.with_name(db.stem + "-server.log")  # a file, not a pipe: a full pipe would block the server
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        import httpx

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 300:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-3000:])
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not start in 300 s")
        self.start_s = time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def photo_png(path: Path, size: int = 224) -> bytes:
    from PIL import Image

    im = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load_data(rng: random.Random):
    """Known/unknown MPEG-7 classes and BANKING77 intents, and which photos/sentences are enrolled.

    The 2 enrolled examples of each known class are a seeded random pick from all of its files /
    sentences (not the first two, which in MPEG-7 are near-identical and make the leave-one-out
    threshold optimistic); queries and the enrolments mixed into the load come from the rest.
    """
    mpeg = DATA / "images" / "mpeg7"
    classes = sorted(p.name for p in mpeg.iterdir() if p.is_dir())
    rng.shuffle(classes)
    known, unknown = classes[:50], classes[50:70]
    files = {c: sorted(mpeg.glob(f"{c}/*.gif")) for c in classes}
    rows = list(csv.DictReader(open(DATA / "text" / "banking77" / "train.csv")))
    by_intent: dict[str, list[str]] = {}
    for r in rows:
        by_intent.setdefault(r["category"], []).append(r["text"])
    intents = sorted(by_intent)
    rng.shuffle(intents)
    for group in (files, by_intent):  # enrolled examples first
        for key in group:
            rng.shuffle(group[key])
    return known, unknown, files, intents[:50], intents[50:], by_intent


class Http:
    """A minimal keep-alive HTTP/1.1 client (stdlib): the load generator shares the 2 cores with the
    server, so it must cost little CPU and hold the GIL briefly (httpx cost ~17 ms CPU a request)."""

    BOUNDARY = "fewshotbenchboundary7d1f"

    def __init__(self, url: str):
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        self.conn.request("POST", path, body, {"Content-Type": content_type})
        r = self.conn.getresponse()
        return r.status, r.read()

    def post_json(self, path: str, obj) -> tuple[int, bytes]:
        import json

        return self.post(path, json.dumps(obj).encode(), "application/json")

    def post_files(self, path: str, files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[int, bytes]:
        b, parts = self.BOUNDARY.encode(), []
        for k, v in (fields or {}).items():
            parts.append(b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (b, k.encode(), v.encode()))
        for name, data in files:
            parts.append(b"--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=\"%s\"\r\n"
                         b"Content-Type: image/png\r\n\r\n%s\r\n" % (b, name.encode(), data))
        return self.post(path, b"".join(parts) + b"--%s--\r\n" % b, f"multipart/form-data; boundary={self.BOUNDARY}")

    def close(self) -> None:
        self.conn.close()


def run_load(server: Server, args, rng: random.Random) -> dict:
    import json

    import httpx

    known, unknown, files, t_known, t_unknown, by_intent = load_data(rng)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        c.post("/api/collections", json={"name": "shapes", "kind": "image"}).raise_for_status()
        c.post("/api/collections", json={"name": "intents", "kind": "text"}).raise_for_status()
        t0 = time.perf_counter()
        for cls in known:
            r = c.post("/api/collections/shapes/examples/upload", data={"class": cls},
                       files=[("files", (p.name, photo_png(p), "image/png")) for p in files[cls][:2]])
            r.raise_for_status()
        enrol_images_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for intent in t_known:
            c.post("/api/collections/intents/examples", json={"class": intent, "texts": by_intent[intent][:2]}).raise_for_status()
        enrol_texts_s = time.perf_counter() - t0
        calib = {k: c.get(f"/api/collections/{k}").json()["calibration"] for k in ("shapes", "intents")}
    # the request plan: (kind, payload, truth) with truth None for a class that is not enrolled
    plan = []
    for i in range(args.requests):
        if i % 2 == 0:
            cls = rng.choice(known if rng.random() < 0.8 else unknown)
            path = rng.choice(files[cls][2:])
            plan.append(("image", path, cls if cls in known else None))
        else:
            intent = rng.choice(t_known if rng.random() < 0.8 else t_unknown)
            plan.append(("text", rng.choice(by_intent[intent][2:]), intent if intent in t_known else None))
    pngs = {p: photo_png(p) for kind, p, _ in plan if kind == "image"}
    enrol_plan = []
    for _ in range(args.requests // 20):
        cls = rng.choice(known)
        enrol_plan.append((cls, rng.choice(files[cls][2:])))
    enrol_pngs = {p: pngs.get(p) or photo_png(p) for _, p in enrol_plan}
    results: dict[str, list] = {"image": [], "text": [], "enrol": []}
    errors: list[str] = []
    correct = {"image": [0, 0, 0], "text": [0, 0, 0]}  # known: right class and accepted / total / right top class
    rejected = {"image": [0, 0], "text": [0, 0]}  # unknown: said unknown / total
    lock = threading.Lock()
    cursor = iter(range(len(plan)))
    enrol_cursor = iter(range(len(enrol_plan)))
    deadline = time.monotonic() + args.max_seconds

    def client():
        c = Http(server.url)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                if i % 20 == 19:
                    with lock:
                        j = next(enrol_cursor, None)
                    if j is not None:
                        cls, path = enrol_plan[j]
                        t = time.perf_counter()
                        status, body = c.post_files("/api/collections/shapes/examples/upload", [(path.name, enrol_pngs[path])], {"class": cls})
                        dt = time.perf_counter() - t
                        with lock:
                            results["enrol"].append(dt)
                            if status != 201:
                                errors.append(f"enrol {status} {body[:200]!r}")
                kind, payload, truth = plan[i]
                t = time.perf_counter()
                try:
                    if kind == "image":
                        status, body = c.post_files("/api/collections/shapes/recognize/upload?k=3", [("q.png", pngs[payload])])
                    else:
                        status, body = c.post_json("/api/collections/intents/recognize", {"texts": [payload], "k": 3})
                except OSError as exc:
                    with lock:
                        errors.append(f"{kind} {exc!r}")
                    c.close()
                    c = Http(server.url)
                    continue
                dt = time.perf_counter() - t
                with lock:
                    results[kind].append(dt)
                    if status != 200:
                        errors.append(f"{kind} {status} {body[:200]!r}")
                        continue
                    res = json.loads(body)["results"][0]
                    if truth is None:
                        rejected[kind][1] += 1
                        rejected[kind][0] += res["decision"] == "unknown"
                    else:
                        correct[kind][1] += 1
                        correct[kind][0] += res["decision"] == "class" and res["class"] == truth
                        correct[kind][2] += res["top"][0]["class"] == truth
        finally:
            c.close()

    before = proc_stats(server.proc.pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = proc_stats(server.proc.pid)
    done = len(results["image"]) + len(results["text"])
    return {"wall": wall, "done": done, "results": results, "errors": errors, "before": before, "after": after,
            "enrol_images_s": enrol_images_s, "enrol_texts_s": enrol_texts_s, "calibration": calib,
            "correct": correct, "rejected": rejected}


def scale_latency(args, tmp: Path) -> list[dict]:
    """Recognise latency with N random 384-d embeddings enrolled (text collection, brute force)."""
    import httpx

    sys.path.insert(0, str(ROOT / "src"))
    from fewshot.serve.storage import NewExample, SQLiteStorage

    rows = []
    for n in args.sizes:
        db = tmp / f"scale{n}.sqlite"
        store = SQLiteStorage(db)
        rng = np.random.default_rng(n)
        emb = rng.standard_normal((n, 384)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        classes = [f"c{i}" for i in range(min(1000, n // 2))]
        pairs = [(classes[i % len(classes)], NewExample(emb[i], text=f"item {i}")) for i in range(n)]
        store.import_collection("scale", "text", "text:all-MiniLM-L6-v2", 384, None, classes, pairs)
        store.close()
        server = Server(db)
        try:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                t = time.perf_counter()
                c.post("/api/collections/scale/recognize", json={"texts": ["warm up"]}).raise_for_status()
                first = time.perf_counter() - t
                lat = []
                end = time.monotonic() + 120
                for i in range(args.scale_queries):
                    if time.monotonic() > end:
                        break
                    t = time.perf_counter()
                    c.post("/api/collections/scale/recognize", json={"texts": [f"query sentence number {i}"], "k": 5}).raise_for_status()
                    lat.append(time.perf_counter() - t)
                # a write, then the next recognise: the matrix is updated in place, not reloaded
                t = time.perf_counter()
                c.post("/api/collections/scale/examples", json={"class": "c1", "texts": ["one more example"]}).raise_for_status()
                enrol = time.perf_counter() - t
                after = []
                for i in range(5):
                    t = time.perf_counter()
                    c.post("/api/collections/scale/recognize", json={"texts": [f"after the write {i}"], "k": 5}).raise_for_status()
                    after.append(time.perf_counter() - t)
            stats = proc_stats(server.proc.pid)
        finally:
            server.stop()
        rows.append({"n": n, "first": first, "p50": pct(lat, 50), "p95": pct(lat, 95), "queries": len(lat),
                     "rss": stats["rss_mib"], "enrol": enrol, "after": after[0], "after_max": max(after)})
        print(f"  {n:>7} embeddings: first {first:.2f} s, p50 {pct(lat, 50) * 1e3:.1f} ms, p95 {pct(lat, 95) * 1e3:.1f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--scale-queries", type=int, default=100)
    ap.add_argument("--max-seconds", type=float, default=900, help="stop the load loop after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=None,
                    help="extra `fewshot serve` options for one load run, e.g. '--micro-batch 0' (repeatable; default: one run with the defaults)")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "serve.md"))
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if not (DATA / "images" / "mpeg7").is_dir():
        sys.exit(f"MPEG-7 shapes not found under {DATA} (set FEWSHOT_DATA)")
    load_start = os.getloadavg()
    cpu0 = time.process_time()
    tmp = Path(tempfile.mkdtemp(prefix="fewshot-serve-bench-"))
    loads = {}
    for n, variant in enumerate([] if args.skip_load else args.variant or [""]):
        server = Server(tmp / f"load{n}.sqlite", variant.split())
        print(f"server ({variant or 'defaults'}) up in {server.start_s:.1f} s", flush=True)
        try:
            load = run_load(server, args, random.Random(args.seed))
            load["start_s"] = server.start_s
        finally:
            server.stop()
        loads[variant] = load
        print(f"load: {load['done']} requests in {load['wall']:.1f} s, {len(load['errors'])} errors", flush=True)
    scale = scale_latency(args, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg()
    client_cpu = time.process_time() - cpu0
    lines = ["# fewshot serve: load test on loopback", "",
             f"Command: `flock /work/bench.lock python benchmarks/serve.py {' '.join(sys.argv[1:])}`. "
             f"Server: `fewshot serve` (SQLite, efficientnet_lite0 photos, all-MiniLM-L6-v2 sentences), "
             f"torch threads: the server's --threads per model worker (default 1); "
             f"{os.cpu_count()} cores shared with other jobs. Load average (1/5/15 min) at start "
             f"{'/'.join(f'{x:.1f}' for x in load_start)}, at end {'/'.join(f'{x:.1f}' for x in load_end)}. "
             f"Benchmark client process CPU {client_cpu:.0f} s "
             f"(rusage children {resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime:.0f} s: the servers).", ""]
    for variant, load in loads.items():
        r = load["results"]
        lines += [f"## Mixed load, server {'`' + variant + '`' if variant else 'defaults'}: "
                  f"{args.clients} clients, 50 classes x 2 photos and 50 intents x 2 sentences", "",
                  f"{load['done']} recognise requests (+ {len(r['enrol'])} photo enrolments mixed in) in {load['wall']:.1f} s: "
                  f"**{load['done'] / load['wall']:.1f} requests/s**; errors: **{len(load['errors'])}**. "
                  f"Server start {load['start_s']:.1f} s (models loaded); enrolling the 50x2 photos took {load['enrol_images_s']:.1f} s, "
                  f"the 50x2 sentences {load['enrol_texts_s']:.1f} s (one request per class, sequential).", "",
                  "| request | count | p50 ms | p95 ms | p99 ms | mean ms | target p95 |", "|---|---|---|---|---|---|---|"]
        for kind, target in (("text", "< 50 ms"), ("image", "< 250 ms"), ("enrol", "")):
            v = [x * 1e3 for x in r[kind]]
            if v:
                lines.append(f"| {kind} {'recognise' if kind != 'enrol' else '(1 photo)'} | {len(v)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | "
                             f"{pct(v, 99):.1f} | {statistics.mean(v):.1f} | {target} |")
        b, a = load["before"], load["after"]
        lines += ["", f"Server memory: RSS {b['rss_mib']:.0f} MiB before the load, {a['rss_mib']:.0f} MiB after, peak {a['peak_rss_mib']:.0f} MiB. "
                  f"Server CPU during the load: {a['cpu_s'] - b['cpu_s']:.1f} s over {load['wall']:.1f} s wall "
                  f"({(a['cpu_s'] - b['cpu_s']) / (load['done'] + len(r['enrol'])) * 1e3:.1f} ms a request).", ""]
        cal = load["calibration"]
        cr, rj = load["correct"], load["rejected"]

        def rate(x: int, n: int) -> str:
            return f"{x}/{n} ({x / n:.0%})" if n else "0/0"

        lines += ["Decisions (a side result, not a target), queries of the 50 enrolled classes (known) and of the unenrolled ones:", "",
                  "| collection | threshold (leave-one-out) | known: top-1 right, ignoring the threshold | known: accepted as the right class | unknown: rejected |",
                  "|---|---|---|---|---|"]
        for kind, col in (("image", "shapes"), ("text", "intents")):
            lines.append(f"| {col} ({kind}) | {cal[col]['threshold']:.3f} | {rate(cr[kind][2], cr[kind][1])} | "
                         f"{rate(cr[kind][0], cr[kind][1])} | {rate(*rj[kind])} |")
        lines.append("")
        if load["errors"]:
            lines += ["Errors (first 5):", ""] + [f"- `{e}`" for e in load["errors"][:5]] + [""]
    lines += ["## Recognise latency vs enrolled embeddings (brute force, one client)", "",
              "Random 384-d unit vectors in 1,000 classes (written straight into SQLite), queried with one sentence "
              "(all-MiniLM-L6-v2 encoding included). 'first' is the first request: loading the matrix and the "
              "leave-one-out calibration (on a seeded sample of at most 2,000 examples; 500 at 100k). Then one sentence is "
              "enrolled and 5 more queries sent: the first of them, and the slowest.", "",
              "| enrolled | queries | first request s | p50 ms | p95 ms | enrol 1 ms | next recognise ms | slowest of next 5 ms | server RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in scale:
        lines.append(f"| {s['n']:,} | {s['queries']} | {s['first']:.2f} | {s['p50'] * 1e3:.1f} | {s['p95'] * 1e3:.1f} | "
                     f"{s['enrol'] * 1e3:.0f} | {s['after'] * 1e3:.1f} | {s['after_max'] * 1e3:.1f} | {s['rss']:.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
