/**
 * deploy/ and docker-compose.yml, checked without a cluster or a Docker engine:
 * - every overlay (and the HPA fallback) renders with `kubectl kustomize` and every object validates
 *   against the Kubernetes OpenAPI schemas (kubernetes-models) or KEDA's CRD (@kubernetes-models/keda);
 * - references hold: selectors, Service ports, probe ports, ConfigMaps, autoscaler targets, drain times;
 * - `docker-compose config` accepts the compose file, with and without the gpu profile;
 * - no drift: every variable set for a service is one its config schema knows, and the result
 *   parses (so every required one is set);
 * - the Dockerfile copies only what exists and the build context lets through, and runs unprivileged.
 * kubectl and docker-compose are required in CI (EMU_REQUIRE_DEPLOY_TOOLS=1); elsewhere a missing
 * tool skips its tests with the reason.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, test } from "node:test";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ConfigMap, Namespace, PersistentVolumeClaim, Service } from "kubernetes-models/v1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { Ingress, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import ts from "typescript";
import { parse, parseAllDocuments } from "yaml";
import { SERVICE_SCHEMAS, SERVICES, serveEnv, type ServiceName } from "../../services/serve.ts";

const ROOT = join(import.meta.dirname, "../..");
const K8S = join(ROOT, "deploy/k8s");
const REQUIRE_TOOLS = process.env.EMU_REQUIRE_DEPLOY_TOOLS === "1";

/** Values that stand in for the Secret's keys (deploy/README.md lists them). */
const SECRET_PLACEHOLDERS: Record<string, string> = {
  S3_ACCESS_KEY: "access", S3_SECRET_KEY: "secret", WEBHOOK_SECRET: "whsec_c2VjcmV0", API_KEYS: "key-1,key-2",
};
/** Variables every platform process in a multi-process deployment must share. */
const PLATFORM_MUST_SET = ["REDIS_URL", "STORAGE_BACKEND", "WEBHOOK_SECRET", "ENCODER_ADDR", "REASONER_ADDR", "DECODER_ADDR"];

function missingTool(cmd: string, args: string[]): string | false {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status === 0) return false;
  const why = `${cmd} is not on PATH (CI installs it: .ci/run)`;
  if (REQUIRE_TOOLS) throw new Error(why);
  return why;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: ROOT, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [k: string]: unknown };

const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  "v1/Namespace": Namespace, "v1/Service": Service, "v1/ConfigMap": ConfigMap, "v1/PersistentVolumeClaim": PersistentVolumeClaim,
  "apps/v1/Deployment": Deployment, "apps/v1/StatefulSet": StatefulSet,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "networking.k8s.io/v1/Ingress": Ingress, "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget, "keda.sh/v1alpha1/ScaledObject": ScaledObject,
};

/**
 * The schemas above check types and required fields but let unknown fields through, so a misspelt
 * optional field (`imagePullPolcy`) would pass. TypeScript's excess-property check on the same
 * models' interfaces catches those: every object becomes a typed literal, compiled with `tsc`'s API.
 */
