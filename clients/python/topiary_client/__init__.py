"""Topiary's Python client: submit, watch and collect compression jobs from
pipeline code (Airflow, Kubeflow, scripts). See clients/python/README.md."""
from .client import TERMINAL, Client, Report
from .errors import (AlreadyExists, Denied, InvalidSpec, JobFailed, NotFound, QueueFull, TopiaryError, Unavailable,
                     WrongState)
from .spec import to_job_spec

__all__ = ["Client", "Report", "TERMINAL", "TopiaryError", "InvalidSpec", "NotFound", "AlreadyExists", "Denied",
           "QueueFull", "WrongState", "Unavailable", "JobFailed", "to_job_spec"]
