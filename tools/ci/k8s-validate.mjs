// k8s-validate.mjs - offline checks of the deployment manifests; exits 1 if any check fails.
//
//   node tools/ci/k8s-validate.mjs [--compose docker/compose.yaml] docker/k8s/*.yaml docker/k8s/kserve/*.yaml
//
// - Kubernetes objects: against the OpenAPI schema through npm `kubernetes-models` (types, required
//   fields; unknown extra fields are not rejected).
// - KServe objects (ServingRuntime, InferenceService), which kubernetes-models lacks: a hand-written
//   check of their required fields, their containers against the core Container schema, and that
//   each InferenceService names a runtime here that serves its model format and protocol.
// - Kustomization: the listed resources exist.
// - Cross-document consistency, the promises the manifests make: OpenMP threads = CPU limit, grace
//   period >= preStop + CONVSERVE_SHUTDOWN_TIMEOUT, probes on /v2/health/{ready,live} at a declared
//   port, non-root and read-only root, Service/HPA/PDB pointing at the Deployment; startup probes
//   (Deployment and ServingRuntime) that leave a large network time to load; no Service or PDB
//   selector that also matches the labels KServe copies to its pods; with CONVSERVE_MODEL_CONTROL
//   poll, /models mounted whole (no subPath) from a claim defined here.
// - --compose FILE: the compose file's structure and the same thread / grace-period promises.
//
// npm packages (kubernetes-models, yaml) are looked up in $CONVSERVE_CI_NODE_MODULES, then next to
// this script, then in /var/cache/convserve-ci/node/node_modules (where tools/ci/docker.sh puts them).
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const nm = [process.env.CONVSERVE_CI_NODE_MODULES, join(here, "node_modules"),
            "/var/cache/convserve-ci/node/node_modules"]
  .filter(Boolean).find((d) => existsSync(join(d, "kubernetes-models", "package.json")) &&
                               existsSync(join(d, "yaml", "package.json")));
if (!nm) {
  console.error("k8s-validate: npm packages kubernetes-models and yaml not found; " +
                "set CONVSERVE_CI_NODE_MODULES (tools/ci/docker.sh installs them)");
  process.exit(2);
}
const { parseAllDocuments } = await import(pathToFileURL(join(nm, "yaml", "dist", "index.js")));
const model = async (path) => import(pathToFileURL(join(nm, "kubernetes-models", path + ".js")));
const { Container } = await model("v1/Container");

let bad = 0;
const fail = (where, msg) => { bad++; console.log(`FAIL ${where}: ${msg}`); };
const ok = (where, msg) => console.log(`ok   ${where}: ${msg}`);
const firstLine = (e) => String(e?.message ?? e).split("\n")[0];

// ---- read every document ----
const args = process.argv.slice(2);
let composeFile = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--compose") composeFile = args[++i];
  else files.push(args[i]);
}
if (!files.length && !composeFile) {
  console.error("usage: node k8s-validate.mjs [--compose FILE] MANIFEST.yaml...");
  process.exit(2);
}
function readYaml(file) {
  const out = [];
  let docs;
  try { docs = parseAllDocuments(readFileSync(file, "utf8")); }
  catch (e) { fail(file, firstLine(e)); return out; }
  for (const d of docs) {
    if (d.errors.length) { fail(file, `YAML: ${firstLine(d.errors[0])}`); continue; }
    const o = d.toJS();
    if (o) out.push(o);
  }
  return out;
}
const objs = []; // {file, o, where}
for (const f of files) for (const o of readYaml(f)) {
  const where = `${f}: ${o?.kind ?? "?"}/${o?.metadata?.name ?? "?"}`;
  if (!o || typeof o !== "object" || typeof o.apiVersion !== "string" || typeof o.kind !== "string") {
    fail(f, "document without apiVersion and kind"); continue;
  }
  objs.push({ file: f, o, where });
}

