/**
 * Decoder stage: diffusion requests advance together — every loop tick runs one UNet call over the
 * rows of all active requests (each at its own timestep, with its own guidance), so concurrent
 * requests share denoising steps; new requests join between ticks and cancelled ones leave.
 * `direct` decoding is one forward pass per request.
 */
import { AbortedError } from "../../shared/engine/ar.engine.ts";
import type { RgbImage } from "../../shared/engine/image-codec.ts";
import { toImages, type DecodeRequest, type DiffusionRun, type VisualDecoderEngine } from "../../shared/engine/visual-decoder.engine.ts";

export interface DecoderServiceOptions {
  engine: VisualDecoderEngine;
  /** Most UNet rows per call (a guided image takes 2). Default 64. */
  maxBatchRows?: number;
  onStep?: (info: { requests: number; rows: number; stepMs: number }) => void;
  /** Called when a request's first UNet step starts, with how long it waited for a place in one. */
  onAdmit?: (waitMs: number) => void;
}

interface Active {
  run: DiffusionRun;
  resolve: (images: RgbImage[]) => void;
  reject: (err: unknown) => void;
  /** Date.now() when queued; null once its first step ran. */
  queuedAt: number | null;
}

export class DecoderService {
  private active: Active[] = [];
  private loop: Promise<void> | null = null;
  private readonly maxBatchRows: number;
  /** UNet calls made (each serves every request in the tick). */
  unetCalls = 0;

  constructor(private readonly opts: DecoderServiceOptions) {
    this.maxBatchRows = opts.maxBatchRows ?? 64;
  }

  get inFlight(): number {
    return this.active.length;
  }

  async decode(req: DecodeRequest): Promise<RgbImage[]> {
    const engine = this.opts.engine;
    const cfg = engine.config(req.decoder ?? engine.defaultDecoder);
    if (typeof cfg === "string" || cfg.type === "direct") return engine.decode(req);
    const run = engine.startDiffusion(req);
    return new Promise<RgbImage[]>((resolve, reject) => {
      this.active.push({ run, resolve, reject, queuedAt: Date.now() });
      this.loop ??= this.tick();
    });
  }

  private async tick(): Promise<void> {
    const engine = this.opts.engine;
    try {
      while (this.active.length > 0) {
        this.active = this.active.filter((a) => {
          if (!a.run.req.signal?.aborted) return true;
          a.reject(new AbortedError());
          return false;
        });
        // Fill one UNet call with as many requests as fit (at least one), oldest first.
        const group: Active[] = [];
        let rows = 0;
        for (const a of this.active) {
          const r = a.run.count * (a.run.guidance !== 1 ? 2 : 1);
          if (group.length > 0 && (rows + r > this.maxBatchRows || a.run.cfg !== group[0]!.run.cfg)) continue;
          group.push(a);
          rows += r;
        }
        if (group.length === 0) continue;
        const t0 = Date.now();
        for (const a of group) {
          if (a.queuedAt !== null) this.opts.onAdmit?.(t0 - a.queuedAt);
          a.queuedAt = null;
        }
        try {
          await engine.stepDiffusion(group.map((a) => a.run));
        } catch (err) {
          for (const a of group) a.reject(err);
          this.active = this.active.filter((a) => !group.includes(a));
          continue;
        }
        this.unetCalls++;
        this.opts.onStep?.({ requests: group.length, rows, stepMs: Date.now() - t0 });
        for (const a of group.filter((g) => g.run.done)) {
          this.active = this.active.filter((x) => x !== a);
          engine.finishDiffusion(a.run).then((t) => a.resolve(toImages(t)), a.reject);
        }
        // Rotate so requests that did not fit go first next tick.
        this.active = [...this.active.filter((a) => !group.includes(a)), ...this.active.filter((a) => group.includes(a))];
      }
    } finally {
      this.loop = null;
    }
  }
}
