/**
 * Visual decoders the manifest declares: `diffusion` (UNet + scheduler + VAE, classifier-free
 * guidance with the batch ordered [cond, uncond], seeded noise) and `direct` (one forward pass).
 * Embeddings in, RGB images out; progress per denoising step; cancellable between steps.
 */
import type { Manifest } from "./model-package.ts";
import type { Graph, HostTensor } from "./onnx-session.adapter.ts";
import type { RgbImage } from "./image-codec.ts";
import { Rng } from "./random.ts";
import { createScheduler, type SchedulerConfig } from "./schedulers.ts";
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
    const n = req.count;
    const steps = req.steps ?? cfg.default_steps;
    const guidance = req.guidanceScale ?? cfg.default_guidance;
    if (!Number.isInteger(steps) || steps < 1 || steps > cfg.scheduler.train_timesteps) {
      throw new DecoderRequestError(`steps must be an integer from 1 to ${cfg.scheduler.train_timesteps}`);
    }
    const scheduler = createScheduler(cfg.scheduler as SchedulerConfig, steps);
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
    if (scheduler.initNoiseSigma !== 1) x = x.map((v) => v * scheduler.initNoiseSigma);
    const guided = guidance !== 1;
    const tokSize = this.tokens * this.dim;
    const ctx = new Float32Array((guided ? 2 : 1) * n * tokSize);
    ctx.set(req.embeddings);
    if (guided) {
      if (!req.negative || req.negative.length !== tokSize) throw new Error("guidance needs the unconditional embeddings (tokens × dim)");
      for (let i = 0; i < n; i++) ctx.set(req.negative, (n + i) * tokSize);
    }
    const rows = guided ? 2 * n : n;
    const pooled = new Float32Array(rows * this.dim);
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < this.tokens; t++) {
        for (let d = 0; d < this.dim; d++) pooled[r * this.dim + d] = (pooled[r * this.dim + d] as number) + (ctx[r * tokSize + t * this.dim + d] as number) / this.tokens;
      }
    }
    const unet = this.graph(cfg.unet);
    for (let i = 0; i < scheduler.timesteps.length; i++) {
      if (req.signal?.aborted) throw new AbortedError();
      const xin = scheduler.scaleInput(x, i);
      const sample = guided ? concat(xin, xin) : xin;
      const feeds: Record<string, HostTensor> = {
        sample: { dtype: "float32", dims: [rows, c, h, w], data: sample },
        timestep: { dtype: "float32", dims: [rows], data: new Float32Array(rows).fill(scheduler.timesteps[i] as number) },
        encoder_hidden_states: { dtype: "float32", dims: [rows, this.tokens, this.dim], data: ctx },
      };
      if (cfg.pooled_input) feeds.pooled = { dtype: "float32", dims: [rows, this.dim], data: pooled };
      if (cfg.time_ids) {
        const ids = new Float32Array(rows * cfg.time_ids.length);
        for (let r = 0; r < rows; r++) ids.set(cfg.time_ids, r * cfg.time_ids.length);
        feeds.time_ids = { dtype: "float32", dims: [rows, cfg.time_ids.length], data: ids };
      }
      const out = (await unet.run(feeds)).model_output as HostTensor;
      const o = out.data as Float32Array;
      let eps: Float32Array = o;
      if (guided) {
        eps = new Float32Array(n * size);
        for (let k = 0; k < n * size; k++) {
          const u = o[n * size + k] as number;
          eps[k] = u + guidance * ((o[k] as number) - u);
        }
      }
      x = scheduler.step(eps, i, x);
      req.onProgress?.(i + 1, scheduler.timesteps.length);
    }
    if (cfg.scaling_factor !== 1) x = x.map((v) => v / cfg.scaling_factor);
    const img = await this.graph(cfg.vae_decoder).run({ latent: { dtype: "float32", dims: [n, c, h, w], data: x } });
    return img.image as HostTensor;
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
