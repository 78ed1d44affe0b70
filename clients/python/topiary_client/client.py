"""A typed client of Topiary's JobService for pipeline code.

    from topiary_client import Client
    with Client("topiary-coordinator.topiary:7070", token=os.environ["TOPIARY_TOKEN"]) as c:
        job = c.submit("spec.yaml" text or a dict, request_id="run-42/compress")
        for event in c.watch(job.id):       # reconnects from the last sequence number
            print(event.seq, event.message)
        job = c.wait(job.id)                # raises JobFailed unless it succeeded
        report = c.report(job.id)           # dict; report.output_path for the export

Every call has a deadline (`timeout`, seconds) and raises a TopiaryError
subclass (errors.py) naming the field where the coordinator names one.
"""
import json
import secrets
import time

import grpc

from .errors import JobFailed, TopiaryError, Unavailable, from_rpc_error
from .spec import to_job_spec

TERMINAL = ("JOB_SUCCEEDED", "JOB_FAILED", "JOB_CANCELLED")


def _pb():
    from topiary.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc  # generated at build time from proto/

    return job_pb2, job_service_pb2, job_service_pb2_grpc


class Report:
    """A finished job's report: `data` (the report as a dict), `output_path`, `report_dir`."""

    def __init__(self, proto):
        self.job_id = proto.job_id
        self.data = json.loads(proto.report_json) if proto.report_json else {}
        self.output_path = proto.output_path
        self.report_dir = proto.report_dir

    def __repr__(self):
        return f"Report(job_id={self.job_id!r}, output_path={self.output_path!r})"


class Client:
    """A connection to a coordinator.

    server: HOST:PORT. token: the bearer token (a `user` or `admin` line of
    the coordinator's tokens file). tls_ca: the CA's PEM (bytes or a path)
    to speak TLS; tls_cert/tls_key for mutual TLS. timeout: seconds per call.
    """

    def __init__(self, server, token=None, tls_ca=None, tls_cert=None, tls_key=None, timeout=30.0):
        _, _, rpc = _pb()
        self._token = token
        self._timeout = timeout
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls_ca or tls_cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca), private_key=_read(tls_key), certificate_chain=_read(tls_cert))
            self._channel = grpc.secure_channel(server, creds, options)
        else:
            self._channel = grpc.insecure_channel(server, options)
        self._stub = rpc.JobServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _metadata(self):
        return (("authorization", "Bearer " + self._token),) if self._token else ()

    def _call(self, method, request, retries=0):
        for attempt in range(retries + 1):
            try:
                return method(request, timeout=self._timeout, metadata=self._metadata())
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if not isinstance(error, Unavailable) or attempt == retries:
                    raise error from None
                time.sleep(0.3 * 2 ** attempt)

    def submit(self, spec, request_id=None):
        """Creates a job from a spec (YAML/JSON text, a dict, or a JobSpec).

        The same request_id with the same spec returns the same job (a retry
        never makes two); with another spec, AlreadyExists. Retried while the
        coordinator is unavailable.
        """
        _, api, _ = _pb()
        request = api.CreateJobRequest(spec=to_job_spec(spec), request_id=request_id or secrets.token_hex(16))
        return self._call(self._stub.CreateJob, request, retries=4)

    def get(self, job_id):
        _, api, _ = _pb()
        return self._call(self._stub.GetJob, api.GetJobRequest(id=job_id), retries=2)

    def list(self, states=(), labels=None, page_size=100):
        """Every job (newest first), following the pages; states like "running", labels {k: v}."""
        job, api, _ = _pb()
        wanted = [job.JobState.Value("JOB_" + s.upper()) if isinstance(s, str) else s for s in states]
        token = ""
        while True:
            page = self._call(self._stub.ListJobs, api.ListJobsRequest(
                page_size=page_size, page_token=token, states=wanted, labels=labels or {}), retries=2)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id):
        _, api, _ = _pb()
        return self._call(self._stub.CancelJob, api.CancelJobRequest(id=job_id))

    def delete(self, job_id):
        _, api, _ = _pb()
        self._call(self._stub.DeleteJob, api.DeleteJobRequest(id=job_id))

    def report(self, job_id):
        _, api, _ = _pb()
        return Report(self._call(self._stub.GetJobReport, api.GetJobReportRequest(id=job_id), retries=2))

    def watch(self, job_id, from_seq=0, max_reconnects=20):
        """The job's events (topiary.v1.Event) with seq > from_seq, until it finishes.

        A broken stream (the coordinator restarting, a network blip) is
        reopened from the last sequence number seen, so no event is lost or
        repeated; after max_reconnects failures in a row, Unavailable.
        """
        _, api, _ = _pb()
        after, failures = from_seq, 0
        while True:
            stream = self._stub.WatchJob(api.WatchJobRequest(id=job_id, from_seq=after), metadata=self._metadata())
            try:
                for response in stream:
                    failures = 0
                    if response.HasField("event"):
                        after = response.event.seq
                        yield response.event
                return  # the stream ends when the job has finished
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                failures += 1
                if not isinstance(error, Unavailable) or failures > max_reconnects:
                    raise error from None
                time.sleep(0.25 * min(failures, 8))
            finally:
                stream.cancel()

    def wait(self, job_id, timeout=None):
        """Waits for the job to finish; its final state. JobFailed unless it succeeded."""
        deadline = None if timeout is None else time.time() + timeout
        for _ in self.watch(job_id):
            if deadline is not None and time.time() > deadline:
                raise TopiaryError(None, f"job {job_id} did not finish within {timeout} s")
        job = self.get(job_id)
        job_pb2, _, _ = _pb()
        if job_pb2.JobState.Name(job.state) != "JOB_SUCCEEDED":
            raise JobFailed(job)
        return job


def _read(pem):
    if pem is None or isinstance(pem, bytes):
        return pem
    with open(pem, "rb") as f:
        return f.read(1 << 20)
