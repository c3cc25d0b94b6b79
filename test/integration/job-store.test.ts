/** The Redis job store against the real Redis at REDIS_URL (default 127.0.0.1:6379), isolated by prefix. */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { JobStore } from "../../shared/jobs/job-store.ts";
import type { Job } from "../../shared/jobs/job-schema.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

function job(id: string, createdAt: string): Job {
  return {
    id, task: "complete", status: "queued", created_at: createdAt, started_at: null, completed_at: null, queue_position: 1,
    progress: null, input: ["a"], params: {}, output: null, error: null, metrics: {},
    urls: { get: `/v1/jobs/${id}`, cancel: `/v1/jobs/${id}/cancel`, events: `/v1/jobs/${id}/events` },
  };
}

describe("job store (real Redis)", () => {
  const prefix = `test-${randomUUID()}`;
  let redis: RedisClient;
  let reader: RedisClient;
  let sub: RedisClient;
  let store: JobStore;

  before(() => {
    redis = connectRedis(REDIS_URL);
    reader = connectRedis(REDIS_URL);
    sub = connectRedis(REDIS_URL);
    store = new JobStore(redis, prefix);
  });
  after(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    await Promise.all([redis.quit(), reader.quit(), sub.quit()]);
  });

  it("creates, reads, updates under concurrency, and lists newest first with paging", async () => {
    await store.create(job("job_a", "2026-01-01T00:00:00.000Z"), 3600);
    await store.create(job("job_b", "2026-01-01T00:00:01.000Z"), 3600);
    await store.create(job("job_c", "2026-01-01T00:00:02.000Z"), 3600);
    await assert.rejects(store.create(job("job_a", "2026-01-01T00:00:00.000Z"), 3600), /exists/);
    await Promise.all(Array.from({ length: 10 }, () => store.update("job_a", (j) => ({ ...j, metrics: { n: (j.metrics.n ?? 0) + 1 } }))));
    assert.equal((await store.get("job_a"))!.metrics.n, 10);
    assert.equal(await store.get("job_zzz"), null);
    const page1 = await store.list(2);
    assert.deepEqual(page1.map((j) => j.id), ["job_c", "job_b"]);
    const page2 = await store.list(2, Date.parse(page1[1]!.created_at));
    assert.deepEqual(page2.map((j) => j.id), ["job_a"]);
  });

  it("appends events that readers replay from any point and follow while blocked", async () => {
    const first = await store.appendEvent("job_e", "status", { status: "running" });
    await store.appendEvent("job_e", "token", { text: "red" });
    const all = await store.readEvents("job_e", "0", 0);
    assert.deepEqual(all.map((e) => e.type), ["status", "token"]);
    const after = await store.readEvents("job_e", first, 0);
    assert.deepEqual(after.map((e) => e.data), [{ text: "red" }]);
    const waiting = store.readEvents("job_e", all[1]!.id, 2000, reader);
    await new Promise((r) => setTimeout(r, 50));
    await store.appendEvent("job_e", "done", { status: "succeeded" });
    assert.deepEqual((await waiting).map((e) => e.type), ["done"]);
  });

  it("delivers cancel requests and binds idempotency keys to one body", async () => {
    const got: string[] = [];
    const off = await store.onCancel(sub, (id) => got.push(id));
    await store.requestCancel("job_x");
    for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got, ["job_x"]);
    assert.equal(await store.isCancelRequested("job_x"), true);
    assert.equal(await store.isCancelRequested("job_y"), false);
    await off();
    assert.equal(await store.claimIdempotencyKey("k1", "body1", "job_1", 60), null);
    assert.deepEqual(await store.claimIdempotencyKey("k1", "body1", "job_2", 60), { jobId: "job_1", sameBody: true });
    assert.deepEqual(await store.claimIdempotencyKey("k1", "body2", "job_3", 60), { jobId: "job_1", sameBody: false });
  });
});