function typeCheckFields(name: string, objs: Obj[]): void {
  const dir = join(ROOT, "node_modules/.cache/emu-deploy-check");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}-${process.pid}.ts`);
  const lines = objs.map((o, i) => {
    const module = o.apiVersion === "keda.sh/v1alpha1" ? `@kubernetes-models/keda/keda.sh/v1alpha1/${o.kind}` : `kubernetes-models/${o.apiVersion}/${o.kind}`;
    return `import type { I${o.kind} as T${i} } from "${module}";\nexport const o${i}: T${i} = ${JSON.stringify(o)};`;
  });
  writeFileSync(file, lines.join("\n"));
  try {
    const program = ts.createProgram([file], { strict: true, noEmit: true, skipLibCheck: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, types: [] });
    const errors = ts.getPreEmitDiagnostics(program).map((d) => {
      const at = d.file && d.start !== undefined ? d.file.text.slice(Math.max(0, d.start - 60), d.start + 40).replace(/\s+/g, " ") : "";
      return `${ts.flattenDiagnosticMessageText(d.messageText, " ")}  …${at}…`;
    });
    assert.deepEqual(errors, [], `${name}: fields the Kubernetes/KEDA schemas do not have`);
  } finally {
    rmSync(file, { force: true });
  }
}

function render(dir: string): Obj[] {
  return parseAllDocuments(run("kubectl", ["kustomize", dir])).map((d) => d.toJS() as Obj).filter(Boolean);
}

/** The HPA fallback: the base with components/hpa instead of components/keda. */
function renderHpaFallback(): Obj[] {
  const dir = mkdtempSync(join(tmpdir(), "emu-hpa-"));
  try {
    writeFileSync(join(dir, "kustomization.yaml"), [
      "apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization",
      // kustomize takes relative paths only.
      `resources: [${JSON.stringify(relative(dir, join(K8S, "base")))}]`, `components: [${JSON.stringify(relative(dir, join(K8S, "components/hpa")))}]`, "",
    ].join("\n"));
    return render(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Container { name: string; image: string; env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } } }[]; envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[]; ports?: { name?: string; containerPort: number }[]; [probe: string]: unknown }
interface PodSpec { containers: Container[]; terminationGracePeriodSeconds?: number; volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[] }
const workloads = (objs: Obj[]) => objs.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet") as (Obj & { spec: { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } })[];
const selects = (sel: Record<string, string>, labels: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v);

function containerEnv(c: Container, configMaps: Map<string, Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const f of c.envFrom ?? []) {
    assert.ok(f.configMapRef, `${c.name}: envFrom only from ConfigMaps (secrets by key, so tests know their names)`);
    const data = configMaps.get(f.configMapRef.name);
    assert.ok(data, `${c.name}: ConfigMap ${f.configMapRef.name} is not in the render`);
    Object.assign(env, data);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef) {
      assert.equal(e.valueFrom.secretKeyRef.name, "emu-secrets", `${c.name}: ${e.name} from an unknown Secret`);
      const v = SECRET_PLACEHOLDERS[e.valueFrom.secretKeyRef.key];
      assert.ok(v !== undefined, `${c.name}: ${e.name} from emu-secrets key ${e.valueFrom.secretKeyRef.key}, which deploy/README.md does not list`);
      env[e.name] = v;
    } else if (e.valueFrom?.configMapKeyRef) {
      const v = configMaps.get(e.valueFrom.configMapKeyRef.name)?.[e.valueFrom.configMapKeyRef.key];
      assert.ok(v !== undefined, `${c.name}: ${e.name} from a missing ConfigMap key`);
      env[e.name] = v;
    }
  }
  return env;
}

/** Every variable is known to the service's schema, the whole environment parses, and what a multi-process deployment needs is set. */
function checkServiceEnv(where: string, env: Record<string, string>): ServiceName {
  const service = env.EMU_SERVICE as ServiceName;
  assert.ok(SERVICES.includes(service), `${where}: EMU_SERVICE=${String(env.EMU_SERVICE)} is not a service`);
  const schema = SERVICE_SCHEMAS[service];
  const known = new Set([...Object.keys(schema.shape), ...Object.keys(serveEnv)]);
  const unknown = Object.keys(env).filter((k) => !known.has(k));
  assert.deepEqual(unknown, [], `${where} (${service}): variables its config schema does not know`);
  const parsed = schema.safeParse(env);
  assert.ok(parsed.success, `${where} (${service}): ${parsed.success ? "" : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  if (service === "gateway" || service === "orchestrator") {
    for (const k of PLATFORM_MUST_SET) assert.ok(env[k], `${where} (${service}): ${k} must be set when the platform runs as separate processes`);
  }
  return service;
}

function portExists(c: Container, port: unknown): boolean {
  return (c.ports ?? []).some((p) => p.containerPort === port || (p.name !== undefined && p.name === port));
}

