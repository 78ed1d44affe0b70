#!/usr/bin/python3
"""Offline checks of deploy/: every overlay renders with `kubectl kustomize`,
every rendered object validates strictly against the Kubernetes and
prometheus-operator schemas (validate_schemas.py on Topiary's Python
environment: kubernetes-validate and the CRDs' models), yamllint passes, the flags in the manifests are flags the
binaries accept (their own parsers run on them), the objects carry what a
production install needs (probes, volumes, secrets, PDB, network policy...),
and the alerts pass `promtool check rules` and `promtool test rules`.

Usage: manifests_test.py BIN_DIR WORK_DIR [PYTHON]. PYTHON is the environment's
interpreter (default: scripts/venv's). Exit 77 (skipped) with the reason when
kubectl is not installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
from checklist import Checklist  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN, WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
PYTHON = sys.argv[3] if len(sys.argv) > 3 else os.path.join(
    subprocess.run([os.path.join(SRC, "scripts/venv")], capture_output=True, text=True).stdout.strip(), "bin/python")
VALIDATE = os.path.join(SRC, "tests/deploy/validate_schemas.py")
TARGETS = {"cpu-dev": "deploy/overlays/cpu-dev", "gpu": "deploy/overlays/gpu", "submit": "deploy/submit"}
check = Checklist()


def run(args, env=None, timeout=300, cwd=None):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def find(objs, kind, name=None):
    """Objects of `kind` named `name` (or `name` with kustomize's hash suffix; any name when None)."""
    return [o for o in objs if o["kind"] == kind and
            (name is None or re.fullmatch(re.escape(name) + r"(-[a-z0-9]{10})?", o["metadata"]["name"]))]


def one(objs, kind, name):
    found = find(objs, kind, name)
    check(len(found) == 1, f"one {kind} {name} (found {len(found)})")
    return found[0] if found else {}


def container_env(objs, pod_spec):
    """A container's environment as the kubelet builds it: ConfigMaps, then env."""
    c = pod_spec["containers"][0]
    env = {}
    for ref in c.get("envFrom", []):
        name = ref["configMapRef"]["name"]
        env.update(one(objs, "ConfigMap", name).get("data", {}))
    for e in c.get("env", []):
        value = e.get("value", "from-" + next(iter(e.get("valueFrom", {"x": 0}))))
        env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
    return env


def long_flags(binary):
    out = run([binary, "--help"]).stdout
    return set(re.findall(r"^\s+(?:-\w,)?--([a-z][a-z0-9-]*)", out, re.M))


def check_flags(objs, overlay, binary, prefix, sts):
    """The binary's own parser on the flags the StatefulSet gives it."""
    pod = one(objs, "StatefulSet", sts).get("spec", {}).get("template", {}).get("spec")
    if not pod:
        return
    env = container_env(objs, pod)
    flags = long_flags(binary)
    check(len(flags) > 5, f"{binary} --help lists its flags")
    for key in env:
        if key.startswith(prefix + "_"):
            flag = key[len(prefix) + 1:].lower().replace("_", "-")
            check(flag in flags, f"{overlay}: {key} names no flag of {os.path.basename(binary)} (--{flag})")
    r = run([binary, "--check-flags"], env={"PATH": "/usr/bin:/bin", **env})
    check(r.returncode == 0, f"{overlay}: {os.path.basename(binary)} --check-flags: {r.stdout}{r.stderr}")
    return env, pod


def check_overlay(name, objs):
    kinds = sorted({o["kind"] for o in objs})
    print(f"{name}: {len(objs)} objects: {', '.join(kinds)}")
    coord = one(objs, "StatefulSet", "topiary-coordinator")
    spec = coord.get("spec", {})
    check(spec.get("replicas") == 1, f"{name}: one coordinator replica")
    check(any(t["metadata"]["name"] == "state" for t in spec.get("volumeClaimTemplates", [])),
          f"{name}: the coordinator's store is on a PersistentVolumeClaim")
    pod = spec.get("template", {}).get("spec", {})
    c = pod.get("containers", [{}])[0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check("grpc" in c.get(probe, {}), f"{name}: coordinator {probe} is a native gRPC probe")
    check(c.get("resources", {}).get("requests") and c.get("resources", {}).get("limits"),
          f"{name}: coordinator resource requests and limits")
    check(any(v.get("secret", {}).get("secretName") == "topiary-tokens" for v in pod.get("volumes", [])),
          f"{name}: coordinator tokens from a Secret")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: coordinator runs as non-root")
    for svc in ("topiary-coordinator", "topiary-coordinator-metrics"):
        one(objs, "Service", svc)
    env, _ = check_flags(objs, name, f"{BIN}/topiary-coordinator", "TOPIARY_COORDINATOR", "topiary-coordinator") or ({}, {})
    cmounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    check(cmounts.get(env.get("TOPIARY_COORDINATOR_STATE_DIR", "").rsplit("/", 1)[0]) in templates and
          cmounts.get(env.get("TOPIARY_COORDINATOR_BACKUP_DIR")) in templates,
          f"{name}: the store and its backups are on volume claims ({cmounts})")
    health = env.get("TOPIARY_COORDINATOR_HEALTH_LISTEN", "")
    check(health.endswith(":%d" % c.get("readinessProbe", {}).get("grpc", {}).get("port", -1)),
          f"{name}: the probes' port is the coordinator's --health-listen ({health})")

    worker = one(objs, "StatefulSet", "topiary-worker")
    wpod = worker.get("spec", {}).get("template", {}).get("spec", {})
    wenv, _ = check_flags(objs, name, f"{BIN}/topiary-worker", "TOPIARY_WORKER", "topiary-worker") or ({}, {})
    mounts = {m["name"]: m["mountPath"] for m in wpod.get("containers", [{}])[0].get("volumeMounts", [])}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in wpod.get("volumes", [])
              if "persistentVolumeClaim" in v}
    storage = [n for n, claim in claims.items() if claim == "topiary-storage"]
    check(storage and mounts.get(storage[0]) == wenv.get("TOPIARY_WORKER_STORAGE_ROOT") ==
          env.get("TOPIARY_COORDINATOR_STORAGE_ROOT"),
          f"{name}: the shared volume is mounted at the storage root of workers and coordinator")
    pvc = one(objs, "PersistentVolumeClaim", "topiary-storage")
    check(pvc.get("spec", {}).get("accessModes") == ["ReadWriteMany"], f"{name}: shared storage is ReadWriteMany")
    check(any(v.get("secret", {}).get("secretName") == "topiary-worker-token" for v in wpod.get("volumes", [])),
          f"{name}: worker token from a Secret")
    check("podAntiAffinity" in wpod.get("affinity", {}), f"{name}: worker anti-affinity")
    drain = float(wenv.get("TOPIARY_WORKER_DRAIN_SECONDS", "1e9"))
    check(wpod.get("terminationGracePeriodSeconds", 0) > drain,
          f"{name}: the grace period ({wpod.get('terminationGracePeriodSeconds')} s) outlasts the drain ({drain} s)")
    pdb = one(objs, "PodDisruptionBudget", "topiary-worker")
    check(pdb.get("spec", {}).get("selector") == worker.get("spec", {}).get("selector"),
          f"{name}: the PDB covers the workers")
    for sa in find(objs, "ServiceAccount"):
        check(sa.get("automountServiceAccountToken") is False, f"{name}: {sa['metadata']['name']} has no API token")
    check(not find(objs, "Role") and not find(objs, "ClusterRole"), f"{name}: no Kubernetes API permissions")
    policies = find(objs, "NetworkPolicy")
    ports = {p["port"] for np in policies for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])}
    check({7070, 9464} <= ports, f"{name}: network policy admits the API and metrics ports ({ports})")
    one(objs, "ServiceMonitor", "topiary-coordinator")
    one(objs, "PrometheusRule", "topiary")
    dash = one(objs, "ConfigMap", "topiary-dashboard")
    check(dash.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1",
          f"{name}: the dashboard ConfigMap is labelled grafana_dashboard: \"1\"")
    board = json.loads(next(iter(dash.get("data", {"x": "{}"}).values())))
    check(len(board.get("panels", [])) >= 10, f"{name}: the dashboard has its panels")
    return wpod, wenv, env


