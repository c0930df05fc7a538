#!/usr/bin/env python3
"""Operator benchmark (issue 4): our operator against KubeRay's, on a real kube-apiserver.

For each N in --counts and each operator (ours, then KubeRay), in a fresh control plane
(scripts/k8s-control-plane.sh start DIR --with-controller-manager; no kubelet, so pods stay
Pending): install the operator's CRDs, start the operator as a process, create N RayServices (the
guide's sample `ray_v1alpha1_rayservice.yaml`, named bench-<i>) from --clients concurrent
clients, and measure for each the time from its POST returning to the arrival, on a watch of
rayclusters, of the first RayCluster labelled ray.io/originated-from-cr-name=bench-<i>.
The operator's VmRSS/VmHWM and CPU (utime+stime) are sampled when it is ready (idle), when all
N RayClusters exist, and 30 s and 60 s later (our RayService controller requeues a RayService
whose pods have no IP every 60 s, KubeRay's every 2 s: the 60 s window sees both).

Usage:
  bash bench/build-kuberay.sh          # once: KubeRay v1.4.0 from the Go module proxy, cached
  CARGO_TARGET_DIR=/work/target-bench cargo build --release -p rayservice
  CARGO_TARGET_DIR=/work/target-bench python3 bench/operator_bench.py --out /tmp/operator-bench.json
      [--counts 1,100,1000]
      [--operators ours,kuberay] [--ours BIN] [--clients 8] [--keep-logs DIR]

Standard library only. Prints a markdown table; all numbers go to --out as JSON.
"""
import argparse, concurrent.futures, http.client, json, math, os, pathlib, shutil, signal, socket
import ssl, subprocess, sys, tempfile, threading, time, traceback, urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts/k8s-control-plane.sh"
SAMPLE = ROOT.parent / "shared/kuberay-samples/ray_v1alpha1_rayservice.yaml"
ORIGIN = "ray.io/originated-from-cr-name"
TICK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print("operator_bench:", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The control plane and a small HTTPS client for its API server

class ControlPlane:
    def __init__(self, directory):
        self.dir = pathlib.Path(directory)

    def start(self):
        out = subprocess.run(["bash", str(SCRIPT), "start", str(self.dir), "--with-controller-manager"],
                             check=True, stdout=subprocess.PIPE, text=True)
        self.kubeconfig = out.stdout.strip()
        env = {}
        for line in (self.dir / "env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value.strip("'\"")
        self.kubectl = os.path.join(env["K8S_BIN"], "kubectl")
        self.port = int(env["K8S_APISERVER_PORT"])
        self.token = env["K8S_TOKEN"]
        self.ssl = ssl.create_default_context(cafile=str(self.dir / "certs/ca.crt"))
        self.local = threading.local()

    def stop(self):
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.dir)], check=False)

    def pid(self, name):
        return int((self.dir / f"{name}.pid").read_text())

    def connect(self, timeout=60):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl, timeout=timeout)

    def request(self, method, path, body=None, accept="application/json"):
        """One request on this thread's keep-alive connection; returns (status, parsed body)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept,
                   "Content-Type": "application/json"}
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None) or self.connect()
            self.local.conn = conn
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, json.loads(resp.read() or b"null")
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise

    def kubectl_run(self, *args, stdin=None):
        return subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args], input=stdin,
                              check=True, stdout=subprocess.PIPE, text=True).stdout

    def wait_established(self, timeout):
        """Until every ray.io CRD is Established (right after an apply, status may be empty)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            crds = [c for c in body.get("items", []) if c["spec"]["group"] == "ray.io"]
            if status == 200 and crds and all(
                    any(cond["type"] == "Established" and cond["status"] == "True"
                        for cond in (c.get("status") or {}).get("conditions") or []) for c in crds):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRDs not Established after {timeout} s")
            time.sleep(0.2)

    def request_counts(self):
        """apiserver_request_total from the API server's /metrics, summed by "VERB resource[/sub] code"."""
        conn = self.connect()
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {self.token}"})
        text = conn.getresponse().read().decode()
        conn.close()
        counts = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
            kv = dict(part.split("=", 1) for part in labels.split('",') if "=" in part)
            kv = {k: v.strip('"') for k, v in kv.items()}
            res = kv.get("resource", "") + ("/" + kv["subresource"] if kv.get("subresource") else "")
            key = f'{kv.get("verb")} {res} {kv.get("code")}'
            counts[key] = counts.get(key, 0) + float(value)
        return counts

    def count(self, path):
        """Number of objects at a list path (metadata only, to keep the answer small)."""
        status, body = self.request("GET", path, accept=(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"))
        assert status == 200, (status, body)
        return len(body["items"])


class ClusterWatch(threading.Thread):
    """Watches rayclusters with the origin label; records when each RayService's first arrives."""

    def __init__(self, cp):
        super().__init__(daemon=True)
        self.cp, self.first, self.added, self.lock = cp, {}, {}, threading.Lock()
        self.conn, self.stopped, self.error = None, False, None
        status, body = cp.request("GET", f"/apis/ray.io/v1/rayclusters?labelSelector={ORIGIN}")
        assert status == 200, (status, body)
        self.rv = body["metadata"]["resourceVersion"]

    def run(self):
        try:
            while not self.stopped:
                self.conn = self.cp.connect(timeout=None)
                self.conn.request("GET", f"/apis/ray.io/v1/rayclusters?watch=1&labelSelector={ORIGIN}"
                                  f"&allowWatchBookmarks=true&resourceVersion={self.rv}",
                                  headers={"Authorization": f"Bearer {self.cp.token}"})
                resp = self.conn.getresponse()
                if resp.status != 200:
                    raise RuntimeError(f"watch answered {resp.status}: {resp.read()[:300]!r}")
                for line in resp:
                    now = time.monotonic()
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {obj}")
                    self.rv = obj["metadata"]["resourceVersion"]
                    if event["type"] != "ADDED":
                        continue
                    origin = obj["metadata"]["labels"][ORIGIN]
                    with self.lock:
                        self.added[origin] = self.added.get(origin, 0) + 1
                        self.first.setdefault(origin, (now, obj["metadata"]["creationTimestamp"]))
        except Exception as e:  # noqa: BLE001 - reported by the run
            if not self.stopped:
                self.error = repr(e)

    def seen(self):
        with self.lock:
            return len(self.first)

    def stop(self):
        self.stopped = True
        if self.conn and self.conn.sock:
            try:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The operators under test

def proc_sample(pid):
    """VmRSS and VmHWM (KiB) and CPU seconds (utime+stime) of a process."""
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return {"t": time.monotonic(), "rss_kib": int(status["VmRSS"].split()[0]),
            "hwm_kib": int(status["VmHWM"].split()[0]),
            "cpu_s": (int(fields[11]) + int(fields[12])) / TICK}


class Operator:
    def __init__(self, name, argv, crds, version, probe_port, env=None):
        self.name, self.argv, self.crds, self.version = name, argv, crds, version
        self.probe_port, self.env, self.proc = probe_port, env or {}, None

    def start(self, cp, logfile):
        env = {k: v for k, v in os.environ.items() if k not in ("ENABLE_WEBHOOKS", "KUBECONFIG")}
        env.update(self.env, KUBECONFIG=cp.kubeconfig)
        self.log = open(logfile, "wb")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {logfile}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after 120 s; see {logfile}")
            time.sleep(0.2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            self.log.close()


def ours(binary, version):
    port = free_port()
    return Operator("ours", [binary, "operator", "--leader-elect=false", "--probe-addr", f"127.0.0.1:{port}"],
                    [ROOT / "deploy/crds/ray.io_crds.yaml"], version, port)


def kuberay():
    cache = pathlib.Path(subprocess.run(["bash", str(ROOT / "bench/build-kuberay.sh")], check=True,
                                        stdout=subprocess.PIPE, text=True).stdout.strip())
    port = free_port()
    return Operator("kuberay", [str(cache / "bin/kuberay-operator"), "--enable-leader-election=false",
                                f"--metrics-addr=127.0.0.1:{free_port()}",
                                f"--health-probe-bind-address=127.0.0.1:{port}"],
                    sorted((cache / "crds").glob("ray.io_*.yaml")), cache.name.removeprefix("kuberay-"), port)


# ---------------------------------------------------------------------------------------------
# One run: one operator, N RayServices, a fresh control plane

def percentile(values, p):
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] if s else None


def stats(values):
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None, "mean": sum(values) / len(values) if values else None}


def parse_ts(ts):
    return time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))


