/**
 * Typed clients of the three stage services, as the orchestrator uses them: waitForReady with a
 * deadline (a stage scaled to zero gets time to start instead of failing the job), AbortSignal →
 * call cancel, streams turned into callbacks, and retries only for the idempotent Encode call.
 */
import type { Embeddings } from "../engine/visual-encoder.engine.ts";
import type { RgbImage } from "../engine/image-codec.ts";
import type { ImageSource } from "../engine/sequence.ts";
import { floatsToWire, fromWire, type WireTensor } from "../tensor-codec.ts";
import { createStageClient, Status, type GrpcClient, type ServiceError } from "./grpc.adapter.ts";

export interface StageClientsOptions {
  encoder: string;
  reasoner: string;
  decoder: string;
  maxMessageBytes: number;
  /** How long a call waits for a stage to become ready before failing. Default 120000. */
  readyTimeoutMs?: number;
  /** Per-call deadline. Default 600000. */
  callTimeoutMs?: number;
  dims: { tokens: number; dim: number };
}

export class StageUnavailableError extends Error {
  readonly code = "stage_unavailable";
}

export class StageCallError extends Error {
  constructor(readonly code: string, message: string, readonly grpcCode: number) {
    super(message);
  }
}

export interface ReasonCall {
  tokenIds: number[];
  images: Embeddings;
  mode: "text" | "image" | "video";
  sampling?: Record<string, unknown>;
  frames?: number;
  includeNegative?: boolean;
  signal?: AbortSignal;
  onToken?: (id: number, text: string) => void;
  onVisual?: (index: number, embeddings: Float32Array) => void;
}

export interface ReasonResult {
  text: string;
  finishReason: string;
  usage: { promptTokens: number; completionTokens: number };
  visual: Float32Array;
  negative: Float32Array | null;
}

export interface DecodeCall {
  embeddings: Float32Array;
  count: number;
  negative?: Float32Array | null;
  decoder?: string;
  steps?: number;
  guidanceScale?: number;
  seed?: number;
  signal?: AbortSignal;
  onProgress?: (step: number, total: number) => void;
}

interface Cancellable { cancel(): void }
interface StreamLike<T> extends Cancellable { on(ev: "data", cb: (e: T) => void): this; on(ev: "error", cb: (e: ServiceError) => void): this; on(ev: "end", cb: () => void): this }

/** Maps a gRPC error to ours: "code: message" details carry our stable code. */
function fromServiceError(err: ServiceError, stage: string): Error {
  if (err.code === Status.UNAVAILABLE || (err.code === Status.DEADLINE_EXCEEDED && /waitForReady|connect/i.test(err.details))) {
    return new StageUnavailableError(`${stage} stage unavailable: ${err.details}`);
  }
  const m = /^([a-z_]+): (.*)$/s.exec(err.details ?? "");
  if (m) return new StageCallError(m[1] as string, m[2] as string, err.code);
  if (err.code === Status.CANCELLED) return new StageCallError("canceled", `${stage} call canceled`, err.code);
  if (err.code === Status.DEADLINE_EXCEEDED) return new StageCallError("stage_timeout", `${stage} call exceeded its deadline`, err.code);
  return new StageCallError("stage_error", `${stage}: ${err.details || err.message}`, err.code);
}

function throwIfAborted(signal: AbortSignal | undefined, stage: string): void {
  if (signal?.aborted) throw new StageCallError("canceled", `${stage} call canceled`, Status.CANCELLED);
}

/** Cancels `call` when `signal` aborts — also when it already has (a listener alone would never fire). */
function linkAbort(signal: AbortSignal | undefined, call: Cancellable): void {
  if (!signal) return;
  if (signal.aborted) call.cancel();
  else signal.addEventListener("abort", () => call.cancel(), { once: true });
}

export class StageClients {
  private readonly encoder: GrpcClient;
  private readonly reasoner: GrpcClient;
  private readonly decoder: GrpcClient;
  /** Calls waiting for or in flight to each stage (the autoscalers' demand signal). */
  readonly inFlight = { encoder: 0, reasoner: 0, decoder: 0 };

  constructor(private readonly opts: StageClientsOptions) {
    this.encoder = createStageClient({ stage: "Encoder", target: opts.encoder, maxMessageBytes: opts.maxMessageBytes });
    this.reasoner = createStageClient({ stage: "Reasoner", target: opts.reasoner, maxMessageBytes: opts.maxMessageBytes });
    this.decoder = createStageClient({ stage: "Decoder", target: opts.decoder, maxMessageBytes: opts.maxMessageBytes });
  }

  private callOptions(): { deadline: number } {
    return { deadline: Date.now() + (this.opts.callTimeoutMs ?? 600_000) };
  }

