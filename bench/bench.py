#!/usr/bin/env python3
"""Benchmarks of local mode against plain Ray, in one run on one machine.

(a) cold start: `rayservice apply --wait` + first answer, against a plain script doing the same
    with Ray directly (`ray start` head and worker, PUT the serve config, poll, first answer);
(b) requests through the front endpoint 127.0.0.1:PORT against the same requests sent straight
    to the cluster's Serve port (throughput ratio, added p50/p99 latency).

Usage: RAYSERVICE_PYTHON=... python3 bench/bench.py [--rounds N]
Needs `cargo build --release` first. Prints a table; numbers go in the issue notes.
"""
import json, os, signal, subprocess, sys, tempfile, time, urllib.request, zipfile, pathlib, shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/rayservice"
PY = os.environ.get("RAYSERVICE_PYTHON")
RAY = str(pathlib.Path(PY).parent / "ray") if PY else None
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3


def http(method, url, body=None, timeout=5):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def serve_config(zip_uri, port):
    """The example's serve config, as the plain script would PUT it."""
    text = subprocess.check_output([PY, "-c", (
        "import yaml,sys,json;"
        "d=yaml.safe_load(open(sys.argv[1]));"
        "print(json.dumps(yaml.safe_load(d['spec']['serveConfigV2'])))"),
        str(ROOT / "examples/rayservice-local.yaml")])
    config = json.loads(text)
    for app in config["applications"]:
        app["runtime_env"]["working_dir"] = zip_uri
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    return config