def one_run(op, n, args, workdir):
    directory = pathlib.Path(workdir) / f"{op.name}-{n}"
    cp = ControlPlane(directory)
    result = {"operator": op.name, "version": op.version, "n": n,
              "loadavg_before": open("/proc/loadavg").read().split()[:3]}
    watch = None
    try:
        cp.start()
        for crd in op.crds:
            cp.kubectl_run("apply", "--server-side", "-f", str(crd))
        cp.wait_established(120)
        sample = json.loads(cp.kubectl_run("create", "--dry-run=client", "-o", "json", "-f", str(SAMPLE)))
        api = sample["apiVersion"]
        op.start(cp, directory / "operator.log")
        time.sleep(args.settle)
        pid = op.proc.pid
        samples = {"idle": proc_sample(pid)}
        api_cpu0 = proc_sample(cp.pid("kube-apiserver"))["cpu_s"]
        requests0 = cp.request_counts()
        watch = ClusterWatch(cp)
        watch.start()

        created = {}

        def create(i):
            body = json.loads(json.dumps(sample))
            body["metadata"] = {"name": f"bench-{i}", "namespace": "default"}
            t0 = time.monotonic()
            status, answer = cp.request("POST", f"/apis/{api}/namespaces/default/rayservices", body)
            t1 = time.monotonic()
            if status != 201:
                raise RuntimeError(f"POST bench-{i}: {status} {answer}")
            created[f"bench-{i}"] = (t1, t1 - t0, answer["metadata"]["creationTimestamp"])

        t_start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(create, range(n)))
        t_posted = time.monotonic()
        deadline = t_posted + args.timeout
        while watch.seen() < n and time.monotonic() < deadline and watch.error is None \
                and op.proc.poll() is None:
            time.sleep(0.05)
        t_all = time.monotonic()
        samples["all_created"] = proc_sample(pid)
        api_cpu1 = proc_sample(cp.pid("kube-apiserver"))["cpu_s"]
        for label in ("steady_half", "steady"):
            time.sleep(args.steady / 2)
            samples[label] = proc_sample(pid)
        api_cpu2 = proc_sample(cp.pid("kube-apiserver"))["cpu_s"]
        requests = {k: v - requests0.get(k, 0) for k, v in cp.request_counts().items()}
        requests = dict(sorted(((k, int(v)) for k, v in requests.items() if v), key=lambda kv: -kv[1]))

        latency, ts_latency = [], []
        with watch.lock:
            first = dict(watch.first)
            duplicates = sum(1 for v in watch.added.values() if v > 1)
        for name, (t_post, _, rs_ts) in created.items():
            if name in first:
                latency.append(first[name][0] - t_post)
                ts_latency.append(parse_ts(first[name][1]) - parse_ts(rs_ts))
        steady = samples["steady"]["t"] - samples["all_created"]["t"]
        result.update({
            "complete": len(first) == n, "clusters_seen": len(first), "watch_error": watch.error,
            "operator_exited": op.proc.poll(),
            "create_wall_s": t_posted - t_start, "all_clusters_after_s": t_all - t_start,
            "post_s": stats([c[1] for c in created.values()]),
            "create_to_cluster_s": stats(latency),
            "create_to_cluster_by_timestamps_s": stats(ts_latency),
            "create_to_cluster_each_s": [round(v, 4) for v in sorted(latency)],
            "samples": samples,
            "burst_cpu_s": samples["all_created"]["cpu_s"] - samples["idle"]["cpu_s"],
            "steady_cpu_pct_first_half": 100 * (samples["steady_half"]["cpu_s"] - samples["all_created"]["cpu_s"])
            / (samples["steady_half"]["t"] - samples["all_created"]["t"]),
            "steady_cpu_pct": 100 * (samples["steady"]["cpu_s"] - samples["all_created"]["cpu_s"]) / steady,
            "apiserver_burst_cpu_s": api_cpu1 - api_cpu0,
            "apiserver_steady_cpu_pct": 100 * (api_cpu2 - api_cpu1) / steady,
            "apiserver_requests": requests,
            "apiserver_requests_total": sum(requests.values()),
            "apiserver_requests_5xx": sum(v for k, v in requests.items() if k.endswith((" 500", " 503", " 504"))),
            "objects": {
                "rayservices": cp.count("/apis/ray.io/v1/namespaces/default/rayservices"),
                "rayclusters": cp.count("/apis/ray.io/v1/namespaces/default/rayclusters"),
                "rayservices_with_duplicate_clusters": duplicates,
                "pods": cp.count("/api/v1/namespaces/default/pods?labelSelector=ray.io/is-ray-node%3Dyes"),
                "services": cp.count("/api/v1/namespaces/default/services"),
            },
        })
        return result
    except Exception as e:  # noqa: BLE001 - recorded, the other runs go on
        log(f"{op.name} N={n} failed: {traceback.format_exc()}")
        result["error"] = repr(e)
        return result
    finally:
        if watch:
            watch.stop()
        op.stop()
        cp.stop()
        if args.keep_logs:
            dest = pathlib.Path(args.keep_logs) / directory.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in directory.glob("*.log"):
                shutil.copy(f, dest / f.name)
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report

