/**
 * Writes a split of the Shapes world for training or evaluation, tokenized once here:
 *   images.u8          N × 64 × 64 × 3 uint8 (HWC), every distinct image once
 *   images.jsonl       per image: what it shows (attribute ids for encoder training, or a box mask)
 *   <task>.jsonl       per example: token ids, the image index of each visual run, which runs are
 *                      regressed, text-loss spans, few-shot rows' labelled attribute, and (eval) the prompt length and
 *                      expectation
 *   meta.json          counts, special-token ids, tokens_per_image, the world's attribute lists
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync, createWriteStream, type WriteStream } from "node:fs";
import { join } from "node:path";
import { EmuTokenizer } from "../../shared/engine/tokenizer.ts";
import { renderBoxMask, renderScene } from "./render.ts";
import { BACKGROUNDS, COLORS, IMAGE_SIZE, SHAPES, SIZES, cellOf, sceneKey, type BoxMask, type Scene } from "./scene.ts";
import { SPECIAL_TOKENS } from "./vocab.ts";
import { TASKS, World, type Example, type ImageRef, type Split, type Task, type WorldOptions } from "./tasks.ts";

export interface DatasetOptions {
  split: Split;
  outDir: string;
  tokenizer: EmuTokenizer;
  tokensPerImage: number;
  /** Examples per task; tasks not listed are skipped. */
  counts: Partial<Record<Task, number>>;
  /** Shots per few-shot row in evaluation sets (one row per k). Default: training mixture. */
  fewshotShots?: number[];
  /** First example index (within the split) to draw. Default 0. */
  startIndex?: number;
  world?: WorldOptions;
  onProgress?: (task: Task, done: number, total: number) => void;
}

export interface DatasetSummary {
  images: number;
  examples: Record<string, number>;
  maxTokens: number;
}

export class ImageStore {
  private readonly index = new Map<string, number>();
  private readonly fd: number;
  private readonly meta: WriteStream;
  count = 0;

  constructor(private readonly world: World, dir: string) {
    this.fd = openSync(join(dir, "images.u8"), "w");
    this.meta = createWriteStream(join(dir, "images.jsonl"));
  }

  add(ref: ImageRef): number {
    const key = ref.kind === "pool" ? `pool:${ref.pool}:${ref.index}` : ref.kind === "scene" ? `scene:${sceneKey(ref.scene)}` : `mask:${ref.mask.box.join(",")}:${ref.mask.thicknessPx}`;
    const known = this.index.get(key);
    if (known !== undefined) return known;
    const resolved = ref.kind === "mask" ? ref.mask : this.world.resolve(ref);
    const pixels = ref.kind === "mask" ? renderBoxMask(ref.mask) : renderScene(resolved as Scene);
    writeSync(this.fd, pixels);
    this.meta.write(JSON.stringify(ref.kind === "mask" ? { mask: (resolved as BoxMask).box } : describeScene(resolved as Scene)) + "\n");
    const id = this.count++;
    this.index.set(key, id);
    return id;
  }

  async close(): Promise<void> {
    closeSync(this.fd);
    await new Promise<void>((resolve) => this.meta.end(resolve));
  }
}

/** Attribute ids (indices into meta.json's lists) and continuous centres, for encoder training. */
function describeScene(s: Scene): object {
  return {
    bg: BACKGROUNDS.indexOf(s.background),
    objects: s.objects.map((o) => ({
      shape: SHAPES.indexOf(o.shape), color: COLORS.indexOf(o.color), size: SIZES.indexOf(o.size),
      cell: cellOf(o.x, o.y), x: +(o.x / IMAGE_SIZE).toFixed(4), y: +(o.y / IMAGE_SIZE).toFixed(4),
    })),
  };
}

export interface EncodedExample {
  ids: number[];
  /** Image index per visual run, in order of appearance. */
  images: number[];
  /** Per visual run: true when its slots are regressed (generated), false for input images. */
  gen: boolean[];
  /** [start, end) token spans the text loss applies to (the token at t is predicted from t − 1). */
  loss: [number, number][];
  /** Tokens in the prompt (everything before the answer). */
  prompt: number;
}

export class SequenceEncoder {
  private readonly cache = new Map<string, number[]>();
  private readonly slot: Record<"image" | "frame", number>;
  private readonly imgStart: number;
  private readonly imgEnd: number;

