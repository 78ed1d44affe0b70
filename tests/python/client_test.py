#!/usr/bin/python3
"""The Python client (clients/python) against a real coordinator and worker,
with Debian's python3-grpcio and the modules generated from proto/ at build
time: errors name their field; submit is idempotent by request id; the
Airflow-style example drives a job from submit to report, and a retry of the
task re-attaches to it; watch survives a coordinator restart mid-job with
every event exactly once; list, cancel, wait and delete.
Usage: client_test.py BIN_DIR KJV_DIR BUILD_PYTHON_DIR
"""
import os
import sys
import threading
import types

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [sys.argv[3], os.path.join(HERE, "../../clients/python"), os.path.join(HERE, "../../clients/python/examples"),
                os.path.join(HERE, "../testing")]
import topiary_client as tc  # noqa: E402
from checklist import Checklist  # noqa: E402
from local_cluster import USER_TOKEN, LocalCluster, free_port  # noqa: E402

check = Checklist()


def raises(exc_type, fn):
    try:
        fn()
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001 - the wrong exception is a failure to report
        check(False, f"expected {exc_type.__name__}, got {type(e).__name__}: {e}")
        return None
    check(False, f"expected {exc_type.__name__}, nothing raised")
    return None


def main():
    cluster = LocalCluster(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), "topiary-pyclient-")
    port = free_port()
    try:
        cluster.start_coordinator(f"127.0.0.1:{port}")
        cluster.start_worker("w1", 2)
        client = tc.Client(cluster.server, token=USER_TOKEN, timeout=20)
        spec = yaml.safe_load(cluster.spec("py-client"))

        # Errors, each naming what is wrong.
        bad = dict(spec, stages=[{"prune": {"target": {"hidden_sise": 3}}}])
        e = raises(tc.InvalidSpec, lambda: client.submit(bad))
        check(e is not None and e.field == "spec.stages[0].prune.target.hidden_sise", f"unknown field named ({e and e.field})")
        outside = dict(spec, teacher={"path": "/etc"})
        e = raises(tc.InvalidSpec, lambda: client.submit(outside))
        check(e is not None and e.field == "spec.teacher.path" and e.code is not None,
              f"the coordinator's INVALID_ARGUMENT names teacher.path ({e and e.field}: {e and e.message})")
        raises(tc.NotFound, lambda: client.get("job-0000000000000000-0000"))
        with tc.Client(cluster.server, token="not-a-token") as stranger:
            raises(tc.Denied, lambda: list(stranger.list()))
        with tc.Client("127.0.0.1:1", token=USER_TOKEN, timeout=2) as nowhere:
            raises(tc.Unavailable, lambda: nowhere.get("job-x"))

        # The Airflow-style task: submit, watch, wait, report; a retry re-attaches.
        os.environ.update(TOPIARY_SERVER=cluster.server, TOPIARY_TOKEN=USER_TOKEN)
        import airflow_task

        context = {"run_id": "scheduled__2026-12-03", "ti": types.SimpleNamespace(task_id="compress")}
        out = airflow_task.compress(spec=cluster.spec("py-airflow"), **context)
        check(out["job_id"].startswith("job-") and out["stages"] == ["importance", "prune", "distill", "evaluate"],
              f"the task ran the job to its report ({out})")
        again = airflow_task.compress(spec=cluster.spec("py-airflow"), **context)
        check(again["job_id"] == out["job_id"], f"a retried task re-attached ({again['job_id']} vs {out['job_id']})")
        e = raises(tc.AlreadyExists, lambda: client.submit(cluster.spec("py-other"),
                                                           request_id="airflow/scheduled__2026-12-03/compress"))
        check(e is not None and e.field == "request_id", f"a reused request id names request_id ({e and e.field})")
        report = client.report(out["job_id"])
        check(report.data.get("job_id") == out["job_id"] or report.job_id == out["job_id"], "report of the job")
        check(out["job_id"] in [j.id for j in client.list(states=["succeeded"])], "list by state finds it")

        # watch across a coordinator restart: every event once, in order.
        job = client.submit(spec, request_id="py-watch")
        seqs, restarted = [], threading.Event()
        for event in client.watch(job.id):
            seqs.append(event.seq)
            if not restarted.is_set() and event.stage == "distill":
                cluster.stop("coordinator")  # SIGTERM: open watches end UNAVAILABLE
                cluster.start_coordinator(f"127.0.0.1:{port}")
                restarted.set()
        check(restarted.is_set(), "the coordinator was restarted mid-job")
        check(seqs == list(range(1, len(seqs) + 1)), f"every event exactly once, in order ({seqs})")
        final = client.wait(job.id)
        check(tc.errors.job_state_name(final.state) == "succeeded", "the job succeeded across the restart")
        check(final.last_event_seq == seqs[-1], f"the watch ended at the job's last event ({final.last_event_seq})")

        # cancel, wait raising JobFailed, delete.
        queued = client.submit(dict(spec, name="py-cancel"))
        cancelled = client.cancel(queued.id)
        check(tc.errors.job_state_name(cancelled.state) in ("cancelled", "cancelling"), "cancel")
        e = raises(tc.JobFailed, lambda: client.wait(queued.id, timeout=120))
        check(e is not None and tc.errors.job_state_name(e.job.state) == "cancelled", "wait raises JobFailed")
        raises(tc.WrongState, lambda: client.cancel(job.id))  # it has finished
        client.delete(queued.id)
        raises(tc.NotFound, lambda: client.get(queued.id))
        client.close()
    finally:
        cluster.close(show_logs=bool(check.failures))
    return check.exit_code("the Python client passed")


if __name__ == "__main__":
    sys.exit(main())
