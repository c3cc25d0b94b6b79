/**
 * The job plan: resolve input images → build the Emu2 sequence → encode → reason → (decode → encode
 * media → store) → output, with per-stage timings, progress and events, and cancellation threaded
 * through every call. Transport-free: stages and storage come in as ports.
 */
import { createHash } from "node:crypto";
import { encodeImage, encodeVideo, IMAGE_CONTENT_TYPES, VIDEO_CONTENT_TYPES, type ImageFormat, type VideoFormat } from "../../shared/engine/image-codec.ts";
import type { Manifest } from "../../shared/engine/model-package.ts";
import type { ChatMessage, ImageSource, PromptPart, SequenceBuilder } from "../../shared/engine/sequence.ts";
import type { Embeddings } from "../../shared/engine/visual-encoder.engine.ts";
import type { StageClients } from "../../shared/grpc/stage-clients.ts";
import type { CreateJobRequest, Part } from "../../shared/jobs/job-schema.ts";
import { safeFetch } from "../../shared/net/safe-fetch.ts";
import type { ObjectStore } from "../../shared/storage/object-store.ts";

export class InputError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export interface PipelineEvents {
  status?: (stage: string) => void;
  token?: (text: string) => void;
  progress?: (stage: string, step: number, total: number) => void;
}

export interface MediaItem {
  key: string;
  url: string;
  expires_at: string;
  content_type: string;
  width: number;
  height: number;
  bytes: number;
  sha256: string;
  frames?: number;
  fps?: number;
}

export interface PipelineResult {
  output: { text?: string; images?: MediaItem[]; video?: MediaItem };
  metrics: Record<string, number>;
}

export interface PipelineOptions {
  manifest: Manifest;
  builder: SequenceBuilder;
  stages: Pick<StageClients, "encode" | "reason" | "decode">;
  store: ObjectStore;
  signedUrlTtlS: number;
  /** Hosts image URLs may use despite the SSRF guard (tests). */
  egressAllowHosts?: string[];
  /** Largest input image in bytes. Default 20 MiB. */
  maxImageBytes?: number;
}

/** Content-addressed cache of encoder outputs (few-shot prompts reuse the same images). */
export class EmbeddingCache {
  private readonly map = new Map<string, Float32Array>();
  constructor(private readonly maxEntries = 2048) {}

  get(key: string): Float32Array | undefined {
    const v = this.map.get(key);
    if (v) { this.map.delete(key); this.map.set(key, v); }
    return v;
  }

  set(key: string, v: Float32Array): void {
    this.map.set(key, v);
    if (this.map.size > this.maxEntries) this.map.delete(this.map.keys().next().value as string);
  }
}

const DATA_URI = /^data:image\/(png|jpeg|webp|gif);base64,(.*)$/s;

export class Pipeline {
  private readonly cache = new EmbeddingCache();

  constructor(private readonly opts: PipelineOptions) {}

  /** Bytes of an input image URL: data URI, an upload (object store), or https (SSRF-guarded). */
  async fetchImage(url: string, signal?: AbortSignal): Promise<Uint8Array> {
    const max = this.opts.maxImageBytes ?? 20 << 20;
    const data = DATA_URI.exec(url);
    if (data) {
      const bytes = Buffer.from(data[2] as string, "base64");
      if (bytes.byteLength > max) throw new InputError("image_too_large", `an input image is ${bytes.byteLength} bytes; at most ${max}`);
      return bytes;
    }
    const upload = /^upload:\/\/(u_[A-Za-z0-9]+)$/.exec(url);
    if (upload) {
      try {
        return await this.opts.store.get(`uploads/${upload[1]}`);
      } catch {
        throw new InputError("upload_not_found", `${url} does not exist (uploads expire; upload the file again)`);
      }
    }
    const res = await safeFetch(url, { allowHosts: this.opts.egressAllowHosts, maxBytes: max, signal });
    if (res.status !== 200) throw new InputError("image_fetch_failed", `GET ${url} answered ${res.status}`);
    return res.body;
  }

  private async parts(parts: Part[], signal?: AbortSignal): Promise<PromptPart[]> {
    return Promise.all(parts.map(async (p): Promise<PromptPart> => {
      if (typeof p === "string") return p;
      if (p.type === "text") return p.box ? { type: "text", text: p.text, box: p.box } : p.text;
      return { type: "image", image: { kind: "bytes", data: await this.fetchImage(p.url, signal) } };
    }));
  }

