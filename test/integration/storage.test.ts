/**
 * Both object stores: put → signed URL → GET over real HTTP. The S3 adapter runs against a real s3rver
 * process (which does not enforce signatures, so this proves the protocol path and the URL shape, not
 * signed-URL security); the local store's signatures and expiry are checked directly.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalStore } from "../../shared/storage/local-storage.adapter.ts";
import { S3Store } from "../../shared/storage/s3-storage.adapter.ts";
import { StorageError } from "../../shared/storage/object-store.ts";
import { startS3rver, type S3rverHandle } from "../support/s3rver-process.ts";

const payload = new Uint8Array(Buffer.from("png bytes \u0000\u0001 of a red circle"));
const sha = createHash("sha256").update(payload).digest("hex");

describe("S3 object store (s3rver process)", () => {
  let s3: S3rverHandle;
  before(async () => { s3 = await startS3rver(); });
  after(async () => { await s3.stop(); });

  it("creates the bucket, stores with sha256 and content type, and signs for the public endpoint", async () => {
    const store = new S3Store({ endpoint: s3.endpoint, publicEndpoint: s3.endpoint.replace("127.0.0.1", "localhost"), accessKey: "S3RVER", secretKey: "S3RVER", bucket: "emu-test" });
    await store.ensureReady();
    await store.ensureReady();
    const obj = await store.put("outputs/job_1/0.png", payload, "image/png");
    assert.deepEqual(obj, { key: "outputs/job_1/0.png", bytes: payload.byteLength, sha256: sha, contentType: "image/png" });
    const { url, expiresAt } = await store.signedUrl("outputs/job_1/0.png", 600);
    assert.match(url, /^http:\/\/localhost:\d+\/emu-test\/outputs\/job_1\/0\.png\?.*X-Amz-Signature=/);
    assert.ok(expiresAt.getTime() > Date.now() + 590_000);
    const res = await fetch(url.replace("localhost", "127.0.0.1"));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "image/png");
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), payload);
    assert.deepEqual(await store.get("outputs/job_1/0.png"), Buffer.from(payload));
    await assert.rejects(store.get("outputs/nope.png"), (e: unknown) => e instanceof StorageError && e.code === "object_not_found");
    await assert.rejects(store.put("../escape", payload, "image/png"), (e: unknown) => e instanceof StorageError && e.code === "invalid_key");
  });

  it("reports an unreachable endpoint as storage_unavailable", async () => {
    const store = new S3Store({ endpoint: "http://127.0.0.1:1", accessKey: "a", secretKey: "b", bucket: "x" });
    await assert.rejects(store.ensureReady(), (e: unknown) => e instanceof StorageError && e.code === "storage_unavailable");
  });
});

describe("local object store", () => {
  const root = mkdtempSync(join(tmpdir(), "emu-local-"));
  const store = new LocalStore({ root, publicBaseUrl: "http://127.0.0.1:8080/files/", signingKey: "k1" });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("stores atomically and signs expiring URLs that only its key verifies", async () => {
    await store.ensureReady();
    const obj = await store.put("outputs/job_2/0.webp", payload, "image/webp");
    assert.equal(obj.sha256, sha);
    assert.deepEqual(await store.get("outputs/job_2/0.webp"), Buffer.from(payload));
    assert.equal(await store.contentType("outputs/job_2/0.webp"), "image/webp");
    const { url } = await store.signedUrl("outputs/job_2/0.webp", 60);
    const u = new URL(url);
    assert.equal(u.pathname, "/files/outputs/job_2/0.webp");
    const exp = u.searchParams.get("expires") ?? undefined;
    const sig = u.searchParams.get("sig") ?? undefined;
    assert.equal(store.verify("outputs/job_2/0.webp", exp, sig), null);
    assert.equal(store.verify("outputs/job_2/1.webp", exp, sig), "bad_signature");
    assert.equal(store.verify("outputs/job_2/0.webp", String(Number(exp) + 1), sig), "bad_signature");
    assert.equal(store.verify("outputs/job_2/0.webp", exp, sig, Number(exp) + 1), "expired");
    const other = new LocalStore({ root, publicBaseUrl: "http://x/files", signingKey: "k2" });
    assert.equal(other.verify("outputs/job_2/0.webp", exp, sig), "bad_signature");
  });
});
