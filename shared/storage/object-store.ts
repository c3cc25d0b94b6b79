/**
 * Where generated media goes: an object store with private objects and expiring signed GET URLs.
 * Adapters: `s3` (MinIO / AWS S3 / any S3-compatible endpoint) and `local` (files on disk with
 * HMAC-signed URLs the gateway serves) — the embedded default on a laptop.
 */
export interface StoredObject {
  key: string;
  bytes: number;
  sha256: string;
  contentType: string;
}

export interface ObjectStore {
  /** Creates the bucket / folder if missing (private). */
  ensureReady(): Promise<void>;
  put(key: string, data: Uint8Array, contentType: string): Promise<StoredObject>;
  /** An absolute URL clients can GET until `expiresAt`. */
  signedUrl(key: string, ttlS: number): Promise<{ url: string; expiresAt: Date }>;
  get(key: string): Promise<Uint8Array>;
}

/** Signed URLs live at most 7 days (S3's SigV4 limit). */
export const MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600;

export class StorageError extends Error {
  constructor(readonly code: "storage_unavailable" | "object_not_found" | "invalid_key", message: string) {
    super(message);
  }
}

export function checkKey(key: string): void {
  if (!/^[A-Za-z0-9._\-/]+$/.test(key) || key.includes("..") || key.startsWith("/")) {
    throw new StorageError("invalid_key", `object key ${JSON.stringify(key)} has characters outside [A-Za-z0-9._-/]`);
  }
}