  private async ready(client: GrpcClient, stage: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + (this.opts.readyTimeoutMs ?? 120_000), (err) => (err ? reject(new StageUnavailableError(`${stage} stage not ready: ${err.message}`)) : resolve()));
    });
  }

  async encode(images: ImageSource[], signal?: AbortSignal): Promise<Embeddings> {
    const { tokens, dim } = this.opts.dims;
    if (images.length === 0) return { count: 0, tokens, dim, data: new Float32Array(0) };
    this.inFlight.encoder++;
    try {
      await this.ready(this.encoder, "encoder");
      throwIfAborted(signal, "encoder");
      const request = { images: images.map((s) => (s.kind === "bytes" ? { encoded: s.data } : { box_mask: { box: s.box } })) };
      // Encode is idempotent: retry once on a transient failure.
      for (let attempt = 0; ; attempt++) {
        try {
          const res = await new Promise<{ embeddings: WireTensor }>((resolve, reject) => {
            const call = (this.encoder as unknown as { Encode: (r: object, o: object, cb: (e: ServiceError | null, r?: { embeddings: WireTensor }) => void) => Cancellable })
              .Encode(request, this.callOptions(), (err, r) => (err ? reject(err) : resolve(r!)));
            linkAbort(signal, call);
          });
          const t = fromWire(res.embeddings, { dtype: "float32", rank: 3 });
          return { count: t.dims[0] as number, tokens, dim, data: t.data as Float32Array };
        } catch (err) {
          const e = fromServiceError(err as ServiceError, "encoder");
          if (attempt >= 1 || !(e instanceof StageUnavailableError) || signal?.aborted) throw e;
        }
      }
    } finally {
      this.inFlight.encoder--;
    }
  }

  async reason(c: ReasonCall): Promise<ReasonResult> {
    const { tokens, dim } = this.opts.dims;
    this.inFlight.reasoner++;
    try {
      await this.ready(this.reasoner, "reasoner");
      throwIfAborted(c.signal, "reasoner");
      return await new Promise<ReasonResult>((resolve, reject) => {
        const frames = c.mode === "video" ? c.frames ?? 1 : c.mode === "image" ? 1 : 0;
        const visual = new Float32Array(frames * tokens * dim);
        let negative: Float32Array | null = null;
        const stream = (this.reasoner as unknown as { Generate: (r: object, o: object) => StreamLike<{ token?: { id: number; text: string }; visual?: { index: number; embeddings: WireTensor }; negative?: WireTensor; done?: { finish_reason: string; text: string; usage?: { prompt_tokens: number; completion_tokens: number } } }> })
          .Generate({
            token_ids: c.tokenIds, mode: { text: "MODE_TEXT", image: "MODE_IMAGE", video: "MODE_VIDEO" }[c.mode],
            image_embeddings: c.images.count ? floatsToWire(c.images.data, [c.images.count, tokens, dim]) : undefined,
            sampling: c.sampling ?? {}, frames: c.frames ?? 0, include_negative: !!c.includeNegative,
          }, this.callOptions());
        linkAbort(c.signal, stream);
        let done: ReasonResult | null = null;
        stream.on("data", (e) => {
          if (e.token) c.onToken?.(Number(e.token.id), e.token.text);
          if (e.negative) negative = fromWire(e.negative).data as Float32Array;
          if (e.visual) {
            const v = fromWire(e.visual.embeddings).data as Float32Array;
            visual.set(v, e.visual.index * tokens * dim);
            c.onVisual?.(e.visual.index, v);
          }
          if (e.done) {
            done = {
              text: e.done.text, finishReason: e.done.finish_reason, visual, negative,
              usage: { promptTokens: e.done.usage?.prompt_tokens ?? 0, completionTokens: e.done.usage?.completion_tokens ?? 0 },
            };
          }
        });
        stream.on("error", (err) => reject(fromServiceError(err, "reasoner")));
        stream.on("end", () => (done ? resolve(done) : reject(new StageCallError("stage_error", "reasoner stream ended without a result", Status.INTERNAL))));
      });
    } finally {
      this.inFlight.reasoner--;
    }
  }

  async decode(c: DecodeCall): Promise<RgbImage[]> {
    const { tokens, dim } = this.opts.dims;
    this.inFlight.decoder++;
    try {
      await this.ready(this.decoder, "decoder");
      throwIfAborted(c.signal, "decoder");
      return await new Promise<RgbImage[]>((resolve, reject) => {
        const images: RgbImage[] = [];
        const stream = (this.decoder as unknown as { Decode: (r: object, o: object) => StreamLike<{ progress?: { step: number; total: number }; image?: { index: number; width: number; height: number; rgb: Uint8Array } }> })
          .Decode({
            embeddings: floatsToWire(c.embeddings, [c.count, tokens, dim]),
            negative: c.negative ? floatsToWire(c.negative, [tokens, dim]) : undefined,
            decoder: c.decoder ?? "", steps: c.steps, guidance_scale: c.guidanceScale, seed: c.seed ?? 0,
          }, this.callOptions());
        linkAbort(c.signal, stream);
        stream.on("data", (e) => {
          if (e.progress) c.onProgress?.(e.progress.step, e.progress.total);
          if (e.image) images[e.image.index] = { width: e.image.width, height: e.image.height, data: new Uint8Array(e.image.rgb) };
        });
        stream.on("error", (err) => reject(fromServiceError(err, "decoder")));
        stream.on("end", () => (images.length === c.count ? resolve(images) : reject(new StageCallError("stage_error", `decoder returned ${images.length} of ${c.count} images`, Status.INTERNAL))));
      });
    } finally {
      this.inFlight.decoder--;
    }
  }

  close(): void {
    this.encoder.close();
    this.reasoner.close();
    this.decoder.close();
  }
}
