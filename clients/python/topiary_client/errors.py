"""Errors of the Topiary API as exceptions.

Every call raises a TopiaryError subclass chosen by the gRPC status code;
`field` names the offending field when the coordinator's message starts
with one ("spec.stages[1].prune.target.hidden_size: must be ...").
"""
import re

import grpc

_FIELD = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[A-Za-z_][\w]*(?:\[\d+\])?)*): ")


class TopiaryError(Exception):
    """A failed call: `code` (grpc.StatusCode), `message`, `field` (or None)."""

    def __init__(self, code, message, field=None):
        super().__init__(f"{code.name}: {message}" if code is not None else message)
        self.code = code
        self.message = message
        self.field = field


class InvalidSpec(TopiaryError):
    """INVALID_ARGUMENT: the spec or a request field is wrong; `field` says which."""


class NotFound(TopiaryError):
    """NOT_FOUND: no such job (or not yours)."""


class AlreadyExists(TopiaryError):
    """ALREADY_EXISTS: the request id was used for another spec."""


class Denied(TopiaryError):
    """UNAUTHENTICATED or PERMISSION_DENIED: the token is missing, unknown or not allowed."""


class QueueFull(TopiaryError):
    """RESOURCE_EXHAUSTED: the queue (or your share of it) is full; retry later."""


class WrongState(TopiaryError):
    """FAILED_PRECONDITION: the job is not in a state that allows this (e.g. deleting a running job)."""


class Unavailable(TopiaryError):
    """UNAVAILABLE or DEADLINE_EXCEEDED: the coordinator cannot be reached (or is not serving)."""


class JobFailed(TopiaryError):
    """Client.wait(): the job ended FAILED or CANCELLED; `job` is its final state."""

    def __init__(self, job):
        super().__init__(None, f"job {job.id} ended {job_state_name(job.state)}: {job.error}".rstrip(": "))
        self.job = job


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidSpec,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: Denied,
    grpc.StatusCode.PERMISSION_DENIED: Denied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QueueFull,
    grpc.StatusCode.FAILED_PRECONDITION: WrongState,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def from_rpc_error(e):
    """The exception for a grpc.RpcError."""
    code, message = e.code(), e.details() or ""
    m = _FIELD.match(message)
    return _BY_CODE.get(code, TopiaryError)(code, message, m.group(1) if m else None)


def job_state_name(state):
    from topiary.v1 import job_pb2  # generated at build time from proto/

    return job_pb2.JobState.Name(state).removeprefix("JOB_").lower()
