/**
 * `npm start`: every service in one process for a laptop — the three gRPC stage servers on loopback,
 * the orchestrator and the gateway — with emu2-tiny and local storage. Uses Redis at REDIS_URL, or
 * starts a private redis-server under DATA_DIR when nothing listens there.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { loadConfig } from "../../shared/config.ts";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { createLogger } from "../../shared/logger.ts";
import { platformConfigSchema } from "../../shared/platform-config.ts";
import { connectRedis } from "../../shared/redis.adapter.ts";
import { platformSecrets } from "../../shared/secrets.ts";
import { startGateway } from "../gateway/gateway.ts";
import { startOrchestrator } from "../orchestrator/orchestrator.ts";
import { createStageServers } from "./stage-servers.ts";

async function redisUp(url: string): Promise<boolean> {
  const r = connectRedis(url, { name: "probe" });
  r.on("error", () => undefined);
  try {
    await Promise.race([r.ping(), new Promise((_, rej) => setTimeout(() => rej(new Error("timeout")), 1500))]);
    return true;
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

async function ensureRedis(url: string, dataDir: string): Promise<ChildProcess | null> {
  if (await redisUp(url)) return null;
  if (spawnSync("redis-server", ["--version"]).status !== 0) {
    throw new Error(`nothing answers at REDIS_URL=${url} and redis-server is not on PATH: start Redis (apt-get install redis-server, or docker run -p 6379:6379 redis:7) or set REDIS_URL`);
  }
  const u = new URL(url);
  const dir = resolve(dataDir, "redis");
  mkdirSync(dir, { recursive: true });
  const child = spawn("redis-server", ["--bind", u.hostname || "127.0.0.1", "--port", u.port || "6379", "--dir", dir, "--appendonly", "yes", "--save", ""], { stdio: "ignore" });
  for (let i = 0; i < 50; i++) {
    if (await redisUp(url)) return child;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error(`started redis-server for ${url} but it does not answer`);
}

async function main(): Promise<void> {
  const base = loadConfig(platformConfigSchema);
  const log = createLogger("emu-serve");
  const redisChild = await ensureRedis(base.REDIS_URL, base.DATA_DIR);
  if (redisChild) log.info("started a private redis-server", { url: base.REDIS_URL, dir: resolve(base.DATA_DIR, "redis") });
  const model = await EmuModel.load(base.EMU_MODEL_DIR, { verifyHashes: !base.SKIP_HASH_CHECK });
  const m = model.manifest;
  const servers = createStageServers(model);
  const [e, r, d] = await Promise.all(servers.map((s) => s.start()));
  const metricsExplicit = process.env.METRICS_PORT !== undefined;
  const cfg = { ...base, ENCODER_ADDR: `127.0.0.1:${e}`, REASONER_ADDR: `127.0.0.1:${r}`, DECODER_ADDR: `127.0.0.1:${d}`, METRICS_PORT: metricsExplicit ? base.METRICS_PORT : 0, SKIP_HASH_CHECK: true };
  const secrets = platformSecrets(cfg, log);
  const orch = await startOrchestrator(cfg, log, secrets);
  const gw = await startGateway(cfg, log, secrets.signingKey);
  const auth = cfg.API_KEYS.length ? ' -H "Authorization: Bearer $API_KEY"' : "";
  process.stdout.write([
    "",
    `emu-serve is up with ${m.name}@${m.version}: ${gw.url}  (docs: ${gw.url}/docs, metrics: :${orch.metricsPort}/metrics)`,
    "try:",
    `  curl -s${auth} -H "Content-Type: application/json" -H "Prefer: wait=30" ${gw.url}/v1/jobs \\`,
    `    -d '{"task": "generate", "input": ["a red circle at the top left"], "params": {"seed": 7}}'`,
    "",
  ].join("\n"));
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info("stopping");
    await gw.stop();
    await orch.stop();
    await Promise.all(servers.map((s) => s.stop(5000)));
    await model.close();
    redisChild?.kill("SIGTERM");
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(`emu-serve: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
