/**
 * Visual decoders the manifest declares: `diffusion` (UNet + scheduler + VAE, classifier-free
 * guidance with the batch ordered [cond, uncond], seeded noise) and `direct` (one forward pass).
 * Embeddings in, RGB images out; progress per denoising step; cancellable between steps.
 */
import type { Manifest } from "./model-package.ts";
import type { Graph, HostTensor } from "./onnx-session.adapter.ts";
import type { RgbImage } from "./image-codec.ts";
import { Rng } from "./random.ts";
import { createScheduler, type Scheduler, type SchedulerConfig } from "./schedulers.ts";
import { AbortedError } from "./ar.engine.ts";

export type DecoderName = string;

export interface DecodeRequest {
  /** count × tokens × dim visual embeddings (one image per item; video frames are items). */
  embeddings: Float32Array;
  count: number;
  /** tokens × dim unconditional embeddings for guidance (the AR engine's cached negative). */
  negative?: Float32Array;
  decoder?: DecoderName;
  steps?: number;
  guidanceScale?: number;
  seed?: number;
  /** Initial latent noise (count × C × h × w); drawn from `seed` when absent. */
  noise?: Float32Array;
  signal?: AbortSignal;
  onProgress?: (step: number, total: number) => void;
}

export class DecoderRequestError extends Error {
  readonly code = "invalid_decoder";
}

type DiffusionConfig = Extract<Manifest["decoders"][string], { type: "diffusion" }>;

export interface VisualDecoderOptions {
  manifest: Manifest;
  /** Graphs by file name, as the manifest names them. */
  graphs: Map<string, Graph>;
}

export class VisualDecoderEngine {
  private readonly manifest: Manifest;
  private readonly graphs: Map<string, Graph>;
  readonly tokens: number;
  readonly dim: number;

  constructor(opts: VisualDecoderOptions) {
    this.manifest = opts.manifest;
    this.graphs = opts.graphs;
    this.tokens = opts.manifest.encoder.tokens_per_image;
    this.dim = opts.manifest.encoder.dim;
  }

  get defaultDecoder(): string {
    return this.manifest.decoders.default;
  }

  decoderNames(): string[] {
    return Object.entries(this.manifest.decoders).filter(([k, v]) => k !== "default" && typeof v !== "string").map(([k]) => k);
  }

  config(name = this.defaultDecoder): Manifest["decoders"][string] {
    const cfg = this.manifest.decoders[name];
    if (!cfg || typeof cfg === "string" || name === "default") {
      throw new DecoderRequestError(`decoder "${name}" is not in this model; choose one of ${this.decoderNames().join(", ")}`);
    }
    return cfg;
  }

  private graph(file: string): Graph {
    const g = this.graphs.get(file);
    if (!g) throw new Error(`graph ${file} was not loaded`);
    return g;
  }

  async decode(req: DecodeRequest): Promise<RgbImage[]> {
    return toImages(await this.decodeRaw(req));
  }

  /** The decoder's float output [B,3,H,W] in [-1,1] (parity checks compare this). */
  async decodeRaw(req: DecodeRequest): Promise<HostTensor> {
    const name = req.decoder ?? this.defaultDecoder;
    const cfg = this.config(name);
    const n = req.count;
    const ctxDims = [n, this.tokens, this.dim];
    if (req.embeddings.length !== n * this.tokens * this.dim) throw new Error(`expected ${n}×${this.tokens}×${this.dim} embeddings, got ${req.embeddings.length} floats`);
    if (typeof cfg === "string") throw new DecoderRequestError(name);
    if (cfg.type === "direct") {
      if (req.signal?.aborted) throw new AbortedError();
      const out = await this.graph(cfg.file).run({ encoder_hidden_states: { dtype: "float32", dims: ctxDims, data: req.embeddings } });
      req.onProgress?.(1, 1);
      return out.image as HostTensor;
    }
    return this.diffuse(cfg, req);
  }