def main():
    # Without these, the rendered objects go unchecked (the test ends skipped,
    # saying so); yamllint and promtool still run.
    missing = [f"{tool} is not installed here ({why})" for tool, why in (
        ("kubectl", "kubectl with kustomize renders the overlays"),) if not shutil.which(tool)]
    os.makedirs(WORK, exist_ok=True)
    rendered = {}
    for name, path in TARGETS.items() if not missing else ():
        r = run(["kubectl", "kustomize", os.path.join(SRC, path)])
        if not check(r.returncode == 0, f"kubectl kustomize {path}: {r.stderr.strip()}"):
            continue
        rendered[name] = [o for o in yaml.safe_load_all(r.stdout) if o]
        with open(os.path.join(WORK, name + ".yaml"), "w") as f:
            f.write(r.stdout)

    for name in ("cpu-dev", "gpu"):
        if name not in rendered:
            continue
        wpod, wenv, cenv = check_overlay(name, rendered[name])
        if name == "gpu":
            limits = wpod["containers"][0]["resources"]["limits"]
            check(str(limits.get("nvidia.com/gpu")) == wenv.get("TOPIARY_WORKER_SLOTS"),
                  "gpu: a rank per GPU (slots = nvidia.com/gpu)")
            check(wenv.get("TOPIARY_WORKER_DEVICE") == "cuda", "gpu: workers on cuda")
            check(cenv.get("TOPIARY_COORDINATOR_TLS_CERT", "").startswith("/etc/topiary/tls/"), "gpu: TLS on the API")
            check(any(v.get("secret", {}).get("secretName") == "topiary-tls" for v in wpod["volumes"]),
                  "gpu: workers mount the TLS Secret")
        else:
            check("nvidia.com/gpu" not in json.dumps(wpod), "cpu-dev: no GPUs asked for")

    if "submit" in rendered:
        objs = rendered["submit"]
        job = (find(objs, "Job") or [{}])[0]
        pod = job.get("spec", {}).get("template", {}).get("spec", {})
        c = pod.get("containers", [{}])[0]
        env = container_env(objs, pod)
        check(pod.get("restartPolicy") == "Never" and job["spec"].get("backoffLimit", 0) > 0,
              "submit: failed pods are retried")
        check(any("batch.kubernetes.io/job-name" in e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
                  for e in c.get("env", [])), "submit: the request id comes from the Job's name")
        args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), a) for a in c.get("args", [])]
        check("--wait" in args and any(a.startswith("--request-id=k8s/") for a in args),
              f"submit: runs topiary submit --wait with a stable request id ({args})")
        # The CLI's parser on the Job's arguments, with the spec it mounts: it
        # parses them and the spec, then finds no coordinator (exit 3).
        spec_cm = one(objs, "ConfigMap", "topiary-job-spec")
        with open(os.path.join(WORK, "spec.yaml"), "w") as f:
            f.write(spec_cm.get("data", {}).get("spec.yaml", ""))
        args = [os.path.join(WORK, "spec.yaml") if a == "/etc/topiary/job/spec.yaml" else a for a in args]
        r = run([c["command"][0] if os.path.isabs(c["command"][0]) else f"{BIN}/{c['command'][0]}"] + args +
                ["--server", "127.0.0.1:1", "--timeout", "2"], env={"PATH": "/usr/bin:/bin", "TOPIARY_TOKEN": "t"})
        check(r.returncode == 3, f"submit: the CLI accepts the Job's arguments (exit {r.returncode}: {r.stderr})")

    # Schemas: every object, strictly (validate_schemas.py).
    def validate(objs, label):
        path = os.path.join(WORK, label + ".json")
        with open(path, "w") as f:
            json.dump(objs, f)
        return run([PYTHON, VALIDATE, path])

    for name, objs in rendered.items():
        r = validate(objs, name)
        print(r.stdout, end="")
        check(r.returncode == 0, f"{name}: objects validate against the schemas: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    if rendered:
        # The check bites: a misspelt field (which the API server would drop
        # silently) fails it, in a built-in kind and in each CRD kind.
        def mutated(kind, mutate):
            objs = json.loads(json.dumps(rendered["cpu-dev"]))
            mutate(next(o for o in objs if o["kind"] == kind))
            return objs

        for label, kind, mutate, where in (
                ("livenessProb", "StatefulSet",
                 lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("livenessProb", {}),
                 "containers/0: Additional properties are not allowed ('livenessProb'"),
                ("lables", "Service", lambda o: o["metadata"].__setitem__("lables", {"a": "b"}),
                 "/metadata: Additional properties are not allowed ('lables'"),
                ("for_", "PrometheusRule",
                 lambda o: o["spec"]["groups"][0]["rules"][0].__setitem__("for_", "5m"),
                 "rules/0: Additional properties are not allowed ('for_'"),
                ("ServiceMonitor", "ServiceMonitor",
                 lambda o: o["spec"]["endpoints"][0].__setitem__("intervall", "15s"),
                 "endpoints/0: Additional properties are not allowed ('intervall'")):
            r = validate(mutated(kind, mutate), "misspelt-" + label)
            check(r.returncode == 1 and where in r.stdout,
                  f"a misspelt field ({label} in a {kind}) fails the schema check: {r.stdout[-1000:]}{r.stderr[-1000:]}")

    # yamllint on everything written by hand.
    r = run(["yamllint", "--strict", "-c", os.path.join(SRC, "tests/deploy/yamllint.yaml"), "deploy", "tests/deploy"],
            cwd=SRC)
    check(r.returncode == 0, f"yamllint: {r.stdout}{r.stderr}")

    # Alerts: the PrometheusRule's groups as a rules file, checked and unit-tested.
    with open(os.path.join(SRC, "deploy/base/monitoring/prometheusrule.yaml")) as f:
        rule = yaml.safe_load(f)
    rules_file = os.path.join(WORK, "topiary.rules.yaml")
    with open(rules_file, "w") as f:
        yaml.safe_dump(rule["spec"], f, sort_keys=False)
    shutil.copy(os.path.join(SRC, "tests/deploy/alerts_test.yaml"), WORK)
    r = run(["promtool", "check", "rules", rules_file])
    check(r.returncode == 0, f"promtool check rules: {r.stdout}{r.stderr}")
    r = run(["promtool", "test", "rules", os.path.join(WORK, "alerts_test.yaml")])
    print(r.stdout, end="")
    check(r.returncode == 0, f"promtool test rules: {r.stdout}{r.stderr}")
    alerts = {x["alert"] for g in rule["spec"]["groups"] for x in g["rules"] if "alert" in x}
    with open(os.path.join(SRC, "tests/deploy/alerts_test.yaml")) as f:
        tested = {t["alertname"] for case in yaml.safe_load(f)["tests"] for t in case.get("alert_rule_test", [])}
    check(alerts <= tested, f"every alert has a unit test (untested: {sorted(alerts - tested)})")
    check(len(alerts) >= 7, f"the seven alerts ({sorted(alerts)})")

    if missing and not check.failures:
        print("SKIPPED: the rendered manifests were not checked: " + "; ".join(missing))
        return 77
    return check.exit_code("all deploy checks passed")


if __name__ == "__main__":
    sys.exit(main())