// ---- helpers for the KServe structural checks ----
const isObj = (v) => v && typeof v === "object" && !Array.isArray(v);
const nonEmptyStr = (v) => typeof v === "string" && v.length > 0;
const dns1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
function need(errs, cond, msg) { if (!cond) errs.push(msg); }
function checkContainers(errs, list, path) {
  need(errs, Array.isArray(list) && list.length > 0, `${path} must be a non-empty list`);
  for (const [i, c] of (Array.isArray(list) ? list : []).entries()) {
    try { new Container(c).validate(); } catch (e) { errs.push(`${path}[${i}]: ${firstLine(e)}`); }
    need(errs, nonEmptyStr(c?.image), `${path}[${i}].image is required`);
  }
}
const PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"];
function checkServingRuntime(o) {
  const e = [], s = o.spec;
  need(e, o.apiVersion === "serving.kserve.io/v1alpha1", "apiVersion must be serving.kserve.io/v1alpha1");
  need(e, nonEmptyStr(o.metadata?.name) && dns1123.test(o.metadata.name), "metadata.name must be a DNS-1123 label");
  need(e, isObj(s), "spec is required");
  if (!isObj(s)) return e;
  need(e, Array.isArray(s.supportedModelFormats) && s.supportedModelFormats.length > 0,
       "spec.supportedModelFormats must be a non-empty list");
  for (const [i, f] of (s.supportedModelFormats ?? []).entries()) {
    need(e, nonEmptyStr(f?.name), `spec.supportedModelFormats[${i}].name is required`);
    need(e, f?.version === undefined || typeof f.version === "string", `spec.supportedModelFormats[${i}].version must be a string`);
    need(e, f?.autoSelect === undefined || typeof f.autoSelect === "boolean", `spec.supportedModelFormats[${i}].autoSelect must be a boolean`);
  }
  need(e, s.protocolVersions === undefined || (Array.isArray(s.protocolVersions) &&
       s.protocolVersions.every((p) => PROTOCOLS.includes(p))), `spec.protocolVersions must be a list of ${PROTOCOLS}`);
  need(e, s.multiModel === undefined || typeof s.multiModel === "boolean", "spec.multiModel must be a boolean");
  checkContainers(e, s.containers, "spec.containers");
  need(e, (s.containers ?? []).some((c) => c?.name === "kserve-container"),
       "spec.containers needs one named kserve-container (KServe merges the predictor into it)");
  return e;
}
function checkInferenceService(o) {
  const e = [], p = o.spec?.predictor;
  need(e, o.apiVersion === "serving.kserve.io/v1beta1", "apiVersion must be serving.kserve.io/v1beta1");
  need(e, nonEmptyStr(o.metadata?.name) && dns1123.test(o.metadata.name), "metadata.name must be a DNS-1123 label");
  need(e, isObj(p), "spec.predictor is required");
  if (!isObj(p)) return e;
  const m = p.model;
  need(e, isObj(m), "spec.predictor.model is required (this check knows only the model-format form)");
  if (isObj(m)) {
    need(e, nonEmptyStr(m.modelFormat?.name), "spec.predictor.model.modelFormat.name is required");
    need(e, m.runtime === undefined || nonEmptyStr(m.runtime), "spec.predictor.model.runtime must be a string");
    need(e, m.protocolVersion === undefined || PROTOCOLS.includes(m.protocolVersion),
         `spec.predictor.model.protocolVersion must be one of ${PROTOCOLS}`);
    need(e, m.storageUri === undefined || /^[a-z0-9+.-]+:\/\//.test(m.storageUri),
         "spec.predictor.model.storageUri must be a URI (pvc://, s3://, gs://, https://, ...)");
    // the model's other fields are those of a core Container (resources, env, args...)
    const { modelFormat, runtime, protocolVersion, storageUri, storage, ...rest } = m;
    try { new Container({ name: "kserve-container", ...rest }).validate(); }
    catch (err) { e.push(`spec.predictor.model: ${firstLine(err)}`); }
  }
  for (const k of ["minReplicas", "maxReplicas"])
    need(e, p[k] === undefined || (Number.isInteger(p[k]) && p[k] >= 0), `spec.predictor.${k} must be an integer >= 0`);
  need(e, !(p.minReplicas > p.maxReplicas), "spec.predictor.minReplicas > maxReplicas");
  return e;
}

// ---- 1. each document on its own ----
for (const { file, o, where } of objs) {
  const [g, v] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  if (g === "serving.kserve.io") {
    const errs = o.kind === "ServingRuntime" ? checkServingRuntime(o)
      : o.kind === "InferenceService" ? checkInferenceService(o) : [`unknown KServe kind ${o.kind}`];
    errs.length ? errs.forEach((m) => fail(where, m)) : ok(where, "KServe structure");
    continue;
  }
  if (g === "kustomize.config.k8s.io") {
    const missing = (o.resources ?? []).filter((r) => !existsSync(resolve(dirname(file), r)));
    missing.length ? fail(where, `missing resources: ${missing}`) : ok(where, `${(o.resources ?? []).length} resources exist`);
    continue;
  }
  let M;
  try { M = await model(`${g ? g + "/" : ""}${v}/${o.kind}`); }
  catch { fail(where, `kubernetes-models has no ${o.apiVersion} ${o.kind}`); continue; }
  try {
    new M[o.kind](o).validate();
    if (!nonEmptyStr(o.metadata?.name)) throw new Error("metadata.name is required");
    ok(where, "schema");
  } catch (e) { fail(where, firstLine(e)); }
}

