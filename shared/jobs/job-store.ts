/**
 * Job state in Redis: one JSON document per job (written by the orchestrator, read by the gateway),
 * a time index for listing, an append-only event stream per job (what SSE replays and follows),
 * cancellation requests, and idempotency keys. Keys live under one prefix so tests can isolate.
 */
import type { RedisClient } from "../redis.adapter.ts";
import type { Job } from "./job-schema.ts";

export interface JobEvent {
  id: string;
  type: "status" | "token" | "progress" | "output" | "done";
  data: unknown;
}

export class JobConflictError extends Error {
  readonly code = "conflict";
}

export class JobStore {
  /** WATCH is per connection: updates through this store's connection run one at a time. */
  private updating: Promise<unknown> = Promise.resolve();

  constructor(private readonly redis: RedisClient, private readonly prefix = "emu") {}

  private key(...parts: string[]): string {
    return [this.prefix, ...parts].join(":");
  }

  async create(job: Job, ttlS: number): Promise<void> {
    const ok = await this.redis.set(this.key("job", job.id), JSON.stringify(job), "EX", ttlS, "NX");
    if (ok !== "OK") throw new JobConflictError(`job ${job.id} exists`);
    await this.redis.zadd(this.key("jobs"), Date.parse(job.created_at), job.id);
  }

  async get(id: string): Promise<Job | null> {
    const raw = await this.redis.get(this.key("job", id));
    return raw ? (JSON.parse(raw) as Job) : null;
  }

  /** Read-modify-write with optimistic locking; retries when another process wrote first. */
  update(id: string, mutate: (job: Job) => Job): Promise<Job> {
    const next = this.updating.then(() => this.updateNow(id, mutate));
    this.updating = next.catch(() => undefined);
    return next;
  }

  private async updateNow(id: string, mutate: (job: Job) => Job): Promise<Job> {
    const k = this.key("job", id);
    for (let attempt = 0; attempt < 10; attempt++) {
      await this.redis.watch(k);
      const raw = await this.redis.get(k);
      if (!raw) {
        await this.redis.unwatch();
        throw new Error(`job ${id} not found`);
      }
      const next = mutate(JSON.parse(raw) as Job);
      const ttl = await this.redis.ttl(k);
      const res = await this.redis.multi().set(k, JSON.stringify(next), "EX", Math.max(ttl, 60)).exec();
      if (res) return next;
    }
    throw new JobConflictError(`job ${id} kept changing under concurrent updates`);
  }

  /** Appends an event; streams keep the last `maxEvents` (tokens can be many). */
  async appendEvent(jobId: string, type: JobEvent["type"], data: unknown, maxEvents = 5000): Promise<string> {
    const k = this.key("job", jobId, "events");
    const id = await this.redis.xadd(k, "MAXLEN", "~", maxEvents, "*", "type", type, "data", JSON.stringify(data));
    await this.redis.expire(k, 7 * 24 * 3600);
    return id as string;
  }

  /** Events after `afterId` ("0" = from the start); waits up to `blockMs` for new ones when there are none. */
  async readEvents(jobId: string, afterId: string, blockMs: number, reader?: RedisClient): Promise<JobEvent[]> {
    const r = reader ?? this.redis;
    const k = this.key("job", jobId, "events");
    const res = blockMs > 0
      ? await r.xread("COUNT", 500, "BLOCK", blockMs, "STREAMS", k, afterId)
      : await r.xread("COUNT", 500, "STREAMS", k, afterId);
    if (!res) return [];
    const entries = (res[0]?.[1] ?? []) as [string, string[]][];
    return entries.map(([id, fields]) => {
      const f = Object.fromEntries(fields.reduce<[string, string][]>((acc, v, i) => (i % 2 ? acc : [...acc, [v, fields[i + 1] as string]]), []));
      return { id, type: f.type as JobEvent["type"], data: JSON.parse(f.data ?? "null") as unknown };
    });
  }

  /** Newest first; `before` is the created_at (ms) of the last job of the previous page. */
  async list(limit: number, before?: number): Promise<Job[]> {
    const ids = await this.redis.zrevrangebyscore(this.key("jobs"), before !== undefined ? `(${before}` : "+inf", "-inf", "LIMIT", 0, limit);
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(ids.map((id) => this.key("job", id)));
    const stale = ids.filter((_, i) => !raws[i]);
    if (stale.length) await this.redis.zrem(this.key("jobs"), ...stale);
    return raws.filter((r): r is string => !!r).map((r) => JSON.parse(r) as Job);
  }

  async requestCancel(id: string): Promise<void> {
    await this.redis.set(this.key("job", id, "cancel"), "1", "EX", 7 * 24 * 3600);
    await this.redis.publish(this.key("cancel"), id);
  }

  async isCancelRequested(id: string): Promise<boolean> {
    return (await this.redis.exists(this.key("job", id, "cancel"))) === 1;
  }

  /** Subscribes to cancel requests (a dedicated connection). Returns a function that unsubscribes. */
  async onCancel(subscriber: RedisClient, handler: (jobId: string) => void): Promise<() => Promise<void>> {
    const channel = this.key("cancel");
    const listener = (ch: string, msg: string): void => { if (ch === channel) handler(msg); };
    subscriber.on("message", listener);
    await subscriber.subscribe(channel);
    return async () => {
      subscriber.off("message", listener);
      await subscriber.unsubscribe(channel);
    };
  }

  /**
   * Claims an idempotency key for a request body. Returns the job id already bound to the key (and
   * whether the body matched), or null when this call claimed it for `jobId`.
   */
  async claimIdempotencyKey(keyHash: string, bodyHash: string, jobId: string, ttlS: number): Promise<{ jobId: string; sameBody: boolean } | null> {
    const k = this.key("idem", keyHash);
    const ok = await this.redis.set(k, JSON.stringify({ jobId, bodyHash }), "EX", ttlS, "NX");
    if (ok === "OK") return null;
    const raw = await this.redis.get(k);
    if (!raw) return this.claimIdempotencyKey(keyHash, bodyHash, jobId, ttlS);
    const prev = JSON.parse(raw) as { jobId: string; bodyHash: string };
    return { jobId: prev.jobId, sameBody: prev.bodyHash === bodyHash };
  }
}
