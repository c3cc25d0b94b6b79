/**
 * Files on disk with HMAC-signed, expiring URLs that the gateway serves (`/files/<key>?expires=…&sig=…`):
 * the embedded default when no S3 is configured. Writes are atomic (temp file + rename).
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { checkKey, MAX_SIGNED_URL_TTL_S, StorageError, type ObjectStore, type StoredObject } from "./object-store.ts";

export interface LocalStoreOptions {
  /** Folder that holds the objects. */
  root: string;
  /** Base URL the gateway serves files under, e.g. http://127.0.0.1:8080/files */
  publicBaseUrl: string;
  /** HMAC key for URL signatures. */
  signingKey: string;
}

export class LocalStore implements ObjectStore {
  constructor(private readonly opts: LocalStoreOptions) {}

  async ensureReady(): Promise<void> {
    await mkdir(this.opts.root, { recursive: true });
  }

  async put(key: string, data: Uint8Array, contentType: string): Promise<StoredObject> {
    checkKey(key);
    const path = join(this.opts.root, key);
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
    await writeFile(tmp, data);
    await writeFile(`${tmp}.type`, contentType);
    await rename(`${tmp}.type`, `${path}.type`);
    await rename(tmp, path);
    return { key, bytes: data.byteLength, sha256: createHash("sha256").update(data).digest("hex"), contentType };
  }

  private signature(key: string, expires: number): string {
    return createHmac("sha256", this.opts.signingKey).update(`${key}\n${expires}`).digest("base64url");
  }

  async signedUrl(key: string, ttlS: number): Promise<{ url: string; expiresAt: Date }> {
    checkKey(key);
    const ttl = Math.min(Math.max(1, Math.floor(ttlS)), MAX_SIGNED_URL_TTL_S);
    const expires = Math.floor(Date.now() / 1000) + ttl;
    const url = `${this.opts.publicBaseUrl.replace(/\/$/, "")}/${key}?expires=${expires}&sig=${this.signature(key, expires)}`;
    return { url, expiresAt: new Date(expires * 1000) };
  }

  /** Checks a signed URL's parameters (constant-time); returns why it is refused, or null. */
  verify(key: string, expires: string | undefined, sig: string | undefined, nowS = Date.now() / 1000): "expired" | "bad_signature" | null {
    const exp = Number(expires);
    if (!sig || !Number.isInteger(exp)) return "bad_signature";
    const want = Buffer.from(this.signature(key, exp));
    const got = Buffer.from(sig);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return "bad_signature";
    return exp < nowS ? "expired" : null;
  }

  async get(key: string): Promise<Uint8Array> {
    checkKey(key);
    try {
      return await readFile(join(this.opts.root, key));
    } catch {
      throw new StorageError("object_not_found", `${key} does not exist`);
    }
  }

  async contentType(key: string): Promise<string> {
    checkKey(key);
    try {
      return (await readFile(join(this.opts.root, `${key}.type`), "utf8")).trim();
    } catch {
      return "application/octet-stream";
    }
  }
}