function checkManifests(name: string, objs: Obj[]): void {
  const kinds = new Set(objs.map((o) => o.kind));
  for (const o of objs) {
    const Model = MODELS[`${o.apiVersion}/${o.kind}`];
    assert.ok(Model, `${name}: ${o.apiVersion} ${o.kind} ${o.metadata.name} has no schema in this test; add one`);
    assert.doesNotThrow(() => new Model(o as never).validate(), (err: Error) => { throw new Error(`${name}: ${o.kind}/${o.metadata.name}: ${err.message}`); });
  }
  typeCheckFields(name, objs);
  const configMaps = new Map(objs.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name, (o as unknown as { data: Record<string, string> }).data]));
  const ws = workloads(objs);
  const services = new Map<ServiceName, PodSpec>();
  for (const w of ws) {
    assert.ok(selects(w.spec.selector.matchLabels, w.spec.template.metadata.labels), `${name}: ${w.metadata.name} selector does not match its pods`);
    const spec = w.spec.template.spec;
    for (const c of spec.containers) {
      for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        const p = c[probe] as { httpGet?: { port: unknown }; grpc?: { port: unknown }; tcpSocket?: { port: unknown } } | undefined;
        const port = p?.httpGet?.port ?? p?.grpc?.port ?? p?.tcpSocket?.port;
        if (port !== undefined) assert.ok(portExists(c, port), `${name}: ${w.metadata.name} ${probe} port ${String(port)} is not a container port`);
      }
      if (c.env?.some((e) => e.name === "EMU_SERVICE")) services.set(checkServiceEnv(`${name} ${w.metadata.name}`, containerEnv(c, configMaps)), spec);
    }
    for (const v of spec.volumes ?? []) {
      if (v.persistentVolumeClaim) assert.ok(objs.some((o) => o.kind === "PersistentVolumeClaim" && o.metadata.name === v.persistentVolumeClaim!.claimName), `${name}: ${w.metadata.name} mounts a missing PVC`);
    }
  }
  assert.deepEqual([...services.keys()].sort(), ["decoder", "encoder", "gateway", "orchestrator", "reasoner"], `${name}: every service runs`);
  for (const s of objs.filter((o) => o.kind === "Service") as (Obj & { spec: { selector: Record<string, string>; ports: { targetPort: unknown }[] } })[]) {
    const target = ws.find((w) => selects(s.spec.selector, w.spec.template.metadata.labels));
    assert.ok(target, `${name}: Service ${s.metadata.name} selects no pods`);
    for (const p of s.spec.ports) assert.ok(target.spec.template.spec.containers.some((c) => portExists(c, p.targetPort)), `${name}: Service ${s.metadata.name} targets port ${String(p.targetPort)} its pods do not have`);
  }
  for (const p of objs.filter((o) => o.kind === "PodDisruptionBudget") as (Obj & { spec: { selector: { matchLabels: Record<string, string> } } })[]) {
    assert.ok(ws.some((w) => selects(p.spec.selector.matchLabels, w.spec.template.metadata.labels)), `${name}: PDB ${p.metadata.name} selects no pods`);
  }
  const deployments = new Set(ws.filter((w) => w.kind === "Deployment").map((w) => w.metadata.name));
  for (const a of objs.filter((o) => o.kind === "ScaledObject" || o.kind === "HorizontalPodAutoscaler") as (Obj & { spec: { scaleTargetRef: { name: string } } })[]) {
    assert.ok(deployments.has(a.spec.scaleTargetRef.name), `${name}: ${a.kind} ${a.metadata.name} targets a missing Deployment`);
  }
  // Drains: a stage outlives SHUTDOWN_GRACE_MS; the orchestrator outlives its longest job.
  for (const [service, spec] of services) {
    const env = containerEnv(spec.containers[0]!, configMaps);
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    if (["encoder", "reasoner", "decoder"].includes(service)) {
      assert.ok(grace * 1000 > Number(env.SHUTDOWN_GRACE_MS ?? 30_000), `${name}: ${service} is killed before its drain ends`);
    }
    if (service === "orchestrator") {
      const longest = Number(env.STAGE_READY_TIMEOUT_MS) + 3 * Number(env.STAGE_CALL_TIMEOUT_MS);
      assert.ok(grace * 1000 >= longest, `${name}: orchestrator grace ${grace}s < longest job ${longest / 1000}s`);
    }
  }
  // Stage ports are open to the orchestrator and nothing else.
  const policies = objs.filter((o) => o.kind === "NetworkPolicy") as (Obj & { spec: { podSelector: { matchLabels?: Record<string, string> }; ingress?: { from?: { podSelector?: { matchLabels: Record<string, string> } }[]; ports?: { port: number }[] }[] } })[];
  assert.ok(policies.some((p) => !p.spec.podSelector.matchLabels && !p.spec.ingress), `${name}: a default-deny ingress policy`);
  for (const stage of ["encoder", "reasoner", "decoder"] as const) {
    const pod = ws.find((w) => w.metadata.name === stage)!;
    const grpcPort = pod.spec.template.spec.containers[0]!.ports!.find((p) => p.name === "grpc")!.containerPort;
    const rules = policies.filter((p) => selects(p.spec.podSelector.matchLabels ?? {}, pod.spec.template.metadata.labels)).flatMap((p) => p.spec.ingress ?? []);
    const opening = rules.filter((r) => (r.ports ?? []).some((p) => p.port === grpcPort));
    assert.ok(opening.length > 0, `${name}: nothing may reach ${stage}'s gRPC port`);
    for (const r of opening) assert.deepEqual(r.from?.map((f) => f.podSelector?.matchLabels), [{ "app.kubernetes.io/name": "orchestrator" }], `${name}: ${stage}'s gRPC port is open beyond the orchestrator`);
  }
  assert.ok(kinds.has("Ingress"), `${name}: the gateway is exposed`);
}

