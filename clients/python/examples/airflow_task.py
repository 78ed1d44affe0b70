"""Compressing a model from a pipeline task: an Airflow PythonOperator
callable (the same function serves any task runner that passes a run id).

    from airflow.operators.python import PythonOperator
    PythonOperator(task_id="compress", python_callable=compress,
                   op_kwargs={"spec_path": "/specs/minitron.yaml"})

The request id is the run's id and the task's: when Airflow retries the
task (a worker lost, a timeout), the retry re-attaches to the Topiary job
the first try submitted instead of starting another. The coordinator's
address and token come from the environment (TOPIARY_SERVER, TOPIARY_TOKEN;
TOPIARY_TLS_CA for TLS). The return value (pushed to XCom by Airflow) names
the job, its export and its final evaluation.
"""
import os

from topiary_client import Client


def compress(spec_path=None, spec=None, **context):
    run_id = context["run_id"]
    task_id = context["ti"].task_id
    if spec is None:
        with open(spec_path) as f:
            spec = f.read(1 << 20)
    with Client(os.environ["TOPIARY_SERVER"], token=os.environ.get("TOPIARY_TOKEN"),
                tls_ca=os.environ.get("TOPIARY_TLS_CA")) as client:
        job = client.submit(spec, request_id=f"airflow/{run_id}/{task_id}")
        print(f"topiary job {job.id}")
        for event in client.watch(job.id):
            if event.message:
                print(f"[{event.seq}] {event.message}")
        client.wait(job.id)  # raises JobFailed (the task fails) unless it succeeded
        report = client.report(job.id)
        return {"job_id": job.id, "output_path": report.output_path, "report_dir": report.report_dir,
                "stages": [s.get("name") for s in report.data.get("stages", [])]}
