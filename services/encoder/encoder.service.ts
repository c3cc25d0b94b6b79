/**
 * Encoder stage: Encode(images) → embeddings [N, tokens_per_image, dim]. Images of concurrent calls
 * are batched into one engine call (DynamicBatcher); a cancelled or expired call leaves its batch.
 */
import { DynamicBatcher } from "../../shared/batcher.ts";
import type { RgbImage } from "../../shared/engine/image-codec.ts";
import type { ImageSource } from "../../shared/engine/sequence.ts";
import type { VisualEncoderEngine } from "../../shared/engine/visual-encoder.engine.ts";
import { floatsToWire, type WireTensor } from "../../shared/tensor-codec.ts";

export interface EncodeRequestMessage {
  images: { encoded?: Uint8Array; box_mask?: { box: number[] }; source?: string }[];
}

export interface EncoderServiceOptions {
  engine: VisualEncoderEngine;
  /** Default 32 images. */
  maxBatchSize?: number;
  /** Default 5 ms. */
  maxBatchDelayMs?: number;
  onBatch?: (info: { size: number; queueDelayMs: number; runMs: number }) => void;
}

export class EncoderService {
  private readonly batcher: DynamicBatcher<RgbImage, Float32Array>;
  /** Engine calls made (a batch counts once). */
  engineCalls = 0;

  constructor(private readonly opts: EncoderServiceOptions) {
    this.batcher = new DynamicBatcher<RgbImage, Float32Array>({
      maxBatchSize: opts.maxBatchSize ?? 32,
      maxBatchDelayMs: opts.maxBatchDelayMs ?? 5,
      onBatch: opts.onBatch,
      run: async (images) => {
        this.engineCalls++;
        const e = await opts.engine.encodePrepared(images);
        const per = e.tokens * e.dim;
        return images.map((_, i) => e.data.slice(i * per, (i + 1) * per));
      },
    });
  }

  get queued(): number {
    return this.batcher.queued;
  }

  async encode(req: EncodeRequestMessage, signal?: AbortSignal): Promise<WireTensor> {
    const sources: ImageSource[] = req.images.map((img, i) => {
      if (img.encoded && img.encoded.byteLength > 0) return { kind: "bytes", data: img.encoded };
      if (img.box_mask) return { kind: "box-mask", box: img.box_mask.box as [number, number, number, number] };
      throw new EncoderRequestError(`images[${i}] has neither encoded bytes nor a box mask`);
    });
    const engine = this.opts.engine;
    const prepared = await Promise.all(sources.map((s) => engine.prepare(s)));
    const parts = await Promise.all(prepared.map((p) => this.batcher.submit(p, signal)));
    const per = engine.tokens * engine.dim;
    const out = new Float32Array(parts.length * per);
    parts.forEach((p, i) => out.set(p, i * per));
    return floatsToWire(out, [parts.length, engine.tokens, engine.dim]);
  }
}

export class EncoderRequestError extends Error {
  readonly code = "invalid_argument";
}
