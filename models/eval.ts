/**
 * `npm run eval` — the model card's evaluation through the TypeScript runtime: the same held-out
 * world seeds and the same independent checkers as the PyTorch evaluation (models/training/evaluate.py),
 * with the engines doing the work (continuous batching for the LM, batched decoding).
 *
 *   npm run eval -- [--per-task 200] [--decoder diffusion|direct] [--guidance G] [--steps N]
 *                   [--model DIR] [--out DIR] [--tasks caption,vqa,…] [--json]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { ArBatch, type GenerationResult } from "../shared/engine/ar.engine.ts";
import { EmuModel } from "../shared/engine/emu-model.ts";
import { DEFAULT_MODEL_DIR } from "../shared/stage-config.ts";
import type { RgbImage } from "../shared/engine/image-codec.ts";
import { writeDataset } from "./world/dataset.ts";
import { scoreEvalDir, type ScoreRow } from "./world/score.ts";
import { TASKS, type Task } from "./world/tasks.ts";

export interface EvalOptions {
  modelDir: string;
  perTask: number;
  decoder?: string;
  guidance?: number;
  steps?: number;
  tasks?: Task[];
  /** Where the split and outputs go; a temporary folder (removed) when unset. */
  outDir?: string;
  log?: (line: string) => void;
}

interface Row { ids: number[]; images: number[]; gen: boolean[]; prompt: number }

const EVAL_SHOTS = [0, 1, 2, 4];

export async function evaluate(opts: EvalOptions): Promise<{ rows: ScoreRow[]; markdown: string }> {
  const dir = opts.outDir ?? mkdtempSync(join(tmpdir(), "emu-eval-"));
  const log = opts.log ?? (() => undefined);
  mkdirSync(dir, { recursive: true });
  const model = await EmuModel.load(opts.modelDir);
  try {
    const tasks = opts.tasks ?? [...TASKS];
    const m = model.manifest;
    await writeDataset({
      split: "eval", outDir: dir, tokenizer: model.tokenizer, tokensPerImage: m.encoder.tokens_per_image,
      counts: Object.fromEntries(tasks.map((t) => [t, opts.perTask])), fewshotShots: EVAL_SHOTS,
    });
    const pixels = readFileSync(join(dir, "images.u8"));
    const [w, h] = m.encoder.image_size;
    const imageAt = (k: number): RgbImage => ({ width: w, height: h, data: new Uint8Array(pixels.buffer, pixels.byteOffset + k * w * h * 3, w * h * 3) });
    writeFileSync(join(dir, "outputs.jsonl"), "");
    writeFileSync(join(dir, "outputs.u8"), "");
    let generated = 0;
    const negative = await model.reasoner!.unconditional();
    for (const task of tasks) {
      const t0 = Date.now();
      const rows = readFileSync(join(dir, `${task}.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Row);
      const mode = task === "video" ? "video" : ["t2i", "subject", "grounded"].includes(task) ? "image" : "text";
      const frames = mode === "video" ? m.video.frames : 1;
      // Encode the prompt images, then run every row through one continuous batch.
      const batch = new ArBatch(model.reasoner!);
      const pending: Promise<GenerationResult>[] = [];
      for (const r of rows) {
        const inputs = r.images.filter((_, i) => !r.gen[i]);
        const images = await model.encoder!.encodePrepared(inputs.map(imageAt));
        // The world's prompt stops before the generated image; image mode continues from `[IMG]`
        // (as SequenceBuilder.build("image") ends), video mode from `[VIDEO]`.
        const ids = mode === "image" ? [...r.ids.slice(0, r.prompt), model.builder.ids.imgStart] : r.ids.slice(0, r.prompt);
        pending.push(batch.add({
          sequence: { ids, images: inputs.map(() => ({ kind: "bytes" as const, data: new Uint8Array(0) })) },
          images, mode, frames, text: { maxNewTokens: 40 },
        }));
        if (batch.size >= 64) await batch.step();
      }
      while (batch.size > 0) await batch.step();
      const results = await Promise.all(pending);
      const lines: string[] = [];
      if (mode === "text") {
        results.forEach((res, line) => lines.push(JSON.stringify({ task, line, ids: res.tokens })));
      } else {
        const perImage = m.encoder.tokens_per_image * m.encoder.dim;
        for (let s = 0; s < results.length; s += 32) {
          const chunk = results.slice(s, s + 32);
          const count = chunk.length * frames;
          const embeddings = new Float32Array(count * perImage);
          chunk.forEach((res, i) => embeddings.set(res.visual, i * frames * perImage));
          const pics = await model.decoder!.decode({
            embeddings, count, negative, decoder: opts.decoder, guidanceScale: opts.guidance, steps: opts.steps, seed: s,
          });
          appendFileSync(join(dir, "outputs.u8"), Buffer.concat(pics.map((p) => p.data)));
          chunk.forEach((_, i) => {
            const ks = Array.from({ length: frames }, (_, f) => generated + i * frames + f);
            lines.push(JSON.stringify(mode === "video" ? { task, line: s + i, frames: ks } : { task, line: s + i, image: ks[0] }));
          });
          generated += count;
        }
      }
      appendFileSync(join(dir, "outputs.jsonl"), lines.join("\n") + "\n");
      log(`${task}: ${rows.length} examples in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    return scoreEvalDir(dir, model.tokenizer);
  } finally {
    await model.close();
    if (!opts.outDir) rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "per-task": { type: "string", default: "200" }, decoder: { type: "string" }, guidance: { type: "string" },
      steps: { type: "string" }, model: { type: "string" }, out: { type: "string" }, tasks: { type: "string" }, json: { type: "boolean" },
    },
  });
  const t0 = Date.now();
  const res = await evaluate({
    modelDir: values.model ?? process.env.EMU_MODEL_DIR ?? DEFAULT_MODEL_DIR,
    perTask: Number(values["per-task"]),
    decoder: values.decoder,
    guidance: values.guidance ? Number(values.guidance) : undefined,
    steps: values.steps ? Number(values.steps) : undefined,
    tasks: values.tasks ? (values.tasks.split(",") as Task[]) : undefined,
    outDir: values.out,
    log: (l) => process.stderr.write(l + "\n"),
  });
  console.log(values.json ? JSON.stringify(res.rows, null, 1) : res.markdown);
  process.stderr.write(`evaluated in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