  private async diffuse(cfg: DiffusionConfig, req: DecodeRequest): Promise<HostTensor> {
    const run = this.startDiffusion(req);
    while (!run.done) await this.stepDiffusion([run]);
    return this.finishDiffusion(run);
  }

  /** Prepares a diffusion run (noise, scheduler, contexts) that `stepDiffusion` advances. */
  startDiffusion(req: DecodeRequest): DiffusionRun {
    const name = req.decoder ?? this.defaultDecoder;
    const cfg = this.config(name);
    if (typeof cfg === "string" || cfg.type !== "diffusion") throw new DecoderRequestError(`decoder "${name}" is not a diffusion decoder`);
    return new DiffusionRun(cfg, req, this.tokens, this.dim);
  }

  /**
   * One denoising step for several runs in a single UNet call (rows of different requests, at
   * different timesteps, side by side): how the decoder stage batches concurrent requests.
   */
  async stepDiffusion(runs: DiffusionRun[]): Promise<void> {
    const live = runs.filter((r) => !r.done);
    if (live.length === 0) return;
    for (const r of live) if (r.req.signal?.aborted) throw new AbortedError();
    const cfg = live[0]!.cfg;
    if (live.some((r) => r.cfg !== cfg)) throw new Error("runs of one UNet call must share a decoder");
    const [c, h, w] = cfg.latent_shape;
    const inputs = live.map((r) => r.unetInput());
    const rows = inputs.reduce((s, i) => s + i.rows, 0);
    const cat = (parts: Float32Array[]): Float32Array => {
      const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
      let o = 0;
      for (const p of parts) { out.set(p, o); o += p.length; }
      return out;
    };
    const feeds: Record<string, HostTensor> = {
      sample: { dtype: "float32", dims: [rows, c, h, w], data: cat(inputs.map((i) => i.sample)) },
      timestep: { dtype: "float32", dims: [rows], data: cat(inputs.map((i) => i.timestep)) },
      encoder_hidden_states: { dtype: "float32", dims: [rows, this.tokens, this.dim], data: cat(live.map((r) => r.ctx)) },
    };
    if (cfg.pooled_input) feeds.pooled = { dtype: "float32", dims: [rows, this.dim], data: cat(live.map((r) => r.pooled)) };
    if (cfg.time_ids) {
      const ids = new Float32Array(rows * cfg.time_ids.length);
      for (let r = 0; r < rows; r++) ids.set(cfg.time_ids, r * cfg.time_ids.length);
      feeds.time_ids = { dtype: "float32", dims: [rows, cfg.time_ids.length], data: ids };
    }
    const out = ((await this.graph(cfg.unet).run(feeds)).model_output as HostTensor).data as Float32Array;
    let offset = 0;
    const size = c * h * w;
    live.forEach((r, k) => {
      const n = inputs[k]!.rows;
      r.applyOutput(out.subarray(offset * size, (offset + n) * size));
      offset += n;
    });
  }

  /** VAE-decodes a finished run: its images as [n,3,H,W] in [-1,1]. */
  async finishDiffusion(run: DiffusionRun): Promise<HostTensor> {
    const [c, h, w] = run.cfg.latent_shape;
    let x = run.x;
    if (run.cfg.scaling_factor !== 1) x = x.map((v) => v / run.cfg.scaling_factor);
    const img = await this.graph(run.cfg.vae_decoder).run({ latent: { dtype: "float32", dims: [run.count, c, h, w], data: x } });
    return img.image as HostTensor;
  }
}

/** The state of one diffusion request between denoising steps. */
export class DiffusionRun {
  readonly count: number;
  readonly guidance: number;
  readonly ctx: Float32Array;
  readonly pooled: Float32Array;
  private readonly scheduler: Scheduler;
  private readonly guided: boolean;
  x: Float32Array;
  step = 0;