  private async encode(images: ImageSource[], signal: AbortSignal | undefined, metrics: Record<string, number>): Promise<Embeddings> {
    const { tokens_per_image: tokens, dim } = this.opts.manifest.encoder;
    const per = tokens * dim;
    const keys = images.map((s) => createHash("sha256").update(s.kind === "bytes" ? s.data : `box:${s.box.join(",")}`).digest("hex"));
    const missing = images.filter((_, i) => !this.cache.get(keys[i] as string));
    const t0 = Date.now();
    if (missing.length) {
      const e = await this.opts.stages.encode(missing, signal);
      let k = 0;
      images.forEach((_, i) => {
        if (this.cache.get(keys[i] as string)) return;
        this.cache.set(keys[i] as string, e.data.slice(k * per, (k + 1) * per));
        k++;
      });
    }
    metrics.encode_ms = Date.now() - t0;
    metrics.images_cached = images.length - missing.length;
    const data = new Float32Array(images.length * per);
    keys.forEach((key, i) => data.set(this.cache.get(key) as Float32Array, i * per));
    return { count: images.length, tokens, dim, data };
  }

  async run(jobId: string, req: CreateJobRequest, signal: AbortSignal | undefined, events: PipelineEvents = {}): Promise<PipelineResult> {
    const m = this.opts.manifest;
    const p = req.params;
    const metrics: Record<string, number> = {};
    const started = Date.now();
    events.status?.("encode");
    const sequence = req.messages
      ? this.opts.builder.build("chat", await Promise.all(req.messages.map(async (msg): Promise<ChatMessage> => ({ role: msg.role, content: await this.parts(msg.content, signal) }))))
      : this.opts.builder.build(req.task === "chat" ? "chat" : req.task === "complete" ? "complete" : req.task === "generate" ? "image" : "video", await this.parts(req.input ?? [], signal));
    const images = await this.encode(sequence.images, signal, metrics);
    metrics.tokens_in = sequence.ids.length;
    events.status?.("reason");
    const t1 = Date.now();
    const mode = req.task === "generate" ? "image" : req.task === "video" ? "video" : "text";
    const frames = mode === "video" ? p.frames ?? m.video.frames : 1;
    let reasonStep = 0;
    const visualTotal = mode === "text" ? 0 : frames;
    const r = await this.opts.stages.reason({
      tokenIds: sequence.ids, images, mode, frames, includeNegative: mode !== "text", signal,
      sampling: {
        max_new_tokens: p.max_new_tokens, temperature: p.temperature, top_k: p.top_k, top_p: p.top_p, num_beams: p.num_beams,
        length_penalty: p.length_penalty, repetition_penalty: p.repetition_penalty, stop: p.stop ?? [], seed: p.seed,
      },
      onToken: (_id, text) => events.token?.(text),
      onVisual: () => events.progress?.("reason", ++reasonStep, visualTotal),
    });
    metrics.reason_ms = Date.now() - t1;
    metrics.tokens_out = r.usage.completionTokens;
    if (mode === "text") {
      metrics.total_ms = Date.now() - started;
      return { output: { text: r.text }, metrics };
    }
    events.status?.("decode");
    const t2 = Date.now();
    const pics = await this.opts.stages.decode({
      embeddings: r.visual, count: frames, negative: r.negative, decoder: p.decoder, steps: p.steps, guidanceScale: p.guidance_scale,
      seed: p.seed ?? 0, signal, onProgress: (s, n) => events.progress?.("decode", s, n),
    });
    metrics.decode_ms = Date.now() - t2;
    events.status?.("store");
    const t3 = Date.now();
    const { width, height } = pics[0]!;
    let out: PipelineResult["output"];
    if (mode === "image") {
      const fmt = (p.output_format ?? "png") as ImageFormat;
      const bytes = await encodeImage(pics[0]!, fmt);
      out = { images: [await this.store(`outputs/${jobId}/0.${fmt === "jpeg" ? "jpg" : fmt}`, bytes, IMAGE_CONTENT_TYPES[fmt], width, height)] };
    } else {
      const fmt = (p.output_format ?? "webp") as VideoFormat;
      const fps = p.fps ?? m.video.fps;
      const bytes = await encodeVideo(pics, fps, fmt);
      out = { video: { ...(await this.store(`outputs/${jobId}/video.${fmt}`, bytes, VIDEO_CONTENT_TYPES[fmt], width, height)), frames, fps } };
    }
    metrics.store_ms = Date.now() - t3;
    metrics.total_ms = Date.now() - started;
    return { output: out, metrics };
  }

  private async store(key: string, bytes: Uint8Array, contentType: string, width: number, height: number): Promise<MediaItem> {
    const obj = await this.opts.store.put(key, bytes, contentType);
    const { url, expiresAt } = await this.opts.store.signedUrl(key, this.opts.signedUrlTtlS);
    return { key, url, expires_at: expiresAt.toISOString(), content_type: contentType, width, height, bytes: obj.bytes, sha256: obj.sha256 };
  }
}
