"""A real coordinator and real workers on loopback, for the Python tests
(tests/deploy/prometheus_test.py, tests/python/client_test.py): a storage
root holding the bundled teacher and the KJV token files, a tokens file, the
processes, their logs, and a small job spec over that root.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
USER_TOKEN, WORKER_TOKEN = "local-cluster-user-token", "local-cluster-worker-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError("timed out waiting for " + what)


class LocalCluster:
    def __init__(self, bin_dir, kjv_dir, prefix):
        self.bin = bin_dir
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.root = os.path.join(self.tmp, "root")
        os.makedirs(os.path.join(self.root, "data"))
        shutil.copytree(os.path.join(SRC, "models/kjv-llama-8m"), os.path.join(self.root, "models/teacher"))
        for f in ("kjv-train.bin", "kjv-val.bin"):
            shutil.copy(os.path.join(kjv_dir, f), os.path.join(self.root, "data", f))
        with open(os.path.join(self.tmp, "tokens"), "w") as f:
            f.write(f"{USER_TOKEN} alice user\n{WORKER_TOKEN} workers worker\n")
        with open(os.path.join(self.tmp, "worker-token"), "w") as f:
            f.write(WORKER_TOKEN + "\n")
        self.procs = {}
        self.api_port = self.metrics_port = None

    def spawn(self, name, args):
        log = open(os.path.join(self.tmp, name + ".log"), "a")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def start_coordinator(self, listen="127.0.0.1:0"):
        ports = os.path.join(self.tmp, "ports")
        if os.path.exists(ports):
            os.remove(ports)
        self.spawn("coordinator", [
            f"{self.bin}/topiary-coordinator", "--listen", listen, "--metrics-address", "127.0.0.1:0",
            "--health-listen", "127.0.0.1:0", "--state-dir", os.path.join(self.tmp, "state"),
            "--storage-root", self.root, "--tokens", os.path.join(self.tmp, "tokens"), "--port-file", ports,
            "--lease-seconds", "5", "--drain-seconds", "2"])
        wait_for(lambda: len(open(ports).read().split()) == 3, 30, "the coordinator")
        self.api_port, self.metrics_port, _ = (int(p) for p in open(ports).read().split())
        return self.api_port

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def start_worker(self, name="w1", slots=2):
        return self.spawn(name, [
            f"{self.bin}/topiary-worker", "--coordinator", f"127.0.0.1:{self.api_port}", "--slots", str(slots),
            "--name", name, "--token-file", os.path.join(self.tmp, "worker-token"),
            "--work-dir", os.path.join(self.tmp, "work-" + name)])

    @property
    def server(self):
        return f"127.0.0.1:{self.api_port}"

    def spec(self, name="local-cluster", distill_tokens="16K"):
        """Importance, prune, distill (training series), evaluate, on the bundled teacher."""
        r = self.root
        return f"""name: {name}
teacher: {{path: {r}/models/teacher}}
data:
  calibration: {{path: {r}/data/kjv-train.bin, format: u16, samples: 8, seq_len: 64}}
  train: {{path: {r}/data/kjv-train.bin, format: u16, seq_len: 64}}
  eval: {{path: {r}/data/kjv-val.bin, format: u16, seq_len: 64, samples: 8}}
stages:
  - importance: {{depth: [block_influence], batch: 2}}
  - prune: {{target: {{hidden_size: 192, intermediate_size: 512, num_attention_heads: 6, num_key_value_heads: 3}}}}
  - distill: {{tokens: {distill_tokens}, lr: 2e-3, global_batch: 8}}
  - evaluate: {{}}
resources: {{ranks: 2}}
"""

    def close(self, show_logs=False):
        for name in list(self.procs):
            self.stop(name)
        if show_logs:
            for log in sorted(os.listdir(self.tmp)):
                if log.endswith(".log"):
                    print(f"== {log} (last lines)")
                    print("".join(open(os.path.join(self.tmp, log)).readlines()[-30:]))
        if not os.environ.get("KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
