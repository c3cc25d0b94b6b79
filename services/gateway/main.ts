/** Gateway: config → job store, queue, object store → HTTP server; SIGTERM stops accepting and closes. */
import { loadConfig } from "../../shared/config.ts";
import { createLogger } from "../../shared/logger.ts";
import { platformConfigSchema } from "../../shared/platform-config.ts";
import { platformSecrets } from "../../shared/secrets.ts";
import { startGateway } from "./gateway.ts";

async function main(): Promise<void> {
  const cfg = loadConfig(platformConfigSchema);
  const log = createLogger("gateway");
  const gw = await startGateway(cfg, log, platformSecrets(cfg, log).signingKey);
  log.info("listening", { port: gw.port, url: gw.url });
  const stop = (): void => void gw.stop().then(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`gateway: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
