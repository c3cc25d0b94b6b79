/** The only module that imports `minio`: S3-compatible storage with presigned GETs for clients. */
import { createHash } from "node:crypto";
import { Client } from "minio";
import { checkKey, MAX_SIGNED_URL_TTL_S, StorageError, type ObjectStore, type StoredObject } from "./object-store.ts";

export interface S3StoreOptions {
  /** Where this service reaches S3, e.g. http://minio:9000. */
  endpoint: string;
  /** Where clients reach it (signed URLs are signed for this host). Default: `endpoint`. */
  publicEndpoint?: string;
  accessKey: string;
  secretKey: string;
  bucket: string;
  /** Default us-east-1 (set explicitly so presigning needs no network call). */
  region?: string;
}

function client(endpoint: string, o: S3StoreOptions): Client {
  const u = new URL(endpoint);
  return new Client({
    endPoint: u.hostname, port: u.port ? Number(u.port) : u.protocol === "https:" ? 443 : 80, useSSL: u.protocol === "https:",
    accessKey: o.accessKey, secretKey: o.secretKey, region: o.region ?? "us-east-1", pathStyle: true,
  });
}

export class S3Store implements ObjectStore {
  private readonly internal: Client;
  private readonly signer: Client;

  constructor(private readonly opts: S3StoreOptions) {
    this.internal = client(opts.endpoint, opts);
    this.signer = client(opts.publicEndpoint ?? opts.endpoint, opts);
  }

  async ensureReady(): Promise<void> {
    try {
      if (!(await this.internal.bucketExists(this.opts.bucket))) await this.internal.makeBucket(this.opts.bucket, this.opts.region ?? "us-east-1");
    } catch (err) {
      throw new StorageError("storage_unavailable", `S3 at ${this.opts.endpoint} (bucket ${this.opts.bucket}): ${(err as Error).message}`);
    }
  }

  async put(key: string, data: Uint8Array, contentType: string): Promise<StoredObject> {
    checkKey(key);
    const sha256 = createHash("sha256").update(data).digest("hex");
    try {
      await this.internal.putObject(this.opts.bucket, key, Buffer.from(data.buffer, data.byteOffset, data.byteLength), data.byteLength, {
        "Content-Type": contentType, "x-amz-meta-sha256": sha256,
      });
    } catch (err) {
      throw new StorageError("storage_unavailable", `could not store ${key}: ${(err as Error).message}`);
    }
    return { key, bytes: data.byteLength, sha256, contentType };
  }

  async signedUrl(key: string, ttlS: number): Promise<{ url: string; expiresAt: Date }> {
    checkKey(key);
    const ttl = Math.min(Math.max(1, Math.floor(ttlS)), MAX_SIGNED_URL_TTL_S);
    const url = await this.signer.presignedGetObject(this.opts.bucket, key, ttl);
    return { url, expiresAt: new Date(Date.now() + ttl * 1000) };
  }

  async get(key: string): Promise<Uint8Array> {
    checkKey(key);
    try {
      const stream = await this.internal.getObject(this.opts.bucket, key);
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new StorageError(code === "NoSuchKey" ? "object_not_found" : "storage_unavailable", `${key}: ${(err as Error).message}`);
    }
  }
}
