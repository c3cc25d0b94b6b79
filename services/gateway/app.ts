/**
 * The job API (DESIGN.md "The job API"): create / get / list / cancel jobs, SSE events, uploads,
 * signed local files, health, metrics and the OpenAPI document generated from the zod schemas.
 * The gateway never runs a model: it validates, stores the job document, and enqueues.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import express, { type NextFunction, type Request, type Response } from "express";
import busboy from "busboy";
import sharp from "sharp";
import { z } from "zod";
import { createJobSchema, JOB_STATUSES, jobSchema, type Job } from "../../shared/jobs/job-schema.ts";
import type { JobStore } from "../../shared/jobs/job-store.ts";
import { newJobDocument, newJobId } from "../../shared/jobs/new-job.ts";
import type { TypedQueue } from "../../shared/jobs/queue.adapter.ts";
import type { Logger } from "../../shared/logger.ts";
import type { RedisClient } from "../../shared/redis.adapter.ts";
import type { LocalStore } from "../../shared/storage/local-storage.adapter.ts";
import type { ObjectStore } from "../../shared/storage/object-store.ts";
import type { GatewayMetrics } from "./metrics.ts";

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly details?: unknown) {
    super(message);
  }
}

export interface GatewayOptions {
  store: JobStore;
  /** A separate connection for blocking event reads (SSE). */
  eventReader: () => RedisClient;
  redis: RedisClient;
  jobs: TypedQueue<"jobs">;
  objects: ObjectStore;
  /** Set when the local store serves /files. */
  localFiles?: LocalStore;
  publicBaseUrl: string;
  /** sha256 hex of each accepted API key; empty = auth off. */
  apiKeyHashes: string[];
  log: Logger;
  metrics: GatewayMetrics;
  /** Largest JSON body. Default 10 MiB (data-URI images count). */
  maxBodyBytes?: number;
  /** Largest upload. Default 20 MiB. */
  maxUploadBytes?: number;
  /** Largest upload in pixels. Default 40 MP. */
  maxUploadPixels?: number;
  /** Longest `Prefer: wait`. Default 60 s. */
  maxWaitS?: number;
  jobTtlS?: number;
  idempotencyTtlS?: number;
}

const sha256 = (s: string | Buffer): string => createHash("sha256").update(s).digest("hex");

