/**
 * The only module that imports bullmq. Queues and workers typed by the catalog; permanent failures
 * surface as BullMQ's UnrecoverableError so no retries are wasted; backlog counts include the
 * prioritized and delayed sets (a list-length scaler on `wait` alone undercounts).
 */
import { Queue, UnrecoverableError, Worker, type Job as BullJob } from "bullmq";
import type { RedisClient } from "../redis.adapter.ts";
import { QUEUE_CATALOG, WEBHOOK_RETRY_DELAYS_MS, type Payload, type QueueName } from "./queue-catalog.ts";

export { UnrecoverableError };

export interface QueueOptions {
  connection: RedisClient;
  /** Key prefix (one per test). Default "bull". */
  prefix?: string;
}

export class TypedQueue<Q extends QueueName> {
  private readonly queue: Queue;

  constructor(readonly name: Q, opts: QueueOptions) {
    const def = QUEUE_CATALOG[name];
    this.queue = new Queue(def.name, { connection: opts.connection, prefix: opts.prefix, defaultJobOptions: def.options as never });
  }

  /** `priority` 1 (highest) …; `delayMs` holds the job back that long (BullMQ's delayed set). */
  async add(payload: Payload<Q>, opts: { jobId?: string; priority?: number; delayMs?: number } = {}): Promise<void> {
    QUEUE_CATALOG[this.name].payload.parse(payload);
    await this.queue.add(this.name, payload, { jobId: opts.jobId, priority: opts.priority, delay: opts.delayMs });
  }

  /**
   * Jobs not yet started: waiting + prioritized + delayed (a paused queue's jobs are left out — more
   * workers would not run them).
   */
  async backlog(): Promise<number> {
    const c = await this.queue.getJobCounts("waiting", "prioritized", "delayed");
    return (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0);
  }

  async counts(): Promise<Record<string, number>> {
    return this.queue.getJobCounts("waiting", "prioritized", "delayed", "active", "completed", "failed");
  }

  /** 1-based position of a waiting job (null when it is not waiting). */
  async position(jobId: string): Promise<number | null> {
    const waiting = await this.queue.getWaiting(0, 999);
    const i = waiting.findIndex((j) => j.id === jobId);
    return i < 0 ? null : waiting.length - i;
  }

  async remove(jobId: string): Promise<boolean> {
    const j = await this.queue.getJob(jobId);
    if (!j) return false;
    try {
      await j.remove();
      return true;
    } catch {
      return false; // active (locked by a worker): cancellation goes through the job store instead
    }
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

export interface WorkerContext {
  attempt: number;
  maxAttempts: number;
  signal: AbortSignal;
  /** Extends progress visible in BullMQ's UI. */
  progress(value: number): Promise<void>;
}

export interface TypedWorkerOptions extends QueueOptions {
  concurrency: number;
  /** How long a job may run without renewing its lock. Default 60000. */
  lockDurationMs?: number;
}

export class TypedWorker<Q extends QueueName> {
  private readonly worker: Worker;

  constructor(name: Q, handler: (payload: Payload<Q>, ctx: WorkerContext) => Promise<void>, opts: TypedWorkerOptions) {
    const def = QUEUE_CATALOG[name];
    this.worker = new Worker(def.name, async (job: BullJob, _token?: string, signal?: AbortSignal) => {
      const payload = def.payload.parse(job.data) as Payload<Q>;
      await handler(payload, {
        attempt: job.attemptsMade + 1, maxAttempts: job.opts.attempts ?? 1,
        signal: signal ?? new AbortController().signal,
        progress: (v) => job.updateProgress(v),
      });
    }, {
      connection: opts.connection, prefix: opts.prefix, concurrency: opts.concurrency, lockDuration: opts.lockDurationMs ?? 60_000,
      settings: { backoffStrategy: (attemptsMade: number) => WEBHOOK_RETRY_DELAYS_MS[Math.min(attemptsMade - 1, WEBHOOK_RETRY_DELAYS_MS.length - 1)] ?? 5_000 },
    });
  }

  on(event: "failed", cb: (jobId: string | undefined, err: Error, final: boolean) => void): void {
    this.worker.on("failed", (job, err) => cb(job?.id, err, !job || job.attemptsMade >= (job.opts.attempts ?? 1) || err instanceof UnrecoverableError));
  }

  /** Aborts the signal of a job this worker is running (false when it is not running here). */
  cancel(jobId: string): boolean {
    return this.worker.cancelJob(jobId, "canceled by request");
  }

  async waitUntilReady(): Promise<void> {
    await this.worker.waitUntilReady();
  }

  async close(): Promise<void> {
    await this.worker.close();
  }
}
