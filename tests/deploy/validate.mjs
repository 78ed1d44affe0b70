// Validates rendered Kubernetes objects against the Kubernetes schemas
// (npm kubernetes-models) and the prometheus-operator ones
// (@kubernetes-models/prometheus-operator). Usage: node validate.mjs OBJECTS.json
// where OBJECTS.json is an array of objects. Exit 1 naming every object
// that does not validate, or whose apiVersion and kind have no schema.
import { readFileSync } from "node:fs";

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
    new Model(o).validate();
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