  constructor(private readonly tokenizer: EmuTokenizer, private readonly tokensPerImage: number) {
    this.slot = { image: tokenizer.id("<image>"), frame: tokenizer.id("[gIMG]") };
    this.imgStart = tokenizer.id("[IMG]");
    this.imgEnd = tokenizer.id("[/IMG]");
  }

  private text(t: string): number[] {
    let ids = this.cache.get(t);
    if (!ids) {
      ids = this.tokenizer.encode(t);
      if (ids.includes(this.tokenizer.id("[UNK]"))) throw new Error(`world text has a word outside the vocabulary: ${JSON.stringify(t)}`);
      this.cache.set(t, ids);
    }
    return ids;
  }

  encode(ex: Example, imageId: (ref: ImageRef) => number): EncodedExample {
    const out: EncodedExample = { ids: [], images: [], gen: [], loss: [], prompt: 0 };
    ex.segments.forEach((seg, i) => {
      if (i === ex.promptLength) out.prompt = out.ids.length;
      if (seg.kind === "text") {
        const start = out.ids.length;
        out.ids.push(...this.text(seg.text));
        if (seg.loss) out.loss.push([start, out.ids.length]);
        return;
      }
      out.images.push(imageId(seg.image));
      out.gen.push(seg.kind === "generate");
      const slot = seg.kind === "generate" ? this.slot[seg.slot] : this.slot.image;
      out.ids.push(this.imgStart, ...new Array<number>(this.tokensPerImage).fill(slot), this.imgEnd);
    });
    if (ex.promptLength >= ex.segments.length) out.prompt = out.ids.length;
    return out;
  }
}

export async function writeDataset(opts: DatasetOptions): Promise<DatasetSummary> {
  mkdirSync(opts.outDir, { recursive: true });
  const world = new World(opts.split, opts.world);
  const store = new ImageStore(world, opts.outDir);
  const encoder = new SequenceEncoder(opts.tokenizer, opts.tokensPerImage);
  const summary: DatasetSummary = { images: 0, examples: {}, maxTokens: 0 };
  const start = opts.startIndex ?? 0;
  for (const task of TASKS) {
    const n = opts.counts[task] ?? 0;
    if (n <= 0) continue;
    const stream = createWriteStream(join(opts.outDir, `${task}.jsonl`));
    const shotsList = task === "fewshot" && opts.fewshotShots ? opts.fewshotShots : [null];
    let written = 0;
    for (const shots of shotsList) {
      for (let i = 0; i < n; i++) {
        const index = start + i;
        const ex = shots === null ? world.example(task, index) : world.fewshot(index, shots);
        const enc = encoder.encode(ex, (ref) => store.add(ref));
        summary.maxTokens = Math.max(summary.maxTokens, enc.ids.length);
        // Every split's few-shot rows name their labelled attribute (the LM's probe scores 4-shot per
        // attribute); evaluation rows also carry the whole expectation for the scorer.
        const attr = ex.expect.kind === "fewshot" ? { attr: ex.expect.attr } : {};
        const line = JSON.stringify({ index, ...enc, ...attr, ...(opts.split === "eval" ? { expect: ex.expect } : {}) });
        if (!stream.write(line + "\n")) await new Promise<void>((r) => stream.once("drain", () => r()));
        written++;
        if (written % 5000 === 0) opts.onProgress?.(task, written, n * shotsList.length);
      }
    }
    await new Promise<void>((resolve) => stream.end(resolve));
    summary.examples[task] = written;
    opts.onProgress?.(task, written, written);
  }
  await store.close();
  summary.images = store.count;
  writeFileSync(join(opts.outDir, "meta.json"), JSON.stringify({
    split: opts.split,
    image_size: IMAGE_SIZE,
    tokens_per_image: opts.tokensPerImage,
    vocab_size: opts.tokenizer.vocabSize,
    special_ids: Object.fromEntries(SPECIAL_TOKENS.map((t) => [t, opts.tokenizer.id(t)])),
    attributes: { shape: SHAPES, color: COLORS, size: SIZES, background: BACKGROUNDS },
    fewshot_lure_share: world.fewshotLureShare,
    ...summary,
  }, null, 1));
  return summary;
}
