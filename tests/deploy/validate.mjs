// Validates rendered Kubernetes objects against the Kubernetes schemas
// (npm kubernetes-models) and the prometheus-operator ones
// (@kubernetes-models/prometheus-operator). Usage: node validate.mjs OBJECTS.json
// where OBJECTS.json is an array of objects. Exit 1 naming every object
// that does not validate, whose apiVersion and kind have no schema, or that
// holds a field no schema knows (a typo such as `livenessProb` is silently
// dropped by the API server, so it fails here).
//
// The compiled schemas do not forbid unknown properties, so each validator
// runs on a proxy of the object that records which keys it reads: a key it
// never reads is a key no schema has. A map (labels, ConfigMap data) counts
// as read once the validator enumerates its keys.
import { readFileSync } from "node:fs";

function tracker() {
  const unread = new Map();  // path -> keys of the object at path not read yet
  const proxies = new WeakMap();
  function track(value, path) {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    const keys = new Set(Array.isArray(value) ? [] : Object.keys(value));
    if (!Array.isArray(value)) unread.set(path, keys);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver);
        if (typeof key !== "string") return v;
        keys.delete(key);
        return track(v, `${path}/${key}`);
      },
      has(target, key) {
        if (typeof key === "string") keys.delete(key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        keys.clear();
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  }
  return { track, unknown: () => [...unread].flatMap(([p, ks]) => [...ks].map((k) => `${p || ""}/${k}`)) };
}

const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const o of objects) {
  const name = `${o.kind}/${o.metadata?.name} (${o.apiVersion})`;
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  const module = group.endsWith("monitoring.coreos.com")
    ? `@kubernetes-models/prometheus-operator/${group}/${version}/${o.kind}`
    : `kubernetes-models/${group ? group + "/" : ""}${version}/${o.kind}`;
  let Model;
  try {
    Model = (await import(module))[o.kind];
  } catch (e) {
    console.log(`${name}: no schema (${module})`);
    failed++;
    continue;
  }
  try {
    const t = tracker();
    Model.prototype.validate.call(t.track(structuredClone(o), ""));
    const unknown = t.unknown();
    if (unknown.length) throw new Error(`fields no schema knows: ${unknown.join(", ")}`);
    console.log(`${name}: valid`);
  } catch (e) {
    console.log(`${name}: ${e.message}`);
    failed++;
  }
}
if (failed) {
  console.log(`${failed} of ${objects.length} objects do not validate`);
  process.exit(1);
}
