/**
 * Every BullMQ queue, its payload schema and default options, in one place. Handlers are typed
 * against this catalog so a queue without a handler fails `tsc`.
 */
import { z } from "zod";
import { WEBHOOK_EVENTS } from "./job-schema.ts";

/** Webhook retry schedule (ms after the failed attempt), as Replicate / Standard Webhooks practice. */
export const WEBHOOK_RETRY_DELAYS_MS = [5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000];

export const QUEUE_CATALOG = {
  jobs: {
    name: "emu-jobs",
    payload: z.object({ jobId: z.string() }),
    options: { attempts: 3, backoff: { type: "exponential", delay: 2_000 }, removeOnComplete: { age: 24 * 3600, count: 10_000 }, removeOnFail: { age: 7 * 24 * 3600 } },
  },
  webhooks: {
    name: "emu-webhooks",
    payload: z.object({
      jobId: z.string(),
      webhookId: z.string(),
      event: z.enum(WEBHOOK_EVENTS),
      url: z.string(),
      /** Unix seconds of the event. */
      timestamp: z.number().int(),
      /** The job object as it was when the event happened. */
      data: z.unknown(),
    }),
    options: { attempts: WEBHOOK_RETRY_DELAYS_MS.length + 1, backoff: { type: "webhook" }, removeOnComplete: { age: 24 * 3600 }, removeOnFail: { age: 7 * 24 * 3600 } },
  },
} as const;

export type QueueName = keyof typeof QUEUE_CATALOG;
export type Payload<Q extends QueueName> = z.infer<(typeof QUEUE_CATALOG)[Q]["payload"]>;
