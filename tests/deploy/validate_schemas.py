"""Validates rendered Kubernetes objects against their schemas, strictly.

Usage: validate_schemas.py OBJECTS.json, where OBJECTS.json is an array of
objects. Built-in kinds are checked by kubernetes-validate in strict mode
(the OpenAPI schemas of Kubernetes KUBERNETES_VERSION, unknown fields
refused); the prometheus-operator kinds (ServiceMonitor, PrometheusRule) by
the JSON schema of cloudcoil's models of those CRDs, made strict the same
way. Prints one line an object ("KIND/NAME (apiVersion): valid" or the
first error with its path) and exits 1 when any object fails, has no schema,
or holds a field no schema knows: the API server drops such a field (a typo
like `livenessProb`) silently, so it fails here. Runs on Topiary's Python
environment (scripts/setup).
"""
import json
import sys

import jsonschema
import kubernetes_validate
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator_v1

KUBERNETES_VERSION = kubernetes_validate.latest_version()
CRDS = {("monitoring.coreos.com/v1", kind): getattr(prometheus_operator_v1, kind)
        for kind in ("ServiceMonitor", "PrometheusRule", "PodMonitor")}


def strict(schema):
    """Refuses unknown properties in every object schema that lists its own."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


_crd_validators = {}


def crd_errors(obj):
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in _crd_validators:
        schema = strict(CRDS[key].model_json_schema(by_alias=True))
        _crd_validators[key] = jsonschema.Draft202012Validator(schema)
    return _crd_validators[key].iter_errors(obj)


def where(error):
    return "/" + "/".join(str(p) for p in error.absolute_path)


def check(obj):
    """Returns None when obj validates, else the reason."""
    if not isinstance(obj, dict) or not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return "not a Kubernetes object (apiVersion and kind must be strings)"
    if (obj["apiVersion"], obj["kind"]) in CRDS:
        # The models make optional fields "X or null" (anyOf): best_match
        # descends into those alternatives to the error that says what is wrong.
        error = jsonschema.exceptions.best_match(crd_errors(obj))
        return f"{where(error)}: {error.message}" if error else None
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return f"no schema for {obj['apiVersion']} {obj['kind']} in Kubernetes {KUBERNETES_VERSION}"
    except kubernetes_validate.ValidationError as e:
        return f"{where(e)}: {e.message}"
    return None


def main():
    with open(sys.argv[1]) as f:
        objects = json.load(f)
    failed = 0
    for o in objects:
        name = f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')} ({o.get('apiVersion')})"
        reason = check(o)
        print(f"{name}: {reason or 'valid'}")
        failed += reason is not None
    if failed:
        print(f"{failed} of {len(objects)} objects do not validate (Kubernetes {KUBERNETES_VERSION})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
