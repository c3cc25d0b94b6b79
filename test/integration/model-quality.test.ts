/**
 * The shipped emu2-tiny does its job through the TypeScript runtime: the model card's evaluation at
 * CI size (40 held-out cases per row, fresh world seeds, the independent pixel and text checkers).
 * Thresholds sit a safe margin below the full-run numbers on the card (models/emu2-tiny/README.md),
 * so a regression in the engines, the package or the world fails here.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { evaluate } from "../../models/eval.ts";

const PACKAGE_DIR = join(import.meta.dirname, "../../models/emu2-tiny");

/**
 * Minimum accuracy per row at n = 40 with the default (direct) decoder: the card's full-run numbers
 * for 1.5.0 (200 per row: caption 98.0, VQA 99.0, 2-shot 86.0, 4-shot 87.5, text→image 95.5,
 * subject 79.5, grounded 98.5, video 71.5) minus about three standard errors at n = 40, rounded
 * down to 5 points (rows near 100% keep a wider margin).
 */
const THRESHOLDS: Record<string, number> = {
  "captioning: every attribute right": 0.85,
  "VQA (all questions)": 0.85,
  "few-shot, 2-shot": 0.65,
  "few-shot, 4-shot": 0.7,
  "text→image: shape, colour, cell": 0.8,
  "subject-driven (image + edit → image)": 0.6,
  "box-grounded: centre inside the box": 0.85,
  "video: direction of motion": 0.5,
};

describe("emu2-tiny quality through the TypeScript runtime", () => {
  it("meets the CI thresholds on 40 held-out cases per row", async () => {
    const { rows, markdown } = await evaluate({ modelDir: PACKAGE_DIR, perTask: 40 });
    console.log(markdown);
    const byName = new Map(rows.map((r) => [r.capability, r]));
    for (const [name, min] of Object.entries(THRESHOLDS)) {
      const row = byName.get(name);
      assert.ok(row, `row ${name} missing`);
      assert.ok(row.n >= 40, `${name}: only ${row.n} cases`);
      assert.ok(row.accuracy >= min, `${name}: ${(100 * row.accuracy).toFixed(1)}% < ${100 * min}%`);
    }
    // In-context learning must come from the demonstrations: 0-shot stays near chance.
    const zero = byName.get("few-shot, 0-shot");
    assert.ok(zero && zero.accuracy <= 0.25, `0-shot ${zero?.accuracy} is above chance: labels leak`);
  });
});