/** Stable JSON for hashing request bodies (key order does not matter). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(",")}}`;
  return JSON.stringify(v);
}

const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  status: z.enum(JOB_STATUSES).optional(),
  cursor: z.string().regex(/^\d+$/).optional(),
}).strict();

export function openApiDocument(publicBaseUrl: string): object {
  const schema = (s: z.ZodType): object => z.toJSONSchema(s, { io: "input", unrepresentable: "any" }) as object;
  const error = { type: "object", properties: { error: { type: "object", properties: { code: { type: "string" }, message: { type: "string" }, details: {} }, required: ["code", "message"] } } };
  const jobRef = { $ref: "#/components/schemas/Job" };
  const errRef = { $ref: "#/components/schemas/Error" };
  const res = (description: string, s: object = jobRef) => ({ description, content: { "application/json": { schema: s } } });
  return {
    openapi: "3.1.0",
    info: { title: "emu-serve job API", version: "1.0.0", description: "Asynchronous any-to-any multimodal generation with an Emu2-style model." },
    servers: [{ url: publicBaseUrl }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { CreateJob: schema(createJobSchema), Job: schema(jobSchema), Error: error },
    },
    security: [{ bearer: [] }],
    paths: {
      "/v1/jobs": {
        post: {
          summary: "Create a job",
          parameters: [
            { name: "Idempotency-Key", in: "header", schema: { type: "string", maxLength: 255 } },
            { name: "Prefer", in: "header", schema: { type: "string", example: "wait=30" } },
          ],
          requestBody: { required: true, content: { "application/json": { schema: { $ref: "#/components/schemas/CreateJob" } } } },
          responses: { 200: res("Finished within the wait"), 202: res("Accepted"), 400: res("Invalid request", errRef), 401: res("Missing or bad API key", errRef), 422: res("Idempotency key reused with another body", errRef) },
        },
        get: {
          summary: "List jobs, newest first",
          parameters: [{ name: "limit", in: "query", schema: { type: "integer" } }, { name: "status", in: "query", schema: { type: "string" } }, { name: "cursor", in: "query", schema: { type: "string" } }],
          responses: { 200: res("A page of jobs", { type: "object", properties: { data: { type: "array", items: jobRef }, next_cursor: { type: ["string", "null"] } } }) },
        },
      },
      "/v1/jobs/{id}": { get: { summary: "Get a job", parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }], responses: { 200: res("The job"), 404: res("No such job", errRef) } } },
      "/v1/jobs/{id}/cancel": { post: { summary: "Cancel a job", parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }], responses: { 200: res("The job as it stands"), 404: res("No such job", errRef) } } },
      "/v1/jobs/{id}/events": { get: { summary: "Server-sent events: status, token, progress, output, done", parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }], responses: { 200: { description: "text/event-stream" } } } },
      "/v1/uploads": { post: { summary: "Upload an image (multipart field `file`)", responses: { 201: res("The upload", { type: "object", properties: { id: { type: "string" }, url: { type: "string" }, content_type: { type: "string" }, bytes: { type: "integer" }, sha256: { type: "string" } } }), 400: res("Not an image", errRef), 413: res("Too large", errRef) } } },
    },
  };
}

const DOCS_HTML = `<!doctype html><html><head><meta charset="utf-8"><title>emu-serve API</title>
<style>body{font:15px system-ui;margin:2rem auto;max-width:960px;padding:0 1rem}code,pre{background:#f4f4f4;padding:2px 4px}pre{padding:1rem;overflow:auto}h2{margin-top:2rem}</style></head>
<body><h1>emu-serve job API</h1><p>The machine-readable document is <a href="/openapi.json">/openapi.json</a>.</p><div id="paths">loading…</div>
<script>fetch('/openapi.json').then(r=>r.json()).then(d=>{const el=document.getElementById('paths');el.innerHTML='';for(const[p,ops]of Object.entries(d.paths))for(const[m,o]of Object.entries(ops)){const h=document.createElement('h2');h.textContent=m.toUpperCase()+' '+p;el.append(h);const s=document.createElement('p');s.textContent=o.summary;el.append(s);const c=document.createElement('pre');c.textContent=JSON.stringify(o.responses,null,1);el.append(c)}const h=document.createElement('h2');h.textContent='CreateJob schema';el.append(h);const c=document.createElement('pre');c.textContent=JSON.stringify(d.components.schemas.CreateJob,null,1);el.append(c)})</script></body></html>`;

export function createApp(o: GatewayOptions): express.Express {
  const app = express();
  app.disable("x-powered-by");
  const maxWait = o.maxWaitS ?? 60;

  const withPosition = async (job: Job): Promise<Job> => (job.status === "queued" ? { ...job, queue_position: await o.jobs.position(job.id) } : job);

  const auth = (req: Request, _res: Response, next: NextFunction): void => {
    if (o.apiKeyHashes.length === 0) return next();
    const m = /^Bearer (.+)$/.exec(req.get("authorization") ?? "");
    const got = m ? Buffer.from(sha256(m[1] as string)) : null;
    const ok = !!got && o.apiKeyHashes.some((h) => { const want = Buffer.from(h); return want.length === got.length && timingSafeEqual(want, got); });
    if (!ok) return next(new ApiError(401, "unauthorized", "send Authorization: Bearer <api key>"));
    next();
  };

  app.get("/healthz", (_req, res) => { res.json({ status: "ok" }); });
  app.get("/readyz", (_req, res, next) => {
    o.redis.ping().then(() => res.json({ status: "ready" }), () => next(new ApiError(503, "not_ready", "Redis is unreachable")));
  });
  app.get("/metrics", (_req, res, next) => {
    o.metrics.render().then((m) => { res.type(m.contentType).send(m.body); }, next);
  });
  app.get("/openapi.json", (_req, res) => { res.json(openApiDocument(o.publicBaseUrl)); });
  app.get("/docs", (_req, res) => { res.type("html").send(DOCS_HTML); });

  if (o.localFiles) {
    const files = o.localFiles;
    app.get(/^\/files\/(.+)$/, (req, res, next) => {
      const key = (req.params as unknown as Record<string, string>)[0] as string;
      const why = files.verify(key, req.query.expires as string | undefined, req.query.sig as string | undefined);
      if (why) return next(new ApiError(403, why === "expired" ? "url_expired" : "url_invalid", why === "expired" ? "this link has expired; GET the job again for a fresh one" : "this link's signature is not valid"));
      Promise.all([files.get(key), files.contentType(key)]).then(([data, type]) => {
        res.type(type).set("cache-control", "private, max-age=300").send(Buffer.from(data));
      }, () => next(new ApiError(404, "not_found", "no such file")));
    });
  }

  app.use("/v1", auth);

  app.post("/v1/uploads", (req, res, next) => {
    const max = o.maxUploadBytes ?? 20 << 20;
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, limits: { fileSize: max, files: 1 } });
    } catch {
      return next(new ApiError(400, "invalid_upload", "send multipart/form-data with the image in the field `file`"));
    }
    let handled = false;
    bb.on("file", (field, stream) => {
      if (field !== "file") { stream.resume(); return; }
      handled = true;
      const chunks: Buffer[] = [];
      let tooBig = false;
      stream.on("limit", () => { tooBig = true; });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        if (tooBig) return next(new ApiError(413, "upload_too_large", `uploads are at most ${max} bytes`));
        const data = Buffer.concat(chunks);
        sharp(data, { limitInputPixels: o.maxUploadPixels ?? 40_000_000 }).metadata().then(async (meta) => {
          const fmt = meta.format;
          if (!fmt || !["png", "jpeg", "webp", "gif"].includes(fmt)) throw new ApiError(400, "unsupported_image", "upload a PNG, JPEG, WebP or GIF image");
          const id = `u_${newJobId().slice(4)}`;
          const obj = await o.objects.put(`uploads/${id}`, data, `image/${fmt}`);
          res.status(201).json({ id, url: `upload://${id}`, content_type: obj.contentType, bytes: obj.bytes, sha256: obj.sha256, width: meta.width, height: meta.height });
        }).catch((err: unknown) => next(err instanceof ApiError ? err : new ApiError(400, "unsupported_image", `not a readable image (${(err as Error).message})`)));
      });
    });
    bb.on("close", () => { if (!handled) next(new ApiError(400, "invalid_upload", "the multipart body has no field `file`")); });
    bb.on("error", () => next(new ApiError(400, "invalid_upload", "the multipart body could not be read")));
    req.pipe(bb);
  });

  app.use("/v1/jobs", express.json({ limit: o.maxBodyBytes ?? 10 << 20 }));

  app.post("/v1/jobs", (req, res, next) => {
    (async () => {
      const parsed = createJobSchema.safeParse(req.body);
      if (!parsed.success) {
        const first = parsed.error.issues[0];
        throw new ApiError(400, "invalid_request", `${first?.path.join(".") || "body"}: ${first?.message}`, parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })));
      }
      const body = parsed.data;
      let id = newJobId();
      const idemKey = req.get("idempotency-key");
      if (idemKey !== undefined) {
        if (idemKey.length === 0 || idemKey.length > 255) throw new ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1–255 characters");
        const prev = await o.store.claimIdempotencyKey(sha256(`${req.get("authorization") ?? ""}\n${idemKey}`), sha256(canonical(req.body)), id, o.idempotencyTtlS ?? 24 * 3600);
        if (prev && !prev.sameBody) throw new ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with a different body; use a new key");
        if (prev) id = prev.jobId;
      }
      let job = await o.store.get(id);
      let created = false;
      if (!job) {
        job = newJobDocument(id, body, o.publicBaseUrl);
        await o.store.create(job, o.jobTtlS ?? 7 * 24 * 3600);
        await o.store.appendEvent(id, "status", { status: "queued" });
        await o.jobs.add({ jobId: id }, { jobId: id });
        o.metrics.jobsCreated.inc({ task: body.task });
        created = true;
      }
      const wait = /(?:^|,|;)\s*wait(?:=(\d+))?/.exec(req.get("prefer") ?? "");
      if (wait) {
        const seconds = Math.min(Number(wait[1] ?? maxWait), maxWait);
        const final = await waitForFinal(o, id, seconds * 1000);
        if (final) return void res.status(200).set("preference-applied", `wait=${seconds}`).json(final);
        job = (await o.store.get(id)) ?? job;
      }
      res.status(created ? 202 : 200).location(job.urls.get).json(await withPosition(job));
    })().catch(next);
  });

  app.get("/v1/jobs", (req, res, next) => {
    (async () => {
      const q = listQuery.safeParse(req.query);
      if (!q.success) throw new ApiError(400, "invalid_query", q.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
      const { limit, status, cursor } = q.data;
      const data: Job[] = [];
      let before = cursor ? Number(cursor) : undefined;
      // Filtering by status reads further pages until the page is full (bounded).
      for (let scans = 0; data.length < limit && scans < 20; scans++) {
        const page = await o.store.list(limit, before);
        if (page.length === 0) { before = undefined; break; }
        data.push(...page.filter((j) => !status || j.status === status).slice(0, limit - data.length));
        before = Date.parse(page[page.length - 1]!.created_at);
        if (page.length < limit) { before = undefined; break; }
      }
      res.json({ data, next_cursor: before !== undefined && data.length === limit ? String(before) : null });
    })().catch(next);
  });

  app.get("/v1/jobs/:id", (req, res, next) => {
    (async () => {
      const job = await o.store.get(req.params.id as string);
      if (!job) throw new ApiError(404, "job_not_found", `no job ${req.params.id} (jobs are kept 7 days)`);
      res.json(await withPosition(job));
    })().catch(next);
  });

  app.post("/v1/jobs/:id/cancel", (req, res, next) => {
    (async () => {
      const id = req.params.id as string;
      const job = await o.store.get(id);
      if (!job) throw new ApiError(404, "job_not_found", `no job ${id}`);
      if (["succeeded", "failed", "canceled"].includes(job.status)) return void res.json(job);
      await o.store.requestCancel(id);
      if (job.status === "queued" && (await o.jobs.remove(id))) {
        const canceled = await o.store.update(id, (j) => ({ ...j, status: "canceled", completed_at: new Date().toISOString(), queue_position: null }));
        await o.store.appendEvent(id, "status", { status: "canceled" });
        await o.store.appendEvent(id, "done", { status: "canceled", output: null, error: null });
        return void res.json(canceled);
      }
      res.json((await o.store.get(id)) ?? job);
    })().catch(next);
  });

  app.get("/v1/jobs/:id/events", (req, res, next) => {
    const id = req.params.id as string;
    o.store.get(id).then((job) => {
      if (!job) return next(new ApiError(404, "job_not_found", `no job ${id}`));
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
      const reader = o.eventReader();
      let closed = false;
      req.on("close", () => { closed = true; reader.disconnect(); });
      let last = (req.get("last-event-id") as string | undefined) ?? "0";
      const pump = async (): Promise<void> => {
        while (!closed) {
          const events = await o.store.readEvents(id, last, 15_000, reader).catch(() => null);
          if (closed) return;
          if (events === null) break;
          if (events.length === 0) { res.write(": keep-alive\n\n"); continue; }
          for (const e of events) {
            res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
            last = e.id;
            if (e.type === "done") { res.end(); closed = true; reader.disconnect(); return; }
          }
        }
        res.end();
      };
      void pump();
    }, next);
  });

  app.use((_req, _res, next) => next(new ApiError(404, "not_found", "no such route; see /docs")));

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof ApiError) return void res.status(err.status).json({ error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } });
    const e = err as { type?: string; status?: number };
    if (e.type === "entity.too.large") return void res.status(413).json({ error: { code: "body_too_large", message: `the request body is larger than ${o.maxBodyBytes ?? 10 << 20} bytes; upload images with POST /v1/uploads` } });
    if (e.type === "entity.parse.failed") return void res.status(400).json({ error: { code: "invalid_json", message: "the body is not valid JSON" } });
    o.log.error("unhandled error", { err });
    res.status(500).json({ error: { code: "internal_error", message: "something went wrong on our side" } });
  });
  return app;
}

async function waitForFinal(o: GatewayOptions, id: string, ms: number): Promise<Job | null> {
  const reader = o.eventReader();
  const until = Date.now() + ms;
  let last = "0";
  try {
    for (;;) {
      const job = await o.store.get(id);
      if (job && ["succeeded", "failed", "canceled"].includes(job.status)) return job;
      const left = until - Date.now();
      if (left <= 0) return null;
      const events = await o.store.readEvents(id, last, Math.min(left, 5000), reader);
      if (events.length) last = events[events.length - 1]!.id;
    }
  } finally {
    reader.disconnect();
  }
}
