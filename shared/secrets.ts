/** Secrets the platform derives from its config: the webhook secret, and the key that signs local file URLs. */
import { createHash } from "node:crypto";
import { generateWebhookSecret } from "./jobs/webhook-signing.ts";
import type { Logger } from "./logger.ts";
import type { PlatformConfig } from "./platform-config.ts";

export function platformSecrets(cfg: PlatformConfig, log: Logger): { webhookSecret: string; signingKey: string } {
  let webhookSecret = cfg.WEBHOOK_SECRET;
  if (!webhookSecret) {
    webhookSecret = generateWebhookSecret();
    // Printed once so receivers can verify; set WEBHOOK_SECRET to keep it across restarts and processes.
    log.warn("WEBHOOK_SECRET is unset; generated one for this run", { webhook_secret: webhookSecret });
  }
  return { webhookSecret, signingKey: createHash("sha256").update(`emu-files:${webhookSecret}`).digest("hex") };
}