describe("Kubernetes manifests", () => {
  const skip = missingTool("kubectl", ["version", "--client"]);

  for (const overlay of ["cpu", "gpu"]) {
    test(`overlay ${overlay} renders, validates and holds together`, { skip }, () => {
      const objs = render(join(K8S, "overlays", overlay));
      checkManifests(overlay, objs);
      const scaled = objs.filter((o) => o.kind === "ScaledObject") as (Obj & { spec: { minReplicaCount: number; triggers: { metadata: { query: string } }[] } })[];
      assert.deepEqual(scaled.map((s) => s.metadata.name).sort(), ["decoder", "encoder", "orchestrator", "reasoner"]);
      for (const s of scaled) {
        const queries = s.spec.triggers.map((t) => t.metadata.query).join(" ");
        if (s.metadata.name === "orchestrator") {
          assert.ok(s.spec.minReplicaCount >= 1, "the orchestrator never scales to zero: it exports the stages' demand");
          assert.match(queries, /emu_jobs_backlog/);
        } else {
          assert.equal(s.spec.minReplicaCount, 0, `${s.metadata.name} scales to zero`);
          assert.match(queries, new RegExp(`emu_stage_demand\\{[^}]*stage="${s.metadata.name}"`));
          assert.match(queries, new RegExp(`emu_stage_queue_delay_seconds_bucket\\{[^}]*stage="${s.metadata.name}"`));
        }
      }
      if (overlay === "gpu") {
        for (const w of workloads(objs).filter((x) => ["encoder", "reasoner", "decoder"].includes(x.metadata.name))) {
          const c = w.spec.template.spec.containers[0] as Container & { resources: { limits: Record<string, unknown> } };
          assert.equal(c.resources.limits["nvidia.com/gpu"], 1, `${w.metadata.name} asks for a GPU`);
          assert.match(c.image, /-cuda$/);
        }
      }
    });
  }

  test("the HPA fallback renders and validates (no KEDA objects)", { skip }, () => {
    const objs = renderHpaFallback();
    checkManifests("hpa", objs);
    assert.equal(objs.filter((o) => o.kind === "ScaledObject").length, 0);
    assert.deepEqual(objs.filter((o) => o.kind === "HorizontalPodAutoscaler").map((o) => o.metadata.name).sort(), ["decoder", "encoder", "gateway", "orchestrator", "reasoner"]);
  });

  test("the validators reject a broken manifest (the checks can fail)", () => {
    assert.throws(() => new Deployment({ metadata: { name: "x" }, spec: { template: { spec: { containers: [{ name: "c", ports: [{ containerPort: "grpc" }] }] } } } } as never).validate());
    assert.throws(() => new ScaledObject({ metadata: { name: "x" }, spec: { triggers: [{ metadata: {} }] } } as never).validate());
    const typo = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: { selector: { matchLabels: { a: "b" } }, template: { spec: { containers: [{ name: "c", image: "i", imagePullPolcy: "Always" }] } } } };
    assert.throws(() => typeCheckFields("typo", [typo]), /imagePullPolcy/);
    assert.throws(() => checkServiceEnv("example", { EMU_SERVICE: "reasoner", GRPC_PORT: "50052", ENCODER_MAX_BATCH_SIZE: "8" }), /does not know/);
    assert.throws(() => checkServiceEnv("example", { EMU_SERVICE: "orchestrator", STORAGE_BACKEND: "s3", REDIS_URL: "redis://r:6379" }), /S3_ENDPOINT/);
  });
});

