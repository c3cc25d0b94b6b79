/** Token choice: greedy, temperature, top-k, top-p, repetition penalty, and seeded reproducibility. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../shared/engine/random.ts";
import { applyRepetitionPenalty, chooseToken, DEFAULT_SAMPLING } from "../../shared/engine/sampling.ts";

const logits = (): Float32Array => Float32Array.from([2.0, 1.0, 0.5, -1.0, 3.0]);

describe("sampling", () => {
  it("greedy picks the largest logit", () => {
    assert.equal(chooseToken(logits(), DEFAULT_SAMPLING, [], new Rng(1)), 4);
  });

  it("top-k never leaves the k best; top-p keeps the smallest set reaching p", () => {
    const rng = new Rng(7);
    for (let i = 0; i < 300; i++) {
      const k2 = chooseToken(logits(), { ...DEFAULT_SAMPLING, temperature: 1, topK: 2 }, [], rng);
      assert.ok(k2 === 4 || k2 === 0, `top-k drew ${k2}`);
      // softmax of the logits: 4 ≈ .61, 0 ≈ .22 → top-p 0.5 keeps only token 4.
      assert.equal(chooseToken(logits(), { ...DEFAULT_SAMPLING, temperature: 1, topP: 0.5 }, [], rng), 4);
    }
  });

  it("temperature spreads the draws roughly as softmax(logits / T)", () => {
    const rng = new Rng(3);
    const counts = new Array<number>(5).fill(0);
    for (let i = 0; i < 4000; i++) counts[chooseToken(logits(), { ...DEFAULT_SAMPLING, temperature: 1 }, [], rng)]!++;
    const z = Array.from(logits(), Math.exp);
    const total = z.reduce((s, v) => s + v, 0);
    z.forEach((v, i) => assert.ok(Math.abs(counts[i]! / 4000 - v / total) < 0.03, `token ${i}: ${counts[i]! / 4000} vs ${v / total}`));
  });

  it("the same seed draws the same tokens", () => {
    const draw = (seed: number): number[] => {
      const rng = new Rng(seed);
      return Array.from({ length: 20 }, () => chooseToken(logits(), { ...DEFAULT_SAMPLING, temperature: 1.2, topK: 4 }, [], rng));
    };
    assert.deepEqual(draw(11), draw(11));
    assert.notDeepEqual(draw(11), draw(12));
  });

  it("repetition penalty divides positive and multiplies negative logits of seen tokens", () => {
    const l = logits();
    applyRepetitionPenalty(l, [4, 3, 4], 2);
    assert.deepEqual(Array.from(l), [2, 1, 0.5, -2, 1.5]);
    assert.equal(chooseToken(logits(), { ...DEFAULT_SAMPLING, repetitionPenalty: 2 }, [4], new Rng(1)), 0);
  });
});