def table(results, steady):
    half, full = f"{steady / 2:g} s", f"{steady:g} s"
    mib = lambda kib: kib / 1024  # noqa: E731
    rows = [
        ("create → RayCluster p50 (ms)", lambda r: 1000 * r["create_to_cluster_s"]["p50"]),
        ("create → RayCluster p99 (ms)", lambda r: 1000 * r["create_to_cluster_s"]["p99"]),
        ("create → RayCluster max (ms)", lambda r: 1000 * r["create_to_cluster_s"]["max"]),
        ("first POST → all N clusters (s)", lambda r: r["all_clusters_after_s"]),
        ("RSS idle (MiB)", lambda r: mib(r["samples"]["idle"]["rss_kib"])),
        ("RSS all created (MiB)", lambda r: mib(r["samples"]["all_created"]["rss_kib"])),
        (f"RSS after {full} steady (MiB)", lambda r: mib(r["samples"]["steady"]["rss_kib"])),
        ("peak RSS, VmHWM (MiB)", lambda r: mib(r["samples"]["steady"]["hwm_kib"])),
        ("CPU for the burst (s)", lambda r: r["burst_cpu_s"]),
        (f"CPU steady, first {half} (%)", lambda r: r["steady_cpu_pct_first_half"]),
        (f"CPU steady, {full} (%)", lambda r: r["steady_cpu_pct"]),
        (f"apiserver CPU steady, {full} (%)", lambda r: r["apiserver_steady_cpu_pct"]),
        ("apiserver requests, whole run", lambda r: r["apiserver_requests_total"]),
        ("apiserver 5xx answers, whole run", lambda r: r["apiserver_requests_5xx"]),
        ("pods existing at the end", lambda r: r["objects"]["pods"]),
    ]
    by = {(r["operator"], r["n"]): r for r in results}
    counts = sorted({r["n"] for r in results})
    out = ["| N | metric | ours | KubeRay | ours/KubeRay |", "|---:|---|---:|---:|---:|"]
    for n in counts:
        a, b = by.get(("ours", n)), by.get(("kuberay", n))
        for label, f in rows:
            va = vb = None
            try:
                va = f(a) if a and "error" not in a else None
            except (KeyError, TypeError):
                pass
            try:
                vb = f(b) if b and "error" not in b else None
            except (KeyError, TypeError):
                pass
            fmt = lambda v: "—" if v is None else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"  # noqa: E731
            ratio = f"{va / vb:.2f}" if va is not None and vb else "—"
            out.append(f"| {n} | {label} | {fmt(va)} | {fmt(vb)} | {ratio} |")
    return "\n".join(out)


