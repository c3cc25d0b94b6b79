/**
 * Scores a model's outputs on an evaluation split written by `dataset --split eval`. Whatever runs
 * the model (the PyTorch evaluator or the TypeScript runtime) writes into the split's folder:
 *   outputs.jsonl   {task, line, ids?: number[], image?: k, frames?: k[]}  (line = row of <task>.jsonl)
 *   outputs.u8      generated images, 64 × 64 × 3 uint8 each, addressed by k
 * Text is decoded with the tokenizer; images are judged by the pixel checker only.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { EmuTokenizer } from "../../shared/engine/tokenizer.ts";
import { analyseImage, judgeImage, type DetectedObject } from "./checker.ts";
import { normaliseText, parseBackground, parseObjects } from "./language.ts";
import { IMAGE_SIZE, cellOf, type Scene } from "./scene.ts";
import { MIN_VIDEO_MOTION_PX, type Expectation } from "./tasks.ts";

export interface ScoreRow {
  capability: string;
  n: number;
  correct: number;
  accuracy: number;
  target: string;
}

interface OutputLine { task: string; line: number; ids?: number[]; image?: number; frames?: number[] }

const IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3;

export function captionCorrect(text: string, scene: Scene): boolean {
  const said = parseObjects(text);
  if (said.length !== scene.objects.length || parseBackground(text) !== scene.background) return false;
  const want = scene.objects.map((o) => `${o.shape},${o.color},${o.size},${cellOf(o.x, o.y)}`).sort();
  const got = said.map((o) => `${o.shape},${o.color},${o.size},${o.cell}`).sort();
  return want.every((w, i) => w === got[i]);
}

/** The answer part of a reply: up to the first sentence end. */
export function firstAnswer(text: string): string {
  return normaliseText(text).split(/ [.?!] | [.?!]$|<\/s>/)[0]?.replace(/[.,?!]/g, "").trim() ?? "";
}

function largest(objects: DetectedObject[]): DetectedObject | undefined {
  return objects.reduce<DetectedObject | undefined>((best, o) => (!best || o.pixels > best.pixels ? o : best), undefined);
}

export function videoDirectionCorrect(frames: Uint8Array[], direction: string): boolean {
  const first = largest(analyseImage(frames[0] as Uint8Array).objects);
  const last = largest(analyseImage(frames[frames.length - 1] as Uint8Array).objects);
  if (!first || !last) return false;
  const dx = last.x - first.x;
  const dy = last.y - first.y;
  const horizontal = Math.abs(dx) >= Math.abs(dy);
  const moved = Math.max(Math.abs(dx), Math.abs(dy)) >= MIN_VIDEO_MOTION_PX;
  const seen = horizontal ? (dx > 0 ? "right" : "left") : dy > 0 ? "down" : "up";
  return moved && seen === direction;
}

export function scoreEvalDir(dir: string, tokenizer: EmuTokenizer): { rows: ScoreRow[]; markdown: string } {
  const outputs = readFileSync(join(dir, "outputs.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as OutputLine);
  const gen = existsSync(join(dir, "outputs.u8")) ? readFileSync(join(dir, "outputs.u8")) : Buffer.alloc(0);
  const image = (k: number): Uint8Array => new Uint8Array(gen.buffer, gen.byteOffset + k * IMAGE_BYTES, IMAGE_BYTES);
  const examples = new Map<string, { expect: Expectation }[]>();
  const load = (task: string): { expect: Expectation }[] => {
    let rows = examples.get(task);
    if (!rows) {
      rows = readFileSync(join(dir, `${task}.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { expect: Expectation });
      examples.set(task, rows);
    }
    return rows;
  };
  const tally = new Map<string, { n: number; correct: number; target: string }>();
  const count = (capability: string, target: string, ok: boolean): void => {
    const t = tally.get(capability) ?? { n: 0, correct: 0, target };
    t.n++;
    if (ok) t.correct++;
    tally.set(capability, t);
  };
  for (const out of outputs) {
    const expect = (load(out.task)[out.line] as { expect: Expectation }).expect;
    const text = out.ids ? tokenizer.decode(out.ids, { skipSpecialTokens: false }) : "";
    switch (expect.kind) {
      case "caption":
        count("captioning: every attribute right", "≥ 90%", captionCorrect(text, expect.scene));
        break;
      case "text": {
        const ok = firstAnswer(text) === expect.answer;
        count("VQA (all questions)", "≥ 90%", ok);
        count(`  VQA: ${expect.question}`, "", ok);
        break;
      }
      case "fewshot": {
        const ok = firstAnswer(text).split(" ")[0] === expect.answer;
        count(`few-shot, ${expect.shots}-shot`, expect.shots === 0 ? "chance" : expect.shots === 2 ? "≥ 80%" : expect.shots === 4 ? "≥ 85%" : "rising", ok);
        // Per labelled attribute (eval sets written before `attr` existed have none): runs that
        // missed 4-shot missed it on one attribute, a different one per run (model card).
        if (expect.shots >= 2 && expect.attr) count(`  few-shot, ${expect.shots}-shot: ${expect.attr}`, "", ok);
        break;
      }
      case "image": {
        const name = out.task === "subject" ? "subject-driven (image + edit → image)" : "text→image: shape, colour, cell";
        count(name, out.task === "subject" ? "≥ 70%" : "≥ 80%", out.image !== undefined && judgeImage(image(out.image), expect).ok);
        break;
      }
      case "grounded": {
        const o = out.image !== undefined ? largest(analyseImage(image(out.image)).objects) : undefined;
        const [x0, y0, x1, y1] = expect.box.map((v) => v * IMAGE_SIZE) as [number, number, number, number];
        count("box-grounded: centre inside the box", "≥ 70%", !!o && o.x >= x0 && o.x <= x1 && o.y >= y0 && o.y <= y1);
        break;
      }
      case "video": {
        const ok = !!out.frames && videoDirectionCorrect(out.frames.map(image), expect.direction);
        count("video: direction of motion", "≥ 70%", ok);
        // Per direction: the runs that lost video lost it on horizontal motion (model card).
        count(`  video: moving ${expect.direction}`, "", ok);
        break;
      }
    }
  }
  const order = [...tally.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const rows = order.map((capability) => {
    const t = tally.get(capability) as { n: number; correct: number; target: string };
    return { capability, n: t.n, correct: t.correct, accuracy: t.correct / t.n, target: t.target };
  });
  const markdown = [
    "| capability | n | accuracy | target |",
    "|---|---|---|---|",
    ...rows.map((r) => `| ${r.capability} | ${r.n} | ${(100 * r.accuracy).toFixed(1)}% | ${r.target} |`),
  ].join("\n");
  return { rows, markdown };
}

function rank(capability: string): number {
  const keys = ["caption", "VQA (all", "  VQA", "few-shot", "  few-shot", "text→image", "subject", "box", "video", "  video"];
  const i = keys.findIndex((k) => capability.startsWith(k));
  return i < 0 ? keys.length : i;
}
