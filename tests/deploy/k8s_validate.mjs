// k8s_validate.mjs - validates rendered Kubernetes objects against the
// Kubernetes OpenAPI schemas of the kubernetes-models package (types,
// required fields, enums, formats).
//
//   node tests/deploy/k8s_validate.mjs FILE.yaml...
//
// NODE_PATH-free: the packages are resolved from DEPLOY_TOOLS (default
// .cache/deploy-tools, where scripts/validate-deploy.sh installs them).
// Kinds of a group listed in NO_SCHEMA (Strimzi's CRDs) are reported and
// left to tests/deploy/test_k8s.py's structural checks; any other kind
// without a model is an error.  Exit 0 when every object is valid.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const tools = resolve(process.env.DEPLOY_TOOLS || ".cache/deploy-tools");
const require = createRequire(tools + "/node_modules/");
const YAML = require("yaml");

const NO_SCHEMA = new Set(["kafka.strimzi.io"]);

function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const mod = group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
  try {
    return { group, cls: require(mod)[kind] };
  } catch {
    return { group, cls: undefined };
  }
}

let bad = 0, ok = 0, unchecked = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.log(`FAIL ${file}: YAML: ${doc.errors[0].message}`);
      bad++;
      continue;
    }
    const obj = doc.toJSON();
    if (!obj) continue;
    const name = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    if (!obj.apiVersion || !obj.kind) {
      console.log(`FAIL ${name}: no apiVersion or kind`);
      bad++;
      continue;
    }
    const { group, cls } = modelFor(obj.apiVersion, obj.kind);
    if (!cls) {
      if (NO_SCHEMA.has(group)) {
        unchecked++;
        continue;
      }
      console.log(`FAIL ${name}: no schema for ${obj.apiVersion} ${obj.kind}`);
      bad++;
      continue;
    }
    try {
      new cls(obj).validate();
      ok++;
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message}`);
      bad++;
    }
  }
}
console.log(`k8s-schema: ${ok} valid, ${bad} invalid, ${unchecked} without a schema (CRDs)`);
process.exit(bad ? 1 : 0);
