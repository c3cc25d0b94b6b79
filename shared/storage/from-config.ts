/** The object store the platform config asks for. */
import { join, resolve } from "node:path";
import type { PlatformConfig } from "../platform-config.ts";
import { LocalStore } from "./local-storage.adapter.ts";
import type { ObjectStore } from "./object-store.ts";
import { S3Store } from "./s3-storage.adapter.ts";

export function objectStoreFromConfig(cfg: PlatformConfig, gatewayBaseUrl: string, signingKey: string): { store: ObjectStore; local: LocalStore | null } {
  if (cfg.STORAGE_BACKEND === "s3") {
    const store = new S3Store({
      endpoint: cfg.S3_ENDPOINT as string, publicEndpoint: cfg.S3_PUBLIC_ENDPOINT, accessKey: cfg.S3_ACCESS_KEY as string,
      secretKey: cfg.S3_SECRET_KEY as string, bucket: cfg.S3_BUCKET, region: cfg.S3_REGION,
    });
    return { store, local: null };
  }
  const local = new LocalStore({ root: resolve(join(cfg.DATA_DIR, "objects")), publicBaseUrl: `${gatewayBaseUrl}/files`, signingKey });
  return { store: local, local };
}
