/**
 * The Shapes world: determinism, split separation, language coverage of the vocabulary, and the
 * independent checkers (pixel judge, caption parser, scorer) scoring ground truth as fully right.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmuTokenizer } from "../../shared/engine/tokenizer.ts";
import { analyseImage, judgeImage } from "../../models/world/checker.ts";
import { writeDataset } from "../../models/world/dataset.ts";
import { caption } from "../../models/world/language.ts";
import { renderScene } from "../../models/world/render.ts";
import { cellOf } from "../../models/world/scene.ts";
import { captionCorrect, scoreEvalDir, videoDirectionCorrect } from "../../models/world/score.ts";
import { TASKS, World, determinedByDemos, type Expectation, type Example } from "../../models/world/tasks.ts";
import type { ShapeObject } from "../../models/world/scene.ts";

const tokenizer = new EmuTokenizer(JSON.parse(readFileSync(join(import.meta.dirname, "../../models/emu2-tiny/tokenizer.json"), "utf8")) as object);

describe("Shapes world", () => {
  it("draws the same example for the same (split, task, index), and different ones across splits", () => {
    for (const task of TASKS) {
      const a = JSON.stringify(new World("train").example(task, 17));
      assert.equal(a, JSON.stringify(new World("train").example(task, 17)), task);
      assert.notEqual(a, JSON.stringify(new World("eval").example(task, 17)), task);
    }
  });

  it("says everything in words the tokenizer knows", () => {
    const unk = tokenizer.id("[UNK]");
    const world = new World("eval");
    for (const task of TASKS) {
      for (let i = 0; i < 300; i++) {
        for (const s of world.example(task, i).segments) {
          if (s.kind === "text") assert.ok(!tokenizer.encode(s.text).includes(unk), `${task} #${i}: ${s.text}`);
        }
      }
    }
  });

  it("pixel checker reads every attribute of real renders", () => {
    const world = new World("eval");
    for (let i = 0; i < 600; i++) {
      const scene = world.poolScene("scenes", i);
      const a = analyseImage(renderScene(scene));
      assert.equal(a.background, scene.background);
      assert.equal(a.objects.length, scene.objects.length, `scene ${i}`);
      scene.objects.forEach((o, k) => {
        const d = a.objects[k];
        assert.deepEqual([d?.shape, d?.color, d?.size, d?.cell], [o.shape, o.color, o.size, cellOf(o.x, o.y)], `scene ${i}`);
      });
      assert.ok(captionCorrect(caption(scene), scene));
    }
  });

  it("pixel checker rejects wrong images", () => {
    const world = new World("eval");
    const scene = world.poolScene("singles", 3);
    const o = scene.objects[0];
    assert.ok(o);
    const img = renderScene(scene);
    assert.equal(judgeImage(img, { shape: o.shape, color: o.color, cell: cellOf(o.x, o.y) }).ok, true);
    assert.equal(judgeImage(img, { shape: o.shape, color: o.color, cell: (cellOf(o.x, o.y) + 1) % 9 }).ok, false);
    assert.equal(judgeImage(new Uint8Array(64 * 64 * 3), { shape: o.shape, color: o.color, cell: 0 }).ok, false);
  });

  it("few-shot episodes with ≥ 2 shots show the query's label among the demonstrations", () => {
    const world = new World("eval");
    for (let i = 0; i < 200; i++) {
      const ex = world.fewshot(i, 2 + 2 * (i % 2));
      const e = ex.expect as Extract<Expectation, { kind: "fewshot" }>;
      assert.ok(e.labels.includes(e.answer), `episode ${i}`);
    }
  });

  it("few-shot lures: a training option whose lures look like the query, keep the answer determined, and leave evaluation's episodes alone", () => {
    assert.throws(() => new World("train", { fewshotLureShare: 1.5 }), /fewshotLureShare/);
    const plain = new World("train"), lured = new World("train", { fewshotLureShare: 1 });
    const shots = (world: World, ex: Example): { o: ShapeObject; label: string }[] => {
      const out: { o: ShapeObject; label: string }[] = [];
      ex.segments.forEach((s, i) => {
        const next = ex.segments[i + 1];
        if (s.kind === "image" && s.image.kind === "pool") {
          out.push({ o: world.poolScene(s.image.pool, s.image.index).objects[0] as ShapeObject, label: next?.kind === "text" ? next.text.split(" ")[0] as string : "" });
        }
      });
      return out;
    };
    let withLure = 0;
    for (let i = 0; i < 300; i++) {
      const a = plain.example("fewshot", i), b = lured.example("fewshot", i);
      const e = b.expect as Extract<Expectation, { kind: "fewshot" }>;
      if (JSON.stringify(a.segments) === JSON.stringify(b.segments)) continue;
      withLure++;
      assert.ok(e.shots >= 2 && e.labels.includes(e.answer), `episode ${i}`);
      const all = shots(lured, b), query = (all.at(-1) as { o: ShapeObject }).o, demos = all.slice(0, -1);
      // The labels follow the episode's attribute (expect.attr): equal values, equal labels.
      const attr = e.attr;
      assert.ok(demos.every((d) => demos.every((f) => (d.o[attr] === f.o[attr]) === (d.label === f.label))) &&
        demos.some((d) => d.o[attr] === query[attr] && d.label === e.answer), `episode ${i}: labels follow ${attr}`);
      const lure = demos.some((d) => d.label !== e.answer && cellOf(d.o.x, d.o.y) === cellOf(query.x, query.y) &&
        (["shape", "color", "size"] as const).every((k) => k === attr || d.o[k] === query[k]));
      assert.ok(lure, `episode ${i}: a lure looks like the query but for the labelled attribute`);
      assert.ok(determinedByDemos(demos.map((d) => d.o), query, attr), `episode ${i}: determined`);
    }
    assert.ok(withLure > 100, `${withLure} of 300 episodes got a lure`);
    // Without lures the episodes are those the world drew before the option existed (digest taken
    // from commit 94655de, before expectations named their attribute, so `attr` is left out of it):
    // evaluation's and the default training set's draws did not move.
    const digest = createHash("sha256"), evalWorld = new World("eval");
    const drawn = (ex: Example): string => {
      const { attr: _attr, ...expect } = ex.expect as Extract<Expectation, { kind: "fewshot" }>;
      return JSON.stringify({ ...ex, expect });
    };
    for (let i = 0; i < 100; i++) for (const k of [2, 4]) digest.update(drawn(evalWorld.fewshot(i, k)));
    for (let i = 0; i < 100; i++) digest.update(drawn(plain.example("fewshot", i)));
    assert.equal(digest.digest("hex"), "c54fbe999b548cc596be42d6ddfba27b0bbf34699d623176bd7d4acbe1a16f33");
  });

  it("scores ground-truth outputs as fully right (and a wrong video direction as wrong)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "emu-world-"));
    try {
      await writeDataset({ split: "eval", outDir: dir, tokenizer, tokensPerImage: 16, counts: Object.fromEntries(TASKS.map((t) => [t, 12])), fewshotShots: [2, 4] });
      const images = readFileSync(join(dir, "images.u8"));
      const outputs: string[] = [];
      const gen: Buffer[] = [];
      let k = 0;
      for (const task of TASKS) {
        const rows = readFileSync(join(dir, `${task}.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { ids: number[]; images: number[]; gen: boolean[]; prompt: number });
        rows.forEach((r, line) => {
          const generated = r.images.filter((_, i) => r.gen[i]);
          if (generated.length === 0) {
            outputs.push(JSON.stringify({ task, line, ids: r.ids.slice(r.prompt) }));
            return;
          }
          const ks = generated.map((img) => { gen.push(images.subarray(img * 12288, (img + 1) * 12288)); return k++; });
          outputs.push(JSON.stringify(task === "video" ? { task, line, frames: ks } : { task, line, image: ks[0] }));
        });
      }
      writeFileSync(join(dir, "outputs.jsonl"), outputs.join("\n") + "\n");
      writeFileSync(join(dir, "outputs.u8"), Buffer.concat(gen));
      const { rows } = scoreEvalDir(dir, tokenizer);
      assert.ok(rows.length >= 9);
      for (const r of rows) assert.equal(r.accuracy, 1, `${r.capability}: ${r.correct}/${r.n}`);
      // The video row splits by direction: one sub-row per direction drawn, the parts adding up to the whole.
      const byDirection = rows.filter((r) => r.capability.startsWith("  video: moving "));
      const drawn = readFileSync(join(dir, "video.jsonl"), "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { expect: { direction: string } }).expect.direction);
      assert.deepEqual(byDirection.map((r) => r.capability.slice("  video: moving ".length)).sort(), [...new Set(drawn)].sort());
      const video = rows.find((r) => r.capability === "video: direction of motion");
      assert.equal(byDirection.reduce((n, r) => n + r.n, 0), video?.n);
      // So do the 2- and 4-shot rows, by the attribute each episode's labels name.
      for (const k of [2, 4]) {
        const parts = rows.filter((r) => r.capability.startsWith(`  few-shot, ${k}-shot: `));
        assert.ok(parts.length >= 2 && parts.every((r) => ["shape", "color", "size"].includes(r.capability.split(": ")[1] ?? "")), `${k}-shot parts: ${parts.map((r) => r.capability).join("; ")}`);
        assert.equal(parts.reduce((n, r) => n + r.n, 0), rows.find((r) => r.capability === `few-shot, ${k}-shot`)?.n);
      }
      const frames = new World("eval").example("video", 0).segments.flatMap((s) => (s.kind === "generate" && s.image.kind === "scene" ? [renderScene(s.image.scene)] : []));
      const want = (new World("eval").example("video", 0).expect as Extract<Expectation, { kind: "video" }>).direction;
      assert.equal(videoDirectionCorrect(frames, want), true);
      assert.equal(videoDirectionCorrect([...frames].reverse(), want), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