describe("docker-compose.yml", () => {
  const skip = missingTool("docker-compose", ["version"]);

  for (const profile of [[], ["--profile", "gpu"]]) {
    test(`docker-compose ${profile.join(" ")} config accepts it; every service's environment matches its schema`, { skip }, () => {
      const cfg = parse(run("docker-compose", [...profile, "config"])) as { services: Record<string, { environment?: Record<string, string | null>; healthcheck?: unknown; depends_on?: Record<string, { condition: string }>; deploy?: unknown }> };
      const seen = new Set<string>();
      for (const [name, svc] of Object.entries(cfg.services)) {
        const env = Object.fromEntries(Object.entries(svc.environment ?? {}).map(([k, v]) => [k, v ?? ""]));
        if (!env.EMU_SERVICE) continue;
        // An empty value (API_KEYS= : auth off in development) is the same as unset.
        const set = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== ""));
        seen.add(checkServiceEnv(`compose ${name}`, set));
        assert.ok(svc.healthcheck, `compose ${name}: a health check`);
      }
      assert.deepEqual([...seen].sort(), ["decoder", "encoder", "gateway", "orchestrator", "reasoner"]);
      assert.equal(cfg.services.gateway?.depends_on?.redis?.condition, "service_healthy");
      assert.equal(cfg.services.gateway?.depends_on?.["minio-init"]?.condition, "service_completed_successfully");
      if (profile.length) assert.ok(cfg.services["reasoner-gpu"]?.deploy, "the gpu profile reserves a device");
    });
  }

  test("Redis keeps every job: noeviction and AOF every second", () => {
    const raw = parse(readFileSync(join(ROOT, "docker-compose.yml"), "utf8")) as { services: { redis: { command: string[] } } };
    const cmd = raw.services.redis.command.join(" ");
    assert.match(cmd, /--maxmemory-policy noeviction/);
    assert.match(cmd, /--appendonly yes --appendfsync everysec/);
  });
});

describe("Dockerfile", () => {
  const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8");
  const ignore = readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));

  test("copies only paths that exist and that .dockerignore lets through", () => {
    const allowed = ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/\*\*$/, ""));
    const copies = [...dockerfile.matchAll(/^COPY (?!--from)(.+)$/gm)].map((m) => m[1]!.trim().split(/\s+/).slice(0, -1)).flat();
    assert.ok(copies.length > 5);
    for (const src of copies) {
      assert.ok(existsSync(join(ROOT, src)), `COPY ${src}: no such path`);
      assert.ok(allowed.some((a) => src === a || src.startsWith(`${a}/`)), `COPY ${src}: excluded by .dockerignore`);
    }
  });

  test("runs unprivileged, with production dependencies, a health check and the serve entry", () => {
    assert.match(dockerfile, /npm ci --omit=dev/);
    const users = [...dockerfile.matchAll(/^USER (\S+)/gm)].map((m) => m[1]);
    assert.ok(users.length > 0 && !/^(0|root)(:|$)/.test(users.at(-1)!), "final USER is not root");
    assert.match(dockerfile, /^HEALTHCHECK .*\n?.*services\/serve\.ts", "healthcheck"/m);
    assert.ok(existsSync(join(ROOT, "services/serve.ts")));
    for (const s of SERVICES) assert.ok(s === "all-in-one" ? existsSync(join(ROOT, "services/all-in-one/main.ts")) : existsSync(join(ROOT, `services/${s}/main.ts`)), `services/${s}/main.ts`);
  });
});
