/**
 * Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`
 * where the key is the base64 part of a `whsec_…` secret.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(24).toString("base64")}`;
}

function keyOf(secret: string): Buffer {
  if (!secret.startsWith("whsec_")) throw new Error("WEBHOOK_SECRET must start with whsec_");
  return Buffer.from(secret.slice("whsec_".length), "base64");
}

export function signWebhook(secret: string, id: string, timestamp: number, body: string): string {
  return `v1,${createHmac("sha256", keyOf(secret)).update(`${id}.${timestamp}.${body}`).digest("base64")}`;
}

/** Checks any of the space-separated signatures and that the timestamp is within `toleranceS`. */
export function verifyWebhook(secret: string, headers: { id: string; timestamp: string; signature: string }, body: string, toleranceS = 300, nowS = Date.now() / 1000): boolean {
  const ts = Number(headers.timestamp);
  if (!Number.isInteger(ts) || Math.abs(nowS - ts) > toleranceS) return false;
  const want = Buffer.from(signWebhook(secret, headers.id, ts, body));
  return headers.signature.split(" ").some((s) => {
    const got = Buffer.from(s);
    return got.length === want.length && timingSafeEqual(got, want);
  });
}
