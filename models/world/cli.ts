/**
 * The Shapes world's command line (`npm run world -- <command>`):
 *   tokenizer --out FILE                     write emu2-tiny's tokenizer.json
 *   dataset --split train|eval --out DIR     write a tokenized split (see dataset.ts)
 *           [--tokenizer FILE] [--scale X] [--per-task N] [--tokens-per-image N]
 *           [--fewshot-lures SHARE]          train only: few-shot lures (WorldOptions.fewshotLureShare)
 *   score DIR                                score model outputs of an eval split (see score.ts)
 */
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { EmuTokenizer } from "../../shared/engine/tokenizer.ts";
import { buildTokenizerJson } from "./vocab.ts";
import { writeDataset } from "./dataset.ts";
import { TASKS, type Task } from "./tasks.ts";
import { scoreEvalDir } from "./score.ts";

/** Training examples per task at --scale 1 (the mixture of the model card). */
export const TRAIN_COUNTS: Record<Task, number> = {
  caption: 30_000, vqa: 100_000, fewshot: 240_000, t2i: 40_000, subject: 40_000, grounded: 30_000, video: 12_000,
};
export const EVAL_SHOTS = [0, 1, 2, 4];
const DEFAULT_TOKENIZER = join(dirname(new URL(import.meta.url).pathname), "../emu2-tiny/tokenizer.json");

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      split: { type: "string", default: "train" },
      tokenizer: { type: "string", default: DEFAULT_TOKENIZER },
      scale: { type: "string", default: "1" },
      "per-task": { type: "string" },
      "tokens-per-image": { type: "string", default: "16" },
      "start-index": { type: "string", default: "0" },
      "fewshot-lures": { type: "string", default: "0" },
    },
  });
  switch (command) {
    case "tokenizer": {
      const out = values.out ?? DEFAULT_TOKENIZER;
      mkdirSync(dirname(out), { recursive: true });
      const json = buildTokenizerJson();
      writeFileSync(out, JSON.stringify(json, null, 1) + "\n");
      console.log(`wrote ${out}: ${Object.keys(json.model.vocab).length} tokens`);
      return;
    }
    case "dataset": {
      if (!values.out) throw new Error("dataset needs --out DIR");
      const split = values.split === "eval" ? "eval" : values.split === "train" ? "train" : null;
      if (!split) throw new Error(`--split must be train or eval, not ${values.split}`);
      const tokenizer = new EmuTokenizer(JSON.parse(readFileSync(values.tokenizer, "utf8")) as object);
      const perTask = values["per-task"] ? Number(values["per-task"]) : null;
      const scale = Number(values.scale);
      const counts = Object.fromEntries(
        TASKS.map((t) => [t, perTask ?? Math.round(TRAIN_COUNTS[t] * scale)]),
      ) as Record<Task, number>;
      const lures = Number(values["fewshot-lures"]);
      if (!(lures >= 0 && lures <= 1)) throw new Error(`--fewshot-lures must be a share in [0, 1], not ${values["fewshot-lures"]}`);
      if (lures > 0 && split === "eval") throw new Error("--fewshot-lures is for training sets: evaluation keeps the natural episodes");
      const t0 = Date.now();
      const summary = await writeDataset({
        split, outDir: values.out, tokenizer, counts,
        tokensPerImage: Number(values["tokens-per-image"]),
        startIndex: Number(values["start-index"]),
        ...(split === "eval" ? { fewshotShots: EVAL_SHOTS } : {}),
        world: { fewshotLureShare: lures },
        onProgress: (task, done, total) => process.stderr.write(`\r${task}: ${done}/${total}        ${done === total ? "\n" : ""}`),
      });
      console.log(`wrote ${values.out} in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${summary.images} images, ` +
        `${JSON.stringify(summary.examples)}, longest sequence ${summary.maxTokens} tokens`);
      return;
    }
    case "score": {
      const dir = positionals[0];
      if (!dir) throw new Error("score needs the eval directory");
      const tokenizer = new EmuTokenizer(JSON.parse(readFileSync(values.tokenizer, "utf8")) as object);
      const table = scoreEvalDir(dir, tokenizer);
      console.log(table.markdown);
      writeFileSync(join(dir, "scores.json"), JSON.stringify(table.rows, null, 1));
      return;
    }
    default:
      console.error("usage: npm run world -- tokenizer|dataset|score …  (see models/world/cli.ts)");
      process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