  constructor(readonly cfg: DiffusionConfig, readonly req: DecodeRequest, tokens: number, dim: number) {
    const n = req.count;
    this.count = n;
    const steps = req.steps ?? cfg.default_steps;
    this.guidance = req.guidanceScale ?? cfg.default_guidance;
    if (!Number.isInteger(steps) || steps < 1 || steps > cfg.scheduler.train_timesteps) {
      throw new DecoderRequestError(`steps must be an integer from 1 to ${cfg.scheduler.train_timesteps}`);
    }
    if (!(this.guidance >= 0) || this.guidance > 100) throw new DecoderRequestError("guidance_scale must be between 0 and 100");
    this.scheduler = createScheduler(cfg.scheduler as SchedulerConfig, steps);
    const [c, h, w] = cfg.latent_shape;
    const size = c * h * w;
    let x: Float32Array = new Float32Array(n * size);
    if (req.noise) {
      if (req.noise.length !== n * size) throw new Error(`noise must hold ${n}×${c}×${h}×${w} floats`);
      x.set(req.noise);
    } else {
      const rng = new Rng(req.seed ?? 0);
      for (let i = 0; i < x.length; i++) x[i] = rng.gaussian();
    }
    if (this.scheduler.initNoiseSigma !== 1) x = x.map((v) => v * this.scheduler.initNoiseSigma);
    this.x = x;
    this.guided = this.guidance !== 1;
    const tokSize = tokens * dim;
    const ctx = new Float32Array((this.guided ? 2 : 1) * n * tokSize);
    ctx.set(req.embeddings);
    if (this.guided) {
      if (!req.negative || req.negative.length !== tokSize) throw new Error("guidance needs the unconditional embeddings (tokens × dim)");
      for (let i = 0; i < n; i++) ctx.set(req.negative, (n + i) * tokSize);
    }
    this.ctx = ctx;
    const rows = this.guided ? 2 * n : n;
    const pooled = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < tokens; t++) {
        for (let d = 0; d < dim; d++) pooled[r * dim + d] = (pooled[r * dim + d] as number) + (ctx[r * tokSize + t * dim + d] as number) / tokens;
      }
    }
    this.pooled = pooled;
  }

  get totalSteps(): number {
    return this.scheduler.timesteps.length;
  }

  get done(): boolean {
    return this.step >= this.scheduler.timesteps.length;
  }

  /** This run's UNet rows for the current step: [cond…, uncond…] when guided. */
  unetInput(): { rows: number; sample: Float32Array; timestep: Float32Array } {
    const xin = this.scheduler.scaleInput(this.x, this.step);
    const rows = this.guided ? 2 * this.count : this.count;
    return {
      rows,
      sample: this.guided ? concat(xin, xin) : xin,
      timestep: new Float32Array(rows).fill(this.scheduler.timesteps[this.step] as number),
    };
  }

  /** Applies the UNet output of this run's rows: guidance, then the scheduler's update. */
  applyOutput(o: Float32Array): void {
    const size = this.x.length;
    let eps: Float32Array = o;
    if (this.guided) {
      eps = new Float32Array(size);
      for (let k = 0; k < size; k++) {
        const u = o[size + k] as number;
        eps[k] = u + this.guidance * ((o[k] as number) - u);
      }
    }
    this.x = this.scheduler.step(eps, this.step, this.x);
    this.step++;
    this.req.onProgress?.(this.step, this.scheduler.timesteps.length);
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** [B,3,H,W] in [-1,1] → RGB uint8 images, as Emu2's (x/2 + 0.5).clamp(0,1)·255 rounded. */
export function toImages(t: HostTensor): RgbImage[] {
  const [b, , h, w] = t.dims as [number, number, number, number];
  const d = t.data as Float32Array;
  const plane = h * w;
  const out: RgbImage[] = [];
  for (let i = 0; i < b; i++) {
    const data = new Uint8Array(plane * 3);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < plane; p++) {
        const v = (d[(i * 3 + c) * plane + p] as number) / 2 + 0.5;
        data[p * 3 + c] = Math.round(Math.min(1, Math.max(0, v)) * 255);
      }
    }
    out.push({ width: w, height: h, data });
  }
  return out;
}
