/**
 * Handlers of the orchestrator's queues. `handleJob` runs one job's plan and keeps its state and
 * events in the job store; input errors fail the job at once (UnrecoverableError), stage or storage
 * outages are retried by BullMQ with backoff, and a cancel request aborts the running plan.
 * `handleWebhook` delivers one signed event, retried on non-2xx and timeouts.
 */
import type { Job } from "../../shared/jobs/job-schema.ts";
import type { JobStore } from "../../shared/jobs/job-store.ts";
import { UnrecoverableError, type TypedQueue, type WorkerContext } from "../../shared/jobs/queue.adapter.ts";
import type { Payload } from "../../shared/jobs/queue-catalog.ts";
import { signWebhook } from "../../shared/jobs/webhook-signing.ts";
import type { Logger } from "../../shared/logger.ts";
import { safeFetch } from "../../shared/net/safe-fetch.ts";
import type { Pipeline } from "./pipeline.ts";

/** Error codes that no retry can fix: the job fails at once with them. */
const PERMANENT = new Set([
  "invalid_prompt", "invalid_argument", "invalid_tensor", "invalid_decoder", "image_unreadable", "image_too_large", "prompt_too_long",
  "upload_not_found", "image_fetch_failed", "url_forbidden", "url_too_large", "url_bad_status", "invalid_key", "video_format_unavailable",
]);

export interface JobRunnerOptions {
  store: JobStore;
  pipeline: Pipeline;
  webhooks: TypedQueue<"webhooks">;
  log: Logger;
  /** Keep job documents this long. Default 7 days. */
  jobTtlS?: number;
}

function codeOf(err: unknown): string {
  const c = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof c === "string" ? c : "internal";
}

const now = (): string => new Date().toISOString();

export class JobRunner {
  /** Running jobs of this process, by id: a cancel request aborts the plan through these. */
  private readonly running = new Map<string, AbortController>();

  constructor(private readonly opts: JobRunnerOptions) {}

  /** Aborts a job running in this process (wired to the job store's cancel channel). */
  cancel(jobId: string): boolean {
    const ac = this.running.get(jobId);
    ac?.abort();
    return !!ac;
  }

  private async notify(job: Job, event: "started" | "output" | "completed"): Promise<void> {
    if (!job.webhook) return;
    const events = job.webhook_events_filter ?? ["started", "output", "completed"];
    if (!events.includes(event)) return;
    // One stable id per event: receivers deduplicate on webhook-id, and BullMQ on the job id.
    const webhookId = `msg_${job.id}_${event}`;
    await this.opts.webhooks.add({ jobId: job.id, webhookId, event, url: job.webhook, timestamp: Math.floor(Date.now() / 1000), data: job }, { jobId: webhookId });
  }

  private async finish(id: string, patch: Partial<Job>): Promise<Job> {
    const { store } = this.opts;
    const job = await store.update(id, (j) => ({ ...j, ...patch, completed_at: now(), queue_position: null, progress: null }));
    await store.appendEvent(id, "status", { status: job.status });
    await store.appendEvent(id, "done", { status: job.status, output: job.output, error: job.error });
    await this.notify(job, "completed");
    return job;
  }

