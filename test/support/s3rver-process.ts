/**
 * Starts s3rver (an S3-compatible server) as a real child process on a free loopback port for tests.
 * s3rver does not check signatures: tests against it prove the S3 protocol path, not URL security.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

export interface S3rverHandle {
  endpoint: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export async function startS3rver(): Promise<S3rverHandle> {
  const dir = mkdtempSync(join(tmpdir(), "s3rver-"));
  const port = await freePort();
  const bin = createRequire(import.meta.url).resolve("s3rver/bin/s3rver.js");
  const child: ChildProcess = spawn(process.execPath, [bin, "--address", "127.0.0.1", "--port", String(port), "--directory", dir, "--silent"], { stdio: ["ignore", "pipe", "pipe"] });
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await fetch(endpoint);
      break;
    } catch {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error("s3rver did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    endpoint,
    stop: async () => {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
