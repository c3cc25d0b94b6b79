/** Orchestrator: config → stage clients, job store, queues → workers + metrics; SIGTERM drains running jobs. */
import { loadConfig } from "../../shared/config.ts";
import { createLogger } from "../../shared/logger.ts";
import { platformConfigSchema } from "../../shared/platform-config.ts";
import { platformSecrets } from "../../shared/secrets.ts";
import { startOrchestrator } from "./orchestrator.ts";

async function main(): Promise<void> {
  const cfg = loadConfig(platformConfigSchema);
  const log = createLogger("orchestrator");
  const orch = await startOrchestrator(cfg, log, platformSecrets(cfg, log));
  log.info("working", { concurrency: cfg.ORCHESTRATOR_CONCURRENCY, metrics_port: orch.metricsPort });
  const stop = (): void => void orch.stop().then(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`orchestrator: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
