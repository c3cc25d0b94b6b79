/**
 * Reasoner stage: one continuous batch per process. Each call joins the running batch between
 * decoding steps and leaves it when it finishes or its caller cancels; one loop steps the batch
 * while it holds rows.
 */
import { ArBatch, type ArEngine, type GenerationMode, type GenerationResult, type TextOptions } from "../../shared/engine/ar.engine.ts";
import type { Embeddings } from "../../shared/engine/visual-encoder.engine.ts";

export interface ReasonRequest {
  tokenIds: number[];
  images: Embeddings;
  mode: GenerationMode;
  text?: Partial<TextOptions>;
  frames?: number;
  signal?: AbortSignal;
  onToken?: (id: number, text: string) => void;
  onVisual?: (index: number, embeddings: Float32Array) => void;
}

export interface ReasonerServiceOptions {
  engine: ArEngine;
  /** Called after every decoding step with the batch size. */
  onStep?: (info: { size: number; stepMs: number }) => void;
  /** Called when a request joins the batch, with how long it waited to. */
  onAdmit?: (waitMs: number) => void;
}

export class ReasonerService {
  private readonly batch: ArBatch;
  private loop: Promise<void> | null = null;
  /** Decoding steps run (a step serves every row in the batch). */
  steps = 0;

  constructor(private readonly opts: ReasonerServiceOptions) {
    this.batch = new ArBatch(opts.engine, { onAdmit: opts.onAdmit });
  }

  get inFlight(): number {
    return this.batch.size;
  }

  async generate(req: ReasonRequest): Promise<GenerationResult> {
    const e = this.opts.engine;
    const sequence = { ids: req.tokenIds, images: Array.from({ length: req.images.count }, () => ({ kind: "bytes" as const, data: new Uint8Array(0) })) };
    // Beam search keeps its own batch of beams; everything else joins the shared batch.
    if (req.mode === "text" && e.textOptions(req.text).numBeams > 1) {
      return e.generate({ sequence, images: req.images, mode: req.mode, text: req.text, signal: req.signal, onToken: req.onToken });
    }
    const done = this.batch.add({ sequence, images: req.images, mode: req.mode, text: req.text, frames: req.frames, signal: req.signal, onToken: req.onToken, onVisual: req.onVisual });
    this.loop ??= this.run();
    return done;
  }

  unconditional(): Promise<Float32Array> {
    return this.opts.engine.unconditional();
  }

  private async run(): Promise<void> {
    try {
      while (this.batch.size > 0) {
        const t0 = Date.now();
        await this.batch.step();
        this.steps++;
        this.opts.onStep?.({ size: this.batch.size, stepMs: Date.now() - t0 });
      }
    } catch (err) {
      this.batch.failAll(err);
    } finally {
      this.loop = null;
    }
  }
}