def raw_cold_start():
    """Plain Ray: ray start, PUT, poll, first answer. Returns seconds."""
    tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    zpath = os.path.join(tmp, "pkg.zip")
    with zipfile.ZipFile(zpath, "w") as z:
        for f in (ROOT / "examples/test_dag").glob("*.py"):
            z.write(f, f"test_dag/{f.name}")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    procs = []
    start = time.monotonic()
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--port=26379", "--dashboard-port=28265",
                             "--ray-client-server-port=20001", f"--temp-dir={tmp}/h", "--num-cpus=2",
                             "--dashboard-host=127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(head)
    wait_for(lambda: http("GET", "http://127.0.0.1:28265/api/gcs_healthz")[0] == 200, 120, "raw head")
    worker = subprocess.Popen([RAY, "start", "--address=127.0.0.1:26379", "--block", f"--temp-dir={tmp}/w",
                               "--num-cpus=1", "--dashboard-agent-listen-port=52366"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(worker)
    http("PUT", "http://127.0.0.1:28265/api/serve/applications/", json.dumps(serve_config("file://" + zpath, 28000)), timeout=60)

    def running():
        apps = json.loads(http("GET", "http://127.0.0.1:28265/api/serve/applications/")[1])["applications"]
        return len(apps) == 2 and all(a["status"] == "RUNNING" for a in apps.values())
    wait_for(running, 300, "raw apps RUNNING")
    wait_for(lambda: http("POST", "http://127.0.0.1:28000/fruit/", '["MANGO", 2]')[1] == "6", 60, "raw answer")
    elapsed = time.monotonic() - start
    for p in reversed(procs):
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)
    shutil.rmtree(tmp, ignore_errors=True)
    return elapsed


def ours_env(home):
    return dict(os.environ, RAYSERVICE_HOME=home, RAYSERVICE_SERVE_PORT="38000", RAYSERVICE_DASHBOARD_PORT="38265")


def ours_cold_start(home, keep=False):
    env = ours_env(home)
    start = time.monotonic()
    subprocess.run([BIN, "apply", "-f", ROOT / "examples/rayservice-local.yaml", "--wait"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: http("POST", "http://127.0.0.1:38000/fruit/", '["MANGO", 2]')[1] == "6", 60, "our answer")
    elapsed = time.monotonic() - start
    if not keep:
        subprocess.run([BIN, "down"], env=env, check=True, stderr=subprocess.DEVNULL)
    return elapsed


def status(env, name="rayservice-sample"):
    return json.loads(subprocess.check_output([BIN, "get", "rayservice", name, "-o", "json"], env=env))


def in_place_and_upgrade(home):
    """(c) in-place update vs a raw PUT to the same cluster; (d) upgrade vs a cold start."""
    env = ours_env(home)
    text = (ROOT / "examples/rayservice-local.yaml").read_text().replace(
        "working_dir: ./test_dag", f"working_dir: {ROOT / 'examples/test_dag'}").replace(
        "spec:\n  # A Ray Serve", "spec:\n  rayClusterDeletionDelaySeconds: 5\n  # A Ray Serve")
    path = pathlib.Path(home) / "svc.yaml"
    path.write_text(text)
    subprocess.run([BIN, "apply", "-f", path, "--wait"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clusters = json.loads(subprocess.check_output([BIN, "get", "raycluster", "-o", "json"], env=env))
    dashboard = clusters["items"][0]["status"]["endpoints"]["dashboard"]
    serve = clusters["items"][0]["status"]["endpoints"]["serve"]
    ours, raw = [], []
    for price in (4, 5, 6):
        # ours: edit the file, apply, first answer with the new price through the front endpoint
        path.write_text(text.replace("price: 3", f"price: {price}"))
        start = time.monotonic()
        subprocess.run([BIN, "apply", "-f", path], env=env, check=True, stdout=subprocess.DEVNULL)
        wait_for(lambda: http("POST", "http://127.0.0.1:38000/fruit/", '["MANGO", 2]')[1] == str(2 * price), 60, "ours")
        ours.append(time.monotonic() - start)
        # raw: PUT the running config with another price straight to the dashboard, first answer on the Serve port
        config = json.loads(http("GET", f"http://127.0.0.1:{dashboard}/api/serve/applications/")[1])
        apps = [a["deployed_app_config"] for a in config["applications"].values()]
        raw_price = price + 10
        for app in apps:
            for d in app.get("deployments", []):
                if d["name"] == "MangoStand":
                    d["user_config"] = {"price": raw_price}
        body = {"applications": apps, "proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": serve}}
        start = time.monotonic()
        http("PUT", f"http://127.0.0.1:{dashboard}/api/serve/applications/", json.dumps(body), timeout=60)
        wait_for(lambda: http("POST", f"http://127.0.0.1:{serve}/fruit/", '["MANGO", 2]')[1] == str(2 * raw_price), 60, "raw")
        raw.append(time.monotonic() - start)
    # (d) upgrade: apply a rayVersion change, until the active cluster is the new one and answers
    path.write_text(text.replace('rayVersion: "2.60.0"', 'rayVersion: "2.100.0"'))
    old = status(env)["status"]["activeServiceStatus"]["rayClusterName"]
    start = time.monotonic()
    subprocess.run([BIN, "apply", "-f", path], env=env, check=True, stdout=subprocess.DEVNULL)
    wait_for(lambda: status(env)["status"]["activeServiceStatus"]["rayClusterName"] != old, 600, "switch")
    wait_for(lambda: http("POST", "http://127.0.0.1:38000/fruit/", '["MANGO", 2]')[1] == "6", 60, "answer after switch")
    upgrade = time.monotonic() - start
    subprocess.run([BIN, "down"], env=env, check=True, stderr=subprocess.DEVNULL)
    return ours, raw, upgrade


def main():
    if not PY or not BIN.exists():
        raise SystemExit("set RAYSERVICE_PYTHON and run `cargo build --release` first")
    raw, ours = [], []
    for _ in range(ROUNDS):
        raw.append(raw_cold_start())
        with tempfile.TemporaryDirectory(prefix="rsb") as home:
            ours.append(ours_cold_start(home))
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print("(a) cold start to first answer, seconds (median of %d)" % ROUNDS)
    print(f"    plain Ray script   {med(raw):6.2f}   all: {', '.join(f'{x:.2f}' for x in raw)}")
    print(f"    rayservice apply   {med(ours):6.2f}   all: {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"    ratio ours/plain   {med(ours) / med(raw):6.2f}")

    with tempfile.TemporaryDirectory(prefix="rsb") as home:
        inplace, rawput, upgrade = in_place_and_upgrade(home)
    print("\n(c) in-place user_config update to first new answer, seconds (median of %d)" % len(inplace))
    print(f"    raw PUT to the dashboard   {med(rawput):6.2f}   all: {', '.join(f'{x:.2f}' for x in rawput)}")
    print(f"    rayservice apply           {med(inplace):6.2f}   all: {', '.join(f'{x:.2f}' for x in inplace)}")
    print(f"    ratio ours/raw             {med(inplace) / med(rawput):6.2f}")
    print("\n(d) zero-downtime upgrade: apply to traffic switched and answered, against a cold start of one cluster")
    print(f"    cold start (ours, (a))     {med(ours):6.2f}")
    print(f"    upgrade                    {upgrade:6.2f}")
    print(f"    ratio upgrade/cold start   {upgrade / med(ours):6.2f}")

    # (b) throughput and latency through the front endpoint vs straight to the Serve port.
    with tempfile.TemporaryDirectory(prefix="rsb") as home:
        env = ours_env(home)
        subprocess.run([BIN, "apply", "-f", ROOT / "crates/cli/tests/fixtures/greeter.yaml", "--wait"], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        clusters = json.loads(subprocess.check_output([BIN, "get", "raycluster", "-o", "json"], env=env))
        serve_port = clusters["items"][0]["status"]["endpoints"]["serve"]
        try:
            for concurrency in (1, 16):
                print(f"\n(b) GET /hello/ through 127.0.0.1:38000 vs straight to 127.0.0.1:{serve_port}, concurrency {concurrency}")
                subprocess.run(["cargo", "run", "-q", "--release", "--example", "proxy_bench", "-p", "rayservice-proxy", "--",
                                "--upstream", f"http://127.0.0.1:{serve_port}/hello/", "--front", "http://127.0.0.1:38000/hello/",
                                "--requests", "2000", "--concurrency", str(concurrency), "--rounds", "2"], cwd=ROOT, check=True)
        finally:
            subprocess.run([BIN, "down"], env=env, check=True, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
