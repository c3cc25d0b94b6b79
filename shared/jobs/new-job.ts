/** A new job document as the gateway stores it before enqueueing. Ids sort by creation time. */
import { randomBytes } from "node:crypto";
import type { CreateJobRequest, Job } from "./job-schema.ts";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** `job_` + a ULID (48-bit time, 80 random bits, Crockford base32). */
export function newJobId(nowMs = Date.now()): string {
  let t = nowMs;
  let time = "";
  for (let i = 0; i < 10; i++) { time = CROCKFORD[t % 32] + time; t = Math.floor(t / 32); }
  const r = randomBytes(16);
  let rand = "";
  for (let i = 0; i < 16; i++) rand += CROCKFORD[(r[i] as number) % 32];
  return `job_${time}${rand}`;
}

export function newJobDocument(id: string, req: CreateJobRequest, publicBaseUrl: string, createdAt = new Date()): Job {
  const base = `${publicBaseUrl.replace(/\/$/, "")}/v1/jobs/${id}`;
  return {
    id, task: req.task, status: "queued", created_at: createdAt.toISOString(), started_at: null, completed_at: null,
    queue_position: null, progress: null, input: req.messages ?? req.input ?? [], params: req.params, output: null, error: null,
    metrics: {}, metadata: req.metadata,
    ...(req.webhook ? { webhook: req.webhook, webhook_events_filter: req.webhook_events_filter ?? ["started", "output", "completed"] } : {}),
    urls: { get: base, cancel: `${base}/cancel`, events: `${base}/events` },
  };
}