def git_head():
    return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          stdout=subprocess.PIPE, text=True).stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument("--counts", default="1,100,1000")
    p.add_argument("--operators", default="ours,kuberay")
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    p.add_argument("--ours", default=os.path.join(target, "release/rayservice"), help="our binary")
    p.add_argument("--ours-version", default=None, help="what our binary was built from (recorded)")
    p.add_argument("--clients", type=int, default=8, help="concurrent POSTing clients")
    p.add_argument("--settle", type=float, default=5, help="seconds between ready and the idle sample")
    p.add_argument("--steady", type=float, default=60, help="steady window after all clusters exist (s)")
    p.add_argument("--timeout", type=float, default=600, help="max wait for all clusters after the POSTs")
    p.add_argument("--keep-logs", help="copy each run's logs here")
    p.add_argument("--workdir", help="where control planes live (default: a temp dir)")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    names = args.operators.split(",")

    install = subprocess.run(["bash", str(SCRIPT), "install"], check=True, stdout=subprocess.PIPE, text=True)
    k8s = subprocess.run([os.path.join(install.stdout.strip(), "kube-apiserver"), "--version"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    workdir = args.workdir or tempfile.mkdtemp(prefix="opbench-", dir="/tmp")
    results, meta = [], {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
                         "kube_apiserver": k8s, "clients": args.clients, "steady_s": args.steady,
                         "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    try:
        for n in counts:
            for name in names:
                op = ours(args.ours, args.ours_version or git_head()) if name == "ours" else kuberay()
                log(f"{name} ({op.version}), N={n}")
                r = one_run(op, n, args, workdir)
                results.append(r)
                log(json.dumps({k: v for k, v in r.items() if k != "samples"}))
                pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    print(table(results, args.steady))


if __name__ == "__main__":
    main()