// ---- 2. consistency across documents ----
const cpuCount = (q) => {
  if (q === undefined) return undefined;
  const s = String(q);
  return s.endsWith("m") ? Number(s.slice(0, -1)) / 1000 : Number(s);
};
const envOf = (c, name) => c?.env?.find((e) => e.name === name)?.value;
const matches = (sel, labels) => isObj(sel) && Object.entries(sel).every(([k, val]) => labels?.[k] === val);
function checkThreads(where, c) {
  const cpu = cpuCount(c?.resources?.limits?.cpu);
  const t = envOf(c, "CONVSERVE_INFER_THREADS"), omp = envOf(c, "OMP_NUM_THREADS");
  if (cpu === undefined) return fail(where, `container ${c?.name}: no CPU limit`);
  if (Number(t) !== cpu) fail(where, `container ${c?.name}: CONVSERVE_INFER_THREADS=${t} but CPU limit ${cpu}`);
  else if (omp !== undefined && Number(omp) !== cpu) fail(where, `container ${c?.name}: OMP_NUM_THREADS=${omp} but CPU limit ${cpu}`);
  else ok(where, `container ${c?.name}: ${cpu} CPUs, ${t} inference threads`);
}
const byKind = (k) => objs.filter((x) => x.o.kind === k);
// A startup probe must allow this long before liveness takes over: resnet50 loaded and warmed up
// in 51 s on 2 busy vCPUs (README, "Rolling out with Kubernetes"); about six times that.
const MIN_STARTUP_S = 300;
function checkStartup(where, c, ports) {
  const pr = c?.startupProbe;
  if (!pr?.httpGet || pr.httpGet.path !== "/v2/health/ready" || !ports.has(pr.httpGet.port))
    return fail(where, `container ${c?.name}: needs an httpGet startupProbe on /v2/health/ready at a container port`);
  const budget = (pr.periodSeconds ?? 10) * (pr.failureThreshold ?? 3);
  if (budget < MIN_STARTUP_S)
    fail(where, `container ${c?.name}: startupProbe allows ${budget} s; loading a large network needs ${MIN_STARTUP_S} s`);
  else ok(where, `container ${c?.name}: startupProbe allows ${budget} s`);
}
for (const { o, where } of byKind("Deployment")) {
  const spec = o.spec?.template?.spec ?? {};
  const c = spec.containers?.[0];
  checkThreads(where, c);
  const portNames = new Set((c?.ports ?? []).flatMap((p) => [p.name, p.containerPort]));
  const probe = (kind, path) => {
    const pr = c?.[kind];
    if (!pr?.httpGet) return fail(where, `${kind} must be an httpGet probe`);
    if (pr.httpGet.path !== path) return fail(where, `${kind} path ${pr.httpGet.path}, want ${path}`);
    if (!portNames.has(pr.httpGet.port)) return fail(where, `${kind} port ${pr.httpGet.port} is not a container port`);
    ok(where, `${kind} on ${path}`);
  };
  probe("startupProbe", "/v2/health/ready");
  checkStartup(where, c, portNames);
  probe("readinessProbe", "/v2/health/ready");
  probe("livenessProbe", "/v2/health/live");
  const cmd = c?.lifecycle?.preStop?.exec?.command ?? [];
  const preStop = c?.lifecycle?.preStop?.sleep?.seconds ?? (cmd[0] === "sleep" ? Number(cmd[1]) : 0);
  const shutdown = Number(envOf(c, "CONVSERVE_SHUTDOWN_TIMEOUT") ?? 30);
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  if (!(preStop > 0)) fail(where, "no preStop sleep: the pod would get SIGTERM before leaving the endpoints");
  if (grace < preStop + shutdown + 1)
    fail(where, `terminationGracePeriodSeconds ${grace} < preStop ${preStop} + shutdown ${shutdown} + 1`);
  else ok(where, `grace ${grace}s >= preStop ${preStop}s + shutdown ${shutdown}s + 1`);
  const nonRoot = c?.securityContext?.runAsNonRoot ?? spec.securityContext?.runAsNonRoot;
  if (nonRoot !== true) fail(where, "runAsNonRoot is not true");
  if (c?.securityContext?.readOnlyRootFilesystem !== true) fail(where, "readOnlyRootFilesystem is not true");
  if (!matches(o.spec?.selector?.matchLabels, o.spec?.template?.metadata?.labels))
    fail(where, "spec.selector does not match the pod template's labels");
  if (envOf(c, "CONVSERVE_MODEL_CONTROL") === "poll") {
    const m = (c?.volumeMounts ?? []).find((vm) => vm.mountPath === "/models");
    const vol = (spec.volumes ?? []).find((v) => v.name === m?.name);
    const claim = vol?.persistentVolumeClaim?.claimName;
    if (!m) fail(where, "CONVSERVE_MODEL_CONTROL=poll but no volume is mounted on /models");
    else if (m.subPath || m.subPathExpr) fail(where, "/models is a subPath mount, which never sees changes");
    else if (claim && !objs.some((x) => x.o.kind === "PersistentVolumeClaim" && x.o.metadata?.name === claim))
      fail(where, `/models comes from claim ${claim}, which is not in these manifests`);
    else ok(where, `polls /models from volume ${m.name}`);
  }
}
const deployments = byKind("Deployment").map((x) => x.o);
for (const { o, where } of byKind("Service")) {
  const d = deployments.find((dep) => matches(o.spec?.selector, dep.spec?.template?.metadata?.labels));
  if (!d) { fail(where, "selector matches no Deployment's pods"); continue; }
  const ports = d.spec.template.spec.containers.flatMap((c) => c.ports ?? []);
  const bad = (o.spec?.ports ?? []).filter((p) => !ports.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort));
  bad.length ? fail(where, `targetPort ${bad.map((p) => p.targetPort)} is not a container port`)
             : ok(where, `selects Deployment/${d.metadata.name}`);
}
for (const { o, where } of byKind("HorizontalPodAutoscaler")) {
  const ref = o.spec?.scaleTargetRef;
  const d = deployments.find((dep) => ref?.kind === "Deployment" && dep.metadata?.name === ref?.name);
  if (!d) { fail(where, `scaleTargetRef ${ref?.kind}/${ref?.name} is not in these manifests`); continue; }
  const usesCpu = (o.spec?.metrics ?? []).some((m) => m.resource?.name === "cpu" && m.resource?.target?.type === "Utilization");
  const hasReq = d.spec.template.spec.containers.every((c) => c.resources?.requests?.cpu !== undefined);
  usesCpu && !hasReq ? fail(where, "CPU utilisation target but the pods have no CPU request")
                     : ok(where, `scales Deployment/${d.metadata.name} ${o.spec.minReplicas}..${o.spec.maxReplicas}`);
}
for (const { o, where } of byKind("PodDisruptionBudget")) {
  deployments.some((dep) => matches(o.spec?.selector?.matchLabels, dep.spec?.template?.metadata?.labels))
    ? ok(where, "selects the Deployment's pods") : fail(where, "selector matches no Deployment's pods");
}
const runtimes = byKind("ServingRuntime").map((x) => x.o);
for (const { o, where } of byKind("ServingRuntime")) {
  const c = o.spec?.containers?.[0];
  checkThreads(where, c);
  checkStartup(where, c, new Set((c?.ports ?? []).flatMap((p) => [p.name, p.containerPort])));
}
// KServe copies an InferenceService's labels to its pods: a plain Service or PDB whose selector
// they satisfy would send traffic to, or count, KServe's pods in a shared namespace.
for (const { o, where } of [...byKind("Service"), ...byKind("PodDisruptionBudget")]) {
  const sel = o.kind === "Service" ? o.spec?.selector : o.spec?.selector?.matchLabels;
  const hit = objs.filter((x) => ["InferenceService", "ServingRuntime"].includes(x.o.kind) &&
                                 matches(sel, x.o.metadata?.labels ?? {}));
  hit.length ? fail(where, `selector also matches the labels of ${hit.map((x) => `${x.o.kind}/${x.o.metadata.name}`)}`)
             : ok(where, "selector matches no KServe object's labels");
}
for (const { o, where } of byKind("InferenceService")) {
  const m = o.spec?.predictor?.model;
  const fmt = m?.modelFormat?.name, proto = m?.protocolVersion ?? "v1";
  const r = runtimes.find((rt) => rt.metadata?.name === m?.runtime) ??
            (m?.runtime ? undefined : runtimes.find((rt) => rt.spec?.supportedModelFormats?.some((f) => f.name === fmt && f.autoSelect)));
  if (!r) { fail(where, `runtime ${m?.runtime ?? "(auto)"} for format ${fmt} is not in these manifests`); continue; }
  if (!r.spec.supportedModelFormats?.some((f) => f.name === fmt))
    fail(where, `runtime ${r.metadata.name} does not support model format ${fmt}`);
  else if (!(r.spec.protocolVersions ?? ["v1"]).includes(proto))
    fail(where, `runtime ${r.metadata.name} does not speak protocol ${proto}`);
  else ok(where, `served by ServingRuntime/${r.metadata.name} (${fmt}, ${proto})`);
}

