/** Builds and starts the gateway from the platform config (used by its main.ts and the all-in-one). */
import { createHash } from "node:crypto";
import type { Server } from "node:http";
import { JobStore } from "../../shared/jobs/job-store.ts";
import { TypedQueue } from "../../shared/jobs/queue.adapter.ts";
import type { Logger } from "../../shared/logger.ts";
import { publicBaseUrl, type PlatformConfig } from "../../shared/platform-config.ts";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { objectStoreFromConfig } from "../../shared/storage/from-config.ts";
import { createApp } from "./app.ts";
import { GatewayMetrics } from "./metrics.ts";

export interface RunningGateway {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export async function startGateway(cfg: PlatformConfig, log: Logger, signingKey: string): Promise<RunningGateway> {
  const redis = connectRedis(cfg.REDIS_URL, { name: "gateway" });
  const readers: RedisClient[] = [];
  const jobs = new TypedQueue("jobs", { connection: connectRedis(cfg.REDIS_URL, { name: "gateway-queue" }) });
  const base = publicBaseUrl(cfg);
  const { store: objects, local } = objectStoreFromConfig(cfg, base, signingKey);
  await objects.ensureReady();
  const authOff = cfg.API_KEYS.length === 0;
  const host = cfg.HOST ?? (authOff ? "127.0.0.1" : "0.0.0.0");
  if (authOff && host !== "127.0.0.1" && host !== "localhost" && host !== "::1") {
    throw new Error(`API_KEYS is unset (auth off): the gateway only binds to loopback, not HOST=${host}`);
  }
  const app = createApp({
    store: new JobStore(redis), redis, jobs, objects, localFiles: local ?? undefined, publicBaseUrl: base, log,
    eventReader: () => { const r = connectRedis(cfg.REDIS_URL, { name: "gateway-events" }); readers.push(r); return r; },
    apiKeyHashes: cfg.API_KEYS.map((k) => createHash("sha256").update(k).digest("hex")),
    metrics: new GatewayMetrics(() => jobs.backlog()),
  });
  const server: Server = app.listen(cfg.PORT, host);
  await new Promise<void>((resolve, reject) => { server.once("listening", resolve); server.once("error", reject); });
  const port = (server.address() as { port: number }).port;
  if (authOff) log.warn("API_KEYS is unset: authentication is off and the gateway listens on loopback only");
  return {
    url: base, port,
    stop: async () => {
      await new Promise((r) => server.close(r));
      server.closeAllConnections();
      await jobs.close();
      for (const r of readers) r.disconnect();
      redis.disconnect();
    },
  };
}
