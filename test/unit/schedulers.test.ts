/**
 * Scheduler numbers for Stable Diffusion / SDXL's configuration (scaled_linear 0.00085–0.012, 1000
 * steps, "leading" spacing, steps_offset 1: timesteps 981, 961 … 1; final ᾱ 0.00466), and the update
 * rules on a case with a known answer: a model that predicts the true noise recovers the clean sample.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { alphasCumprod, createScheduler, selectTimesteps, type SchedulerConfig } from "../../shared/engine/schedulers.ts";

const SDXL: SchedulerConfig = {
  type: "euler", train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012,
  prediction_type: "epsilon", timestep_spacing: "leading", steps_offset: 1,
};

describe("schedulers", () => {
  it("select diffusers' timesteps and sigmas", () => {
    const ts = selectTimesteps(SDXL, 50);
    assert.equal(ts.length, 50);
    assert.deepEqual([ts[0], ts[1], ts.at(-1)], [981, 961, 1]);
    const ac = alphasCumprod(SDXL);
    assert.ok(Math.abs(ac[999]! - 0.0046600) < 1e-6, `alphas_cumprod[999] = ${ac[999]}`);
    const euler = createScheduler(SDXL, 50);
    const sigmaMax = Math.sqrt((1 - ac[981]!) / ac[981]!);
    assert.ok(Math.abs(euler.initNoiseSigma - Math.sqrt(sigmaMax * sigmaMax + 1)) < 1e-9);
  });

  for (const type of ["ddim", "euler"] as const) {
    it(`${type}: a perfect ε-model walks noise back to the clean sample`, () => {
      const cfg = { ...SDXL, type };
      const steps = 30;
      const s = createScheduler(cfg, steps);
      const ac = alphasCumprod(cfg);
      const x0 = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
      const eps = Float32Array.from({ length: 64 }, (_, i) => Math.cos(3 * i));
      // Start at the first timestep's marginal for this (x0, eps) pair, in the scheduler's own scaling.
      const t0 = s.timesteps[0]!;
      const a = ac[t0]!;
      let x: Float32Array = Float32Array.from(x0, (v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * eps[i]!);
      if (type === "euler") x = x.map((v) => v / Math.sqrt(a));
      for (let i = 0; i < steps; i++) {
        s.scaleInput(x, i);
        x = s.step(eps, i, x);
      }
      const final = x;
      let err = 0;
      // DDIM ends at alphas_cumprod[0] (set_alpha_to_one false): within sqrt(1 - ac[0]) of x0.
      for (let i = 0; i < 64; i++) err = Math.max(err, Math.abs(final[i]! - x0[i]!));
      assert.ok(err < 0.05, `${type}: max |x − x0| = ${err}`);
    });
  }
});
