#!/usr/bin/python3
"""The alerts and the dashboard against a real Prometheus (Debian's
`prometheus`): a coordinator and a worker run a small job (importance,
prune, distill, evaluate) submitted through the Kubeflow component's own
command (deploy/kubeflow/topiary-submit.yaml, its placeholders filled as the
Kubeflow executor fills them, then run again with the same request id: the
retry re-attaches to the same job); Prometheus scrapes the coordinator every
second and evaluates the PrometheusRule's groups. Then, through Prometheus'
HTTP API:
  - every dashboard query returns series over the job's run;
  - every alert expression evaluates, and its measured part (the expression
    without its threshold) returns series;
  - every metric a query or an alert names has series (a name that does not
    exist fails the test);
  - Prometheus evaluated every rule without error, and no alert fired on a
    healthy run.
Usage: prometheus_test.py BIN_DIR KJV_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
from checklist import Checklist  # noqa: E402
from local_cluster import SRC, USER_TOKEN, LocalCluster, free_port, wait_for  # noqa: E402

BIN, KJV = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
check = Checklist()


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path, **params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)

    def query_range(self, expr, start, end):
        try:
            r = self.get("/api/v1/query_range", query=expr, start=start, end=end, step="1s")
        except urllib.error.HTTPError as e:
            return None, e.read().decode()[:300]
        return r["data"]["result"], None

    def series(self, name, start, end):
        """Series of metric `name` (a histogram's _bucket, _sum and _count included)."""
        match = '{__name__=~"%s(_bucket|_sum|_count)?"}' % name
        return self.get("/api/v1/series", **{"match[]": match, "start": start, "end": end})["data"]


def measured_part(expr):
    """The expression without its threshold: what must have series on a healthy run."""
    inner = re.fullmatch(r"absent\((.*)\)", expr.strip(), re.S)
    if inner:
        expr = inner.group(1)
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[-0-9.e]+\s*$", "", expr.strip())


def metric_names(expr):
    names = set(re.findall(r"\b(topiary_[a-z_]+)\b", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
            for n in names} | ({"up"} if re.search(r"\bup\{", expr) else set())


def kubeflow_command(inputs, job_id_path):
    """The component's command with its placeholders filled, as the Kubeflow executor does."""
    with open(os.path.join(SRC, "deploy/kubeflow/topiary-submit.yaml")) as f:
        comp = yaml.safe_load(f)
    defaults = {i["name"]: i.get("default") for i in comp["inputs"]}
    out = []
    for part in comp["implementation"]["container"]["command"]:
        if isinstance(part, dict) and "inputValue" in part:
            value = inputs.get(part["inputValue"], defaults.get(part["inputValue"]))
            assert value is not None, "no value for input " + part["inputValue"]
            out.append(value)
        elif isinstance(part, dict) and "outputPath" in part:
            out.append(job_id_path)
        else:
            out.append(part)
    return out


def main():
    if not shutil.which("prometheus"):
        print("SKIPPED: Debian's prometheus is not installed (scripts/setup installs it)")
        return 77
    cluster = LocalCluster(BIN, KJV, "topiary-prom-")
    tmp = cluster.tmp
    try:
        # The coordinator and a worker, as the manifests run them.
        api_port = cluster.start_coordinator()
        metrics_port = cluster.metrics_port
        cluster.start_worker("w1", 2)

        # Prometheus: the ServiceMonitor's scrape (job named after the metrics Service), the rules.
        with open(os.path.join(SRC, "deploy/base/monitoring/prometheusrule.yaml")) as f:
            rules = yaml.safe_load(f)["spec"]
        with open(os.path.join(tmp, "topiary.rules.yaml"), "w") as f:
            yaml.safe_dump(rules, f)
        with open(os.path.join(SRC, "deploy/base/monitoring/servicemonitor.yaml")) as f:
            monitor = yaml.safe_load(f)
        endpoint = monitor["spec"]["endpoints"][0]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.join(tmp, "topiary.rules.yaml")],
            "scrape_configs": [{"job_name": "topiary-coordinator-metrics", "metrics_path": endpoint["path"],
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        prom_port = free_port()
        cluster.spawn("prometheus", ["prometheus", f"--config.file={tmp}/prometheus.yml",
                                     f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}",
                                     "--log.level=warn"])
        prom = Prometheus(prom_port)
        wait_for(lambda: urllib.request.urlopen(prom.base + "/-/ready", timeout=2).status == 200, 60, "Prometheus")
        start = time.time()
        wait_for(lambda: prom.get("/api/v1/query", query='up{job="topiary-coordinator-metrics"} == 1')["data"]["result"],
                 30, "the first scrape")

        # The job, through the Kubeflow component's command.
        spec = cluster.spec("prometheus-test", distill_tokens="32K")  # training long enough for several scrapes
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "TOPIARY_TOKEN": USER_TOKEN}
        inputs = {"spec": spec, "request_id": "kfp-run-1/distill", "server": f"127.0.0.1:{api_port}"}
        job_id_path = os.path.join(tmp, "outputs", "job_id", "data")
        r = subprocess.run(kubeflow_command(inputs, job_id_path), env=env, capture_output=True, text=True,
                           timeout=900)
        print(r.stdout[-3000:], r.stderr[-3000:])
        check(r.returncode == 0, f"the Kubeflow component's job succeeded (exit {r.returncode})")
        job_id = open(job_id_path).read().strip() if os.path.exists(job_id_path) else ""
        check(job_id.startswith("job-"), f"the component wrote the job id ({job_id!r})")
        # A retried task (same request id) re-attaches to the same job and its outcome.
        again_path = os.path.join(tmp, "outputs2", "job_id", "data")
        r2 = subprocess.run(kubeflow_command(inputs, again_path), env=env, capture_output=True, text=True,
                            timeout=300)
        check(r2.returncode == 0 and open(again_path).read().strip() == job_id,
              f"a retry with the same request id re-attached to {job_id} (exit {r2.returncode}: {r2.stderr[-500:]})")
        time.sleep(4)  # the last scrapes and a rule evaluation after the job
        end = time.time()

        # The checker itself can fail: a metric that does not exist has no series.
        check(not prom.series("topiary_no_such_metric", start, end), "a made-up metric has no series")

        with open(os.path.join(SRC, "deploy/base/monitoring/topiary-dashboard.json")) as f:
            board = json.load(f)
        names = set()
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m")
                result, error = prom.query_range(expr, start, end)
                check(result, f"dashboard '{panel['title']}': {expr} returns series ({error or 'none'})")
                names |= metric_names(expr)
        for group in rules["groups"]:
            for rule in group["rules"]:
                result, error = prom.query_range(rule["expr"], start, end)
                check(error is None, f"alert {rule['alert']}: {rule['expr']} evaluates ({error})")
                part = measured_part(rule["expr"])
                result, error = prom.query_range(part, start, end)
                check(result, f"alert {rule['alert']}: {part} returns series ({error or 'none'})")
                names |= metric_names(rule["expr"])
        for name in sorted(names):
            check(prom.series(name, start, end), f"metric {name} has series")
        print(f"{len(names)} metrics named by the dashboard and alerts, all scraped: {', '.join(sorted(names))}")

        evaluated = [r for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        check(len(evaluated) == sum(len(g["rules"]) for g in rules["groups"]), "Prometheus loaded every rule")
        for r in evaluated:
            check(r.get("health") == "ok", f"Prometheus evaluated {r['name']}: {r.get('health')} {r.get('lastError')}")
        active = prom.get("/api/v1/alerts")["data"]["alerts"]
        check(not active, f"no alert on a healthy run ({[a['labels']['alertname'] for a in active]})")
    finally:
        cluster.close(show_logs=bool(check.failures))
    return check.exit_code("the dashboard and alerts hold against a real scrape")


if __name__ == "__main__":
    sys.exit(main())
