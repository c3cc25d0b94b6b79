/**
 * Outbound HTTP for user-supplied URLs (input images, webhooks) with an SSRF guard: the host is
 * resolved and every address checked at connect time (private, loopback, link-local, CGNAT,
 * multicast and cloud-metadata ranges refused), redirects are followed by hand and re-checked, and
 * bodies are size-limited. Hosts on an explicit allow-list (tests, trusted internal services) pass.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";

export class EgressError extends Error {
  constructor(readonly code: "url_forbidden" | "url_unreachable" | "url_too_large" | "url_bad_status", message: string) {
    super(message);
  }
}

export interface SafeFetchOptions {
  /** Host names or IPs allowed even when they resolve to private addresses. */
  allowHosts?: string[];
  /** Largest response body. Default 20 MiB. */
  maxBytes?: number;
  /** Whole-request timeout. Default 15000 ms. */
  timeoutMs?: number;
  /** Redirects followed (each re-checked). Default 3. */
  maxRedirects?: number;
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}

function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
}

const V4_BLOCKED: [string, number][] = [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24], ["203.0.113.0", 24],
  ["224.0.0.0", 4], ["240.0.0.0", 4],
];

/** True when an address must not be reached from user-supplied URLs. */
export function isForbiddenAddress(ip: string): boolean {
  if (isIP(ip) === 4) {
    const n = ipv4ToInt(ip);
    return V4_BLOCKED.some(([base, bits]) => (n >>> (32 - bits)) === (ipv4ToInt(base) >>> (32 - bits)));
  }
  const v6 = ip.toLowerCase();
  if (v6 === "::" || v6 === "::1") return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6);
  if (mapped) return isForbiddenAddress(mapped[1] as string);
  return /^(fc|fd|fe8|fe9|fea|feb|ff)/.test(v6) || v6.startsWith("64:ff9b:") || v6.startsWith("2001:db8:");
}

async function checkHost(host: string, allow: Set<string>): Promise<void> {
  const bare = host.replace(/^\[|\]$/g, "");
  if (allow.has(bare)) return;
  let addrs: { address: string }[];
  try {
    addrs = isIP(bare) ? [{ address: bare }] : await lookup(bare, { all: true });
  } catch {
    throw new EgressError("url_unreachable", `cannot resolve ${bare}`);
  }
  const bad = addrs.find((a) => isForbiddenAddress(a.address));
  if (bad) throw new EgressError("url_forbidden", `${bare} resolves to ${bad.address}, a private or reserved address; URLs must point to the public internet`);
}

/**
 * The connect-time check: a custom lookup makes the socket connect only to checked addresses, so a
 * DNS answer that changes between the check and the connection (rebinding) cannot slip through.
 */
function guardedAgent(allow: Set<string>): Agent {
  return new Agent({
    connect: {
      lookup: (hostname, options, cb) => {
        lookup(hostname, { all: true })
          .then((addrs) => {
            const ok = allow.has(hostname) ? addrs : addrs.filter((a) => !isForbiddenAddress(a.address));
            if (ok.length === 0) { cb(new EgressError("url_forbidden", `${hostname} resolves only to private or reserved addresses`), "", 4); return; }
            const first = ok[0]!;
            if ((options as { all?: boolean }).all) (cb as unknown as (e: null, a: typeof ok) => void)(null, ok);
            else cb(null, first.address, first.family);
          })
          .catch((err: Error) => cb(err, "", 4));
      },
    },
  });
}

export async function safeFetch(url: string, opts: SafeFetchOptions = {}): Promise<{ status: number; contentType: string; body: Uint8Array }> {
  const allow = new Set(opts.allowHosts ?? []);
  const maxBytes = opts.maxBytes ?? 20 << 20;
  const signal = AbortSignal.any([AbortSignal.timeout(opts.timeoutMs ?? 15_000), ...(opts.signal ? [opts.signal] : [])]);
  const dispatcher = guardedAgent(allow);
  let current = url;
  try {
    for (let hop = 0; ; hop++) {
      let u: URL;
      try {
        u = new URL(current);
      } catch {
        throw new EgressError("url_forbidden", `${current} is not a valid URL`);
      }
      if (u.protocol !== "https:" && !(u.protocol === "http:" && allow.has(u.hostname.replace(/^\[|\]$/g, "")))) {
        throw new EgressError("url_forbidden", `${u.protocol}// URLs are not fetched; use https`);
      }
      await checkHost(u.hostname, allow);
      let res: Awaited<ReturnType<typeof undiciFetch>>;
      try {
        res = await undiciFetch(u, { method: opts.method ?? "GET", headers: opts.headers, body: opts.body, redirect: "manual", signal, dispatcher });
      } catch (err) {
        if (err instanceof EgressError) throw err;
        const cause = (err as { cause?: unknown }).cause;
        if (cause instanceof EgressError) throw cause;
        throw new EgressError("url_unreachable", `${u.host}: ${(err as Error).message}`);
      }
      if (res.status >= 300 && res.status < 400 && res.headers.get("location")) {
        if (hop >= (opts.maxRedirects ?? 3)) throw new EgressError("url_unreachable", `too many redirects from ${url}`);
        current = new URL(res.headers.get("location") as string, u).toString();
        continue;
      }
      const chunks: Uint8Array[] = [];
      let total = 0;
      if (res.body) {
        for await (const chunk of res.body) {
          total += chunk.byteLength;
          if (total > maxBytes) throw new EgressError("url_too_large", `${url} is larger than ${maxBytes} bytes`);
          chunks.push(chunk);
        }
      }
      const body = new Uint8Array(total);
      let o = 0;
      for (const c of chunks) { body.set(c, o); o += c.byteLength; }
      return { status: res.status, contentType: res.headers.get("content-type") ?? "", body };
    }
  } finally {
    void dispatcher.close();
  }
}
