/**
 * Diffusion schedulers driven by the manifest's scheduler config (Emu2 uses Euler; emu2-tiny ships
 * DDIM): timestep selection, the initial noise scale, input scaling and the update rule, following
 * diffusers' DDIMScheduler (eta 0, set_alpha_to_one false) and EulerDiscreteScheduler (no Karras).
 */
export interface SchedulerConfig {
  type: "ddim" | "euler";
  train_timesteps: number;
  beta_schedule: "scaled_linear" | "linear";
  beta_start: number;
  beta_end: number;
  prediction_type: "epsilon" | "v_prediction" | "sample";
  timestep_spacing: "leading" | "trailing" | "linspace";
  steps_offset: number;
}

export interface Scheduler {
  readonly timesteps: number[];
  readonly initNoiseSigma: number;
  /** Scales the latent before the UNet call at step i. */
  scaleInput(x: Float32Array, i: number): Float32Array;
  /** The latent after step i, given the (guided) model output. */
  step(modelOutput: Float32Array, i: number, x: Float32Array): Float32Array;
}

export function alphasCumprod(cfg: SchedulerConfig): Float64Array {
  const n = cfg.train_timesteps;
  const out = new Float64Array(n);
  let prod = 1;
  for (let i = 0; i < n; i++) {
    const beta = cfg.beta_schedule === "scaled_linear"
      ? (Math.sqrt(cfg.beta_start) + ((Math.sqrt(cfg.beta_end) - Math.sqrt(cfg.beta_start)) * i) / (n - 1)) ** 2
      : cfg.beta_start + ((cfg.beta_end - cfg.beta_start) * i) / (n - 1);
    prod *= 1 - beta;
    out[i] = prod;
  }
  return out;
}

export function selectTimesteps(cfg: SchedulerConfig, steps: number): number[] {
  const n = cfg.train_timesteps;
  if (cfg.timestep_spacing === "leading") {
    const ratio = Math.floor(n / steps);
    return Array.from({ length: steps }, (_, i) => i * ratio + cfg.steps_offset).reverse();
  }
  if (cfg.timestep_spacing === "trailing") {
    const ratio = n / steps;
    return Array.from({ length: steps }, (_, i) => Math.round(n - i * ratio) - 1);
  }
  return Array.from({ length: steps }, (_, i) => Math.round(((n - 1) * (steps - 1 - i)) / Math.max(1, steps - 1)));
}

function toEpsilonAndX0(cfg: SchedulerConfig, out: Float32Array, x: Float32Array, a: number): { eps: Float32Array; x0: Float32Array } {
  const sa = Math.sqrt(a);
  const sb = Math.sqrt(1 - a);
  const eps = new Float32Array(x.length);
  const x0 = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const m = out[i] as number;
    const xi = x[i] as number;
    if (cfg.prediction_type === "epsilon") { eps[i] = m; x0[i] = (xi - sb * m) / sa; }
    else if (cfg.prediction_type === "sample") { x0[i] = m; eps[i] = (xi - sa * m) / sb; }
    else { x0[i] = sa * xi - sb * m; eps[i] = sa * m + sb * xi; }
  }
  return { eps, x0 };
}

class DdimScheduler implements Scheduler {
  readonly timesteps: number[];
  readonly initNoiseSigma = 1;
  private readonly ac: Float64Array;

  constructor(private readonly cfg: SchedulerConfig, steps: number) {
    this.ac = alphasCumprod(cfg);
    this.timesteps = selectTimesteps(cfg, steps);
  }

  scaleInput(x: Float32Array): Float32Array {
    return x;
  }

  step(out: Float32Array, i: number, x: Float32Array): Float32Array {
    const t = this.timesteps[i] as number;
    const prev = this.timesteps[i + 1];
    const a = this.ac[t] as number;
    const aPrev = prev !== undefined ? (this.ac[prev] as number) : (this.ac[0] as number);
    const { eps, x0 } = toEpsilonAndX0(this.cfg, out, x, a);
    const res = new Float32Array(x.length);
    const sa = Math.sqrt(aPrev);
    const sb = Math.sqrt(1 - aPrev);
    for (let k = 0; k < x.length; k++) res[k] = sa * (x0[k] as number) + sb * (eps[k] as number);
    return res;
  }
}

class EulerScheduler implements Scheduler {
  readonly timesteps: number[];
  readonly initNoiseSigma: number;
  private readonly sigmas: number[];

  constructor(private readonly cfg: SchedulerConfig, steps: number) {
    const ac = alphasCumprod(cfg);
    this.timesteps = selectTimesteps(cfg, steps);
    this.sigmas = [...this.timesteps.map((t) => Math.sqrt((1 - (ac[t] as number)) / (ac[t] as number))), 0];
    const max = Math.max(...this.sigmas);
    this.initNoiseSigma = cfg.timestep_spacing === "linspace" || cfg.timestep_spacing === "trailing" ? max : Math.sqrt(max * max + 1);
  }

  scaleInput(x: Float32Array, i: number): Float32Array {
    const s = this.sigmas[i] as number;
    const k = 1 / Math.sqrt(s * s + 1);
    return x.map((v) => v * k);
  }

  step(out: Float32Array, i: number, x: Float32Array): Float32Array {
    const s = this.sigmas[i] as number;
    const next = this.sigmas[i + 1] as number;
    const res = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      const m = out[k] as number;
      const xi = x[k] as number;
      const x0 = this.cfg.prediction_type === "epsilon" ? xi - s * m
        : this.cfg.prediction_type === "sample" ? m
        : m * (-s / Math.sqrt(s * s + 1)) + xi / (s * s + 1);
      const d = (xi - x0) / s;
      res[k] = xi + d * (next - s);
    }
    return res;
  }
}

export function createScheduler(cfg: SchedulerConfig, steps: number): Scheduler {
  return cfg.type === "ddim" ? new DdimScheduler(cfg, steps) : new EulerScheduler(cfg, steps);
}