// ---- 3. compose file ----
function seconds(d) { // compose durations: 35s, 1m30s, 500ms, or a bare number of seconds
  if (typeof d === "number") return d;
  const m = /^((\d+)h)?((\d+)m(?!s))?((\d+)s)?((\d+)ms)?$/.exec(String(d ?? ""));
  return m && d ? (+(m[2] ?? 0)) * 3600 + (+(m[4] ?? 0)) * 60 + (+(m[6] ?? 0)) + (+(m[8] ?? 0)) / 1000 : NaN;
}
if (composeFile) {
  const docs = readYaml(composeFile);
  const c = docs[0];
  const services = c?.services;
  if (docs.length !== 1 || !isObj(services) || !Object.keys(services).length)
    fail(composeFile, "want one document with a non-empty services map");
  for (const [name, s] of Object.entries(isObj(services) ? services : {})) {
    const where = `${composeFile}: service ${name}`;
    const env = Array.isArray(s.environment)
      ? Object.fromEntries(s.environment.map((kv) => kv.split(/=(.*)/s).slice(0, 2))) : (s.environment ?? {});
    const e = [];
    need(e, nonEmptyStr(s.image) || s.build, "needs image or build");
    if (s.build) {
      const ctx = resolve(dirname(composeFile), s.build.context ?? s.build);
      need(e, existsSync(join(ctx, s.build.dockerfile ?? "Dockerfile")), `build.dockerfile not found in context ${ctx}`);
    }
    need(e, (s.ports ?? []).every((p) => /^(\d+\.\d+\.\d+\.\d+:)?(\d+:)?\d+(\/(tcp|udp))?$/.test(String(p)) || isObj(p)),
         "ports must be [HOST_IP:][HOST:]CONTAINER");
    need(e, Array.isArray(s.healthcheck?.test) && ["CMD", "CMD-SHELL"].includes(s.healthcheck.test[0]),
         "healthcheck.test must be [CMD, ...] or [CMD-SHELL, ...]");
    for (const k of ["interval", "timeout", "start_period"])
      need(e, s.healthcheck?.[k] === undefined || seconds(s.healthcheck[k]) > 0, `healthcheck.${k} is not a duration`);
    need(e, ["no", "always", "on-failure", "unless-stopped"].includes(String(s.restart).split(":")[0]), "restart policy is not valid");
    const cpus = Number(s.deploy?.resources?.limits?.cpus);
    need(e, cpus > 0, "deploy.resources.limits.cpus is required");
    need(e, Number(env.CONVSERVE_INFER_THREADS) === cpus, `CONVSERVE_INFER_THREADS=${env.CONVSERVE_INFER_THREADS} but cpus ${cpus}`);
    need(e, env.OMP_NUM_THREADS === undefined || Number(env.OMP_NUM_THREADS) === cpus, `OMP_NUM_THREADS=${env.OMP_NUM_THREADS} but cpus ${cpus}`);
    need(e, /^\d+(\.\d+)?[bkmg]?$/i.test(String(s.deploy?.resources?.limits?.memory ?? "")), "deploy.resources.limits.memory is required");
    const shutdown = Number(env.CONVSERVE_SHUTDOWN_TIMEOUT ?? 30), grace = seconds(s.stop_grace_period ?? "10s");
    need(e, grace >= shutdown + 1, `stop_grace_period ${s.stop_grace_period ?? "10s (default)"} < CONVSERVE_SHUTDOWN_TIMEOUT ${shutdown} + 1`);
    need(e, (s.volumes ?? []).some((v) => (isObj(v) ? v.target : String(v).split(":")[1]) === "/models"), "no volume on /models");
    e.length ? e.forEach((m) => fail(where, m))
             : ok(where, `${cpus} CPUs = ${env.CONVSERVE_INFER_THREADS} threads, grace ${grace}s >= shutdown ${shutdown}s + 1`);
  }
}

console.log(bad ? `k8s-validate: ${bad} problem(s)` : "k8s-validate: all manifests valid");
process.exit(bad ? 1 : 0);