  async handleJob(payload: Payload<"jobs">, ctx: WorkerContext): Promise<void> {
    const { store, pipeline, log } = this.opts;
    const id = payload.jobId;
    const current = await store.get(id);
    if (!current) { log.warn("job document missing; dropping", { jobId: id }); return; }
    if (["succeeded", "failed", "canceled"].includes(current.status)) return;
    if (await store.isCancelRequested(id)) {
      await this.finish(id, { status: "canceled" });
      return;
    }
    const startedAt = Date.now();
    const job = await store.update(id, (j) => ({
      ...j, status: "running", started_at: j.started_at ?? new Date(startedAt).toISOString(), queue_position: null,
      metrics: { ...j.metrics, queue_ms: j.metrics.queue_ms ?? startedAt - Date.parse(j.created_at) },
    }));
    await store.appendEvent(id, "status", { status: "running", attempt: ctx.attempt });
    if (ctx.attempt === 1) await this.notify(job, "started");
    const input = job.input as unknown[];
    const isMessages = input.length > 0 && typeof input[0] === "object" && input[0] !== null && "role" in (input[0] as object);
    const request = { task: job.task, params: job.params, ...(isMessages ? { messages: input } : { input }) } as Parameters<Pipeline["run"]>[1];
    let lastProgressWrite = 0;
    const ac = new AbortController();
    ctx.signal.addEventListener("abort", () => ac.abort(), { once: true });
    this.running.set(id, ac);
    // A cancel that arrived between the check above and registering is caught here.
    if (await store.isCancelRequested(id)) ac.abort();
    try {
      const result = await pipeline.run(id, request, ac.signal, {
        status: (stage) => void store.appendEvent(id, "status", { status: "running", stage }),
        token: (text) => void store.appendEvent(id, "token", { text }),
        progress: (stage, step, total) => {
          void store.appendEvent(id, "progress", { stage, step, total });
          if (Date.now() - lastProgressWrite > 250 || step === total) {
            lastProgressWrite = Date.now();
            void store.update(id, (j) => ({ ...j, progress: { stage, step, total } })).catch(() => undefined);
          }
        },
      });
      const output = {
        ...(result.output.text !== undefined ? { text: result.output.text } : {}),
        ...(result.output.images ? { images: result.output.images.map(({ key: _k, ...m }) => m) } : {}),
        ...(result.output.video ? { video: (({ key: _k, ...m }) => m)(result.output.video) } : {}),
      };
      await store.appendEvent(id, "output", output);
      const done = await this.finish(id, { status: "succeeded", output, error: null, metrics: { ...job.metrics, ...result.metrics } });
      await this.notify(done, "output");
    } catch (err) {
      const code = codeOf(err);
      if (code === "canceled" || (ac.signal.aborted && (await store.isCancelRequested(id)))) {
        await this.finish(id, { status: "canceled", error: null });
        return;
      }
      const message = err instanceof Error ? err.message : String(err);
      if (PERMANENT.has(code)) {
        await this.finish(id, { status: "failed", error: { code, message } });
        throw new UnrecoverableError(`${code}: ${message}`);
      }
      log.warn("job attempt failed", { jobId: id, attempt: ctx.attempt, code, err });
      if (ctx.attempt >= ctx.maxAttempts) {
        await this.finish(id, { status: "failed", error: { code: code === "internal" ? "internal_error" : code, message: code === "internal" ? "the job failed; see the service logs" : message } });
      } else {
        await store.update(id, (j) => ({ ...j, status: "queued", progress: null }));
        await store.appendEvent(id, "status", { status: "queued", retrying: true, code });
      }
      throw err;
    } finally {
      this.running.delete(id);
    }
  }
}

export interface WebhookSenderOptions {
  secret: string;
  egressAllowHosts?: string[];
  /** Per-delivery timeout. Default 10000. */
  timeoutMs?: number;
  log: Logger;
}

/** Delivers one webhook event (Standard Webhooks headers); throws on non-2xx so BullMQ retries. */
export async function handleWebhook(p: Payload<"webhooks">, ctx: WorkerContext, opts: WebhookSenderOptions): Promise<void> {
  const type = `job.${p.event}`;
  const body = JSON.stringify({ type, timestamp: new Date(p.timestamp * 1000).toISOString(), data: p.data });
  const res = await safeFetch(p.url, {
    method: "POST", body, allowHosts: opts.egressAllowHosts, timeoutMs: opts.timeoutMs ?? 10_000, maxBytes: 64 * 1024, signal: ctx.signal,
    headers: {
      "content-type": "application/json", "user-agent": "emu-serve-webhooks/1",
      "webhook-id": p.webhookId, "webhook-timestamp": String(p.timestamp), "webhook-signature": signWebhook(opts.secret, p.webhookId, p.timestamp, body),
    },
  }).catch((err: unknown) => {
    if (codeOf(err) === "url_forbidden") throw new UnrecoverableError(`webhook ${p.url}: ${(err as Error).message}`);
    throw err;
  });
  if (res.status < 200 || res.status >= 300) {
    opts.log.warn("webhook delivery failed", { jobId: p.jobId, event: p.event, status: res.status, attempt: ctx.attempt });
    throw new Error(`webhook ${p.url} answered ${res.status}`);
  }
}
