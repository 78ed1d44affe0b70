"""Job specs from YAML text or Python dicts, read the way the coordinator's
own parser reads them (common/spec/spec_io.cc): field names as in the
proto, enum values by their short names (`u16`, `bf16`, `l2`), counts as
strings or numbers ("94B", 4096), unknown fields refused with their path
("spec.stages[0].prune.target.hidden_sise: unknown field").
"""
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from .errors import InvalidSpec

MAX_SPEC_BYTES = 1 << 20  # the coordinator refuses larger specs
MAX_VALUES = 100000
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _short_name(value):
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(value.type.name)).upper() + "_"
    name = value.name
    return (name[len(prefix):] if name.startswith(prefix) else name).lower()


def _enum(text, enum, path):
    key = str(text).lower()
    if enum.name == "Dtype":
        key = _DTYPE_ALIASES.get(key, key)
    for v in enum.values:
        if v.number != 0 and (_short_name(v) == key or v.name == text):
            return v.name
    names = ", ".join(_short_name(v) for v in enum.values if v.number != 0)
    raise InvalidSpec(None, f"{path}: '{text}' is not one of {names}", path)


def _value(node, field, path, budget):
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(node, field.message_type, path, budget)
    if isinstance(node, (dict, list)):
        raise InvalidSpec(None, f"{path}: expected a single value", path)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum(node, field.enum_type, path)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if isinstance(node, bool):
            return node
        raise InvalidSpec(None, f"{path}: '{node}' is not true or false", path)
    if field.type == FieldDescriptor.TYPE_STRING:
        return str(node)
    return node


def _message(node, descriptor, path, budget):
    if not isinstance(node, dict):
        raise InvalidSpec(None, f"{path}: expected a mapping", path)
    out = {}
    for key, value in node.items():
        budget[0] -= 1
        if budget[0] < 0:
            raise InvalidSpec(None, f"spec: more than {MAX_VALUES} values", "spec")
        p = f"{path}.{key}"
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None:
            raise InvalidSpec(None, f"{p}: unknown field", p)
        if value is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(value, dict):
                raise InvalidSpec(None, f"{p}: expected a mapping", p)
            out[field.name] = {str(k): str(v) for k, v in value.items()}
        elif field.label == FieldDescriptor.LABEL_REPEATED:
            if not isinstance(value, list):
                raise InvalidSpec(None, f"{p}: expected a list", p)
            out[field.name] = [_value(v, field, f"{p}[{i}]", budget) for i, v in enumerate(value)]
        else:
            out[field.name] = _value(value, field, p, budget)
    return out


def to_job_spec(spec):
    """A topiary.v1.JobSpec from a JobSpec, a dict, or YAML/JSON text."""
    from topiary.v1 import job_pb2

    if isinstance(spec, job_pb2.JobSpec):
        return spec
    if isinstance(spec, (str, bytes)):
        if len(spec) > MAX_SPEC_BYTES:
            raise InvalidSpec(None, f"spec: longer than {MAX_SPEC_BYTES} bytes", "spec")
        try:
            spec = yaml.safe_load(spec)
        except yaml.YAMLError as e:
            raise InvalidSpec(None, f"spec: {e}", "spec") from None
    converted = _message(spec, job_pb2.JobSpec.DESCRIPTOR, "spec", [MAX_VALUES])
    try:
        return json_format.ParseDict(converted, job_pb2.JobSpec())
    except json_format.ParseError as e:
        raise InvalidSpec(None, f"spec: {e}", "spec") from None
