/** The SSRF guard on real HTTP: private targets refused (also behind a redirect), the allow-list, size limit. */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { EgressError, isForbiddenAddress, safeFetch } from "../../shared/net/safe-fetch.ts";

describe("safe fetch", () => {
  let server: Server;
  let base = "";
  before(async () => {
    server = createServer((req, res) => {
      if (req.url === "/redirect") { res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data" }); res.end(); return; }
      if (req.url === "/big") { res.writeHead(200); res.end(Buffer.alloc(4096)); return; }
      res.writeHead(200, { "content-type": "image/png" });
      res.end("ok");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(() => server.close());

  it("classifies addresses", () => {
    for (const ip of ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1"]) assert.ok(isForbiddenAddress(ip), ip);
    for (const ip of ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]) assert.ok(!isForbiddenAddress(ip), ip);
  });

  it("refuses loopback, plain http and metadata targets unless allow-listed", async () => {
    await assert.rejects(safeFetch(`${base}/x.png`), (e: unknown) => e instanceof EgressError && e.code === "url_forbidden");
    await assert.rejects(safeFetch("https://127.0.0.1:1/x"), (e: unknown) => e instanceof EgressError && e.code === "url_forbidden" && /private or reserved/.test(e.message));
    await assert.rejects(safeFetch("https://169.254.169.254/latest"), (e: unknown) => e instanceof EgressError && e.code === "url_forbidden");
    const ok = await safeFetch(`${base}/x.png`, { allowHosts: ["127.0.0.1"] });
    assert.deepEqual([ok.status, ok.contentType, Buffer.from(ok.body).toString()], [200, "image/png", "ok"]);
  });

  it("re-checks redirects and limits body size", async () => {
    await assert.rejects(safeFetch(`${base}/redirect`, { allowHosts: ["127.0.0.1"] }), (e: unknown) => e instanceof EgressError && e.code === "url_forbidden");
    await assert.rejects(safeFetch(`${base}/big`, { allowHosts: ["127.0.0.1"], maxBytes: 1000 }), (e: unknown) => e instanceof EgressError && e.code === "url_too_large");
  });
});
