/**
 * Examples for every capability emu2-tiny is trained and evaluated on, as segment lists that the
 * dataset writer tokenizes. Each example is a pure function of (split, task, index).
 */
import { Rng, seedOf } from "../../shared/engine/random.ts";
import {
  BACKGROUNDS, COLORS, DIRECTIONS, IMAGE_SIZE, SHAPES, SIZES, cellCentre, clampCentre, place, randomScene,
  randomSpec, RADIUS,
  type Background, type BoxMask, type Direction, type ObjectSpec, type Scene, type ShapeObject,
} from "./scene.ts";
import {
  CAPTION_PROMPTS, DEFAULT_BACKGROUND, DEFAULT_SIZE, DIRECTION_PHRASES, NONCE_WORDS, askQuestion, caption,
  describeObject, generationPrompt, positionPhrase, type GenerationRequest, type Question,
} from "./language.ts";

export const SPLITS = {
  /** Example indices 0 … 999,999,999 of each task. */
  train: 0,
  /** Example indices 1,000,000,000 … : never drawn for training. */
  eval: 1_000_000_000,
} as const;
export type Split = keyof typeof SPLITS;

export const TASKS = ["caption", "vqa", "fewshot", "t2i", "subject", "grounded", "video"] as const;
export type Task = (typeof TASKS)[number];

/** Images of the natural-scene pools are addressed by index; both pools are split like examples. */
export const POOLS = { scenes: 100, singles: 101 } as const;
export type PoolName = keyof typeof POOLS;

export type ImageRef =
  | { kind: "pool"; pool: PoolName; index: number }
  | { kind: "scene"; scene: Scene }
  | { kind: "mask"; mask: BoxMask };

/**
 * A segment of a sequence. Text may contain the tokenizer's special tokens ("[USER]:"); `loss`
 * marks text the model is trained to produce. `image` is an input image (`[IMG] <image>×N [/IMG]`);
 * `generate` is an image (slot `<image>`) or video frame (slot `[gIMG]`) whose N embeddings the model
 * regresses.
 */
export type Segment =
  | { kind: "text"; text: string; loss?: boolean }
  | { kind: "image"; image: ImageRef }
  | { kind: "generate"; image: ImageRef; slot: "image" | "frame" };

/** What an evaluation needs to score the model's output for one example. */
export type Expectation =
  | { kind: "text"; answer: string; question?: Question["kind"] }
  | { kind: "caption"; scene: Scene }
  | { kind: "fewshot"; answer: string; shots: number; labels: string[]; attr: FewshotAttr }
  | { kind: "image"; shape: string; color: string; cell: number; background: Background }
  | { kind: "grounded"; box: [number, number, number, number]; shape: string; color: string }
  | { kind: "video"; direction: Direction; shape: string; color: string };

export interface Example {
  task: Task;
  index: number;
  segments: Segment[];
  /** The prompt (segments before the answer) for evaluation; the answer's segments follow. */
  promptLength: number;
  expect: Expectation;
}

export interface WorldOptions {
  /** Distinct natural scenes (1–2 shapes) per split. Default 40,000. */
  scenePoolSize?: number;
  /** Distinct single-shape scenes per split, used by few-shot episodes. Default 16,000. */
  singlePoolSize?: number;
  /** Frames per generated video. Default 8. */
  videoFrames?: number;
  /** Box-mask outline thickness in pixels. Default 2. */
  boxMaskThicknessPx?: number;
  /**
   * Share of few-shot episodes with ≥ 2 shots that hold a *lure*: a demonstration that looks like
   * the query in everything but the episode's attribute (same cell, same other two attributes), so
   * its label is wrong for the query. Copying the label of the demonstration that looks most alike
   * then fails, and only comparing the demonstrations on the episode's attribute answers. Default 0
   * (the episodes of every split so far); a training-set option, never set for evaluation.
   */
  fewshotLureShare?: number;
}

const TASK_SEED: Record<Task, number> = {
  caption: 1, vqa: 2, fewshot: 3, t2i: 4, subject: 5, grounded: 6, video: 7,
};

export class World {
  readonly split: Split;
  readonly scenePoolSize: number;
  readonly singlePoolSize: number;
  readonly videoFrames: number;
  readonly boxMaskThicknessPx: number;
  readonly fewshotLureShare: number;

  constructor(split: Split, opts: WorldOptions = {}) {
    this.split = split;
    this.scenePoolSize = opts.scenePoolSize ?? 40_000;
    this.singlePoolSize = opts.singlePoolSize ?? 16_000;
    this.videoFrames = opts.videoFrames ?? 8;
    this.boxMaskThicknessPx = opts.boxMaskThicknessPx ?? 2;
    this.fewshotLureShare = opts.fewshotLureShare ?? 0;
    if (!(this.fewshotLureShare >= 0 && this.fewshotLureShare <= 1)) {
      throw new Error(`fewshotLureShare must lie in [0, 1], not ${opts.fewshotLureShare}`);
    }
  }

  private rng(stream: number, index: number): Rng {
    return new Rng(seedOf(stream, SPLITS[this.split] + index));
  }

  poolScene(pool: PoolName, index: number): Scene {
    return randomScene(this.rng(POOLS[pool], index), pool === "singles" ? { objects: 1 } : {});
  }

  resolve(ref: ImageRef): Scene | BoxMask {
    if (ref.kind === "pool") return this.poolScene(ref.pool, ref.index);
    return ref.kind === "scene" ? ref.scene : ref.mask;
  }

  example(task: Task, index: number): Example {
    const rng = this.rng(TASK_SEED[task], index);
    switch (task) {
      case "caption": return this.captionExample(rng, index);
      case "vqa": return this.vqaExample(rng, index);
      case "fewshot": return this.fewshotExample(rng, index);
      case "t2i": return this.t2iExample(rng, index);
      case "subject": return this.subjectExample(rng, index);
      case "grounded": return this.groundedExample(rng, index);
      case "video": return this.videoExample(rng, index);
    }
  }

  private sceneRef(rng: Rng): { ref: ImageRef; scene: Scene } {
    const index = rng.int(this.scenePoolSize);
    return { ref: { kind: "pool", pool: "scenes", index }, scene: this.poolScene("scenes", index) };
  }

  private captionExample(rng: Rng, index: number): Example {
    const { ref, scene } = this.sceneRef(rng);
    const target = caption(scene);
    const prompt = rng.pick(CAPTION_PROMPTS);
    const segments: Segment[] = rng.bool(0.5)
      // Base-model style, as Emu2's captioning prompt: image then instruction, no template.
      ? [{ kind: "text", text: "<s>" }, { kind: "image", image: ref }, { kind: "text", text: prompt }]
      : [{ kind: "text", text: "<s>[USER]:" }, { kind: "image", image: ref }, { kind: "text", text: `${prompt} [ASSISTANT]:` }];
    const promptLength = segments.length;
    segments.push({ kind: "text", text: `${target} </s>`, loss: true });
    return { task: "caption", index, segments, promptLength, expect: { kind: "caption", scene } };
  }

  /** Chat about an image: 1–3 turns; the last turn is the one evaluated. */
  private vqaExample(rng: Rng, index: number): Example {
    const { ref, scene } = this.sceneRef(rng);
    const turns = 1 + rng.weighted([0.6, 0.25, 0.15]);
    const segments: Segment[] = [{ kind: "text", text: "<s>[USER]:" }];
    const imageFirst = rng.bool(0.8);
    let last: Question | null = null;
    for (let t = 0; t < turns; t++) {
      const q = askQuestion(rng, scene);
      if (t > 0) segments.push({ kind: "text", text: "[USER]:" });
      if (t === 0 && imageFirst) segments.push({ kind: "image", image: ref });
      segments.push({ kind: "text", text: q.text });
      if (t === 0 && !imageFirst) segments.push({ kind: "image", image: ref });
      segments.push({ kind: "text", text: "[ASSISTANT]:" });
      if (t < turns - 1) segments.push({ kind: "text", text: `${q.answer} </s>`, loss: true });
      last = q;
    }
    const q = last as Question;
    const promptLength = segments.length;
    segments.push({ kind: "text", text: `${q.answer} </s>`, loss: true });
    return { task: "vqa", index, segments, promptLength, expect: { kind: "text", answer: q.answer, question: q.kind } };
  }

  /**
   * A few-shot episode, base-model style: `<image> dax . <image> wug . <image>` → `dax .`. The nonce
   * labels name the values of one attribute (shape, colour or size) chosen per episode, so only the
   * demonstrations tell the model what a label means. With ≥ 2 shots one demonstration shares the
   * query's value. Labels are trained only where they are determined by what came before.
   */
  private fewshotExample(rng: Rng, index: number, shots?: number): Example {
    const k = shots ?? [0, 1, 2, 4][rng.weighted([0.05, 0.15, 0.3, 0.5])] as number;
    const attr = rng.pick(FEWSHOT_ATTRS);
    const values: readonly string[] = attr === "shape" ? SHAPES : attr === "color" ? COLORS : SIZES;
    const nonce = rng.sample(NONCE_WORDS, values.length);
    const labelOf = new Map(values.map((v, i) => [v, nonce[i] as string]));
    const drawImage = (like?: (o: ShapeObject) => boolean): { ref: ImageRef; value: string; o: ShapeObject } => {
      for (let tries = 0; tries < 50 * this.singlePoolSize; tries++) {
        const idx = rng.int(this.singlePoolSize);
        const o = this.poolScene("singles", idx).objects[0] as ShapeObject;
        if (!like || like(o)) return { ref: { kind: "pool", pool: "singles", index: idx }, value: o[attr], o };
      }
      throw new Error(`few-shot episode ${index}: no single-shape scene of the pool (${this.singlePoolSize}) fits; use a larger singlePoolSize`);
    };
    const query = drawImage();
    const demos = Array.from({ length: k }, () => drawImage());
    if (k >= 2 && !demos.some((d) => d.value === query.value)) demos[rng.int(k)] = drawImage((o) => o[attr] === query.value);
    // The episode's last draws: without lures (rng.bool(0) is false) its draws are as before.
    if (k >= 2 && rng.bool(this.fewshotLureShare)) {
      const keep = demos.findIndex((d) => d.value === query.value);
      const slot = (keep + 1 + rng.int(k - 1)) % k;
      const cell = cellOfObject(query.o);
      const lure = drawImage((o) => o[attr] !== query.value && cellOfObject(o) === cell &&
        FEWSHOT_ATTRS.every((a) => a === attr || o[a] === query.o[a]));
      const withLure = demos.map((d, i) => (i === slot ? lure : d));
      // Only where the demonstrations still determine the answer: a lure must not teach a guess.
      if (determinedByDemos(withLure.map((d) => d.o), query.o, attr)) demos.splice(0, k, ...withLure);
    }
    const segments: Segment[] = [{ kind: "text", text: "<s>" }];
    const seen = new Set<string>();
    for (const d of demos) {
      segments.push({ kind: "image", image: d.ref });
      segments.push({ kind: "text", text: `${labelOf.get(d.value)} .`, loss: seen.has(d.value) });
      seen.add(d.value);
    }
    segments.push({ kind: "image", image: query.ref });
    const promptLength = segments.length;
    const answer = labelOf.get(query.value) as string;
    segments.push({ kind: "text", text: `${answer} .`, loss: seen.has(query.value) });
    return {
      task: "fewshot", index, segments, promptLength,
      expect: { kind: "fewshot", answer, shots: k, labels: [...new Set(demos.map((d) => labelOf.get(d.value) as string))], attr },
    };
  }

  /** Few-shot examples with a fixed number of shots (evaluation rows per k). */
  fewshot(index: number, shots: number): Example {
    return this.fewshotExample(this.rng(TASK_SEED.fewshot, index), index, shots);
  }

  private generationTarget(req: GenerationRequest): Scene {
    const spec: ObjectSpec = { shape: req.shape, color: req.color, size: req.size ?? DEFAULT_SIZE, cell: req.cell };
    return { background: req.background ?? DEFAULT_BACKGROUND, objects: [place(spec)] };
  }

  private randomRequest(rng: Rng): GenerationRequest {
    const s = randomSpec(rng);
    return {
      shape: s.shape, color: s.color, cell: s.cell,
      size: rng.bool(0.6) ? s.size : null,
      background: rng.bool(0.35) ? rng.pick(BACKGROUNDS) : null,
    };
  }

  /** Text → image: the prompt, then `[IMG]` and the regressed slots. */
  private t2iExample(rng: Rng, index: number): Example {
    const req = this.randomRequest(rng);
    const target = this.generationTarget(req);
    const segments: Segment[] = [{ kind: "text", text: `<s>${generationPrompt(rng, req)}` }];
    return this.withGenerated("t2i", index, segments, target);
  }

  /** Image + edit text → image ("the same shape in blue at the bottom"). */
  private subjectExample(rng: Rng, index: number): Example {
    const srcIdx = rng.int(this.singlePoolSize);
    const src = this.poolScene("singles", srcIdx);
    const o = src.objects[0] as ShapeObject;
    const srcCell = cellOfObject(o);
    let changeColor = rng.bool(0.6);
    let changeCell = rng.bool(0.6);
    const changeSize = rng.bool(0.25);
    if (!changeColor && !changeCell) {
      if (rng.bool()) changeColor = true;
      else changeCell = true;
    }
    const color = changeColor ? rng.pick(COLORS.filter((c) => c !== o.color)) : o.color;
    const cell = changeCell ? rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 8].filter((c) => c !== srcCell)) : srcCell;
    const size = changeSize ? (o.size === "large" ? "small" : "large") : o.size;
    const comma = rng.bool(0.3) ? " ," : "";
    let text = rng.pick(["the same shape", "the same shape", "the same object"]);
    if (changeSize) text += ` but ${size}`;
    if (changeColor) text += `${comma} ${rng.pick(["in", "in", "colored"])} ${color}`;
    if (changeCell) text += `${comma} ${positionPhrase(rng, cell)}`;
    const target: Scene = { background: src.background, objects: [place({ shape: o.shape, color, size, cell })] };
    const segments: Segment[] = [
      { kind: "text", text: "<s>" },
      { kind: "image", image: { kind: "pool", pool: "singles", index: srcIdx } },
      { kind: "text", text },
    ];
    return this.withGenerated("subject", index, segments, target);
  }

  /**
   * Box-grounded generation as Emu2 writes it:
   * `<grounding><phrase>a red circle</phrase><object>[mask image]</object>` → image with the shape in the box.
   */
  private groundedExample(rng: Rng, index: number): Example {
    const cell = rng.int(9);
    const c = cellCentre(cell);
    const side = rng.range(0.24, 0.46) * IMAGE_SIZE;
    const size = side >= 0.34 * IMAGE_SIZE ? "large" : "small";
    const spec = { shape: rng.pick(SHAPES), color: rng.pick(COLORS), size } as const;
    const centre = clampCentre(spec, c.x + rng.range(-3, 3), c.y + rng.range(-3, 3));
    const half = side / 2;
    const box: [number, number, number, number] = [
      Math.max(0, (centre.x - half) / IMAGE_SIZE), Math.max(0, (centre.y - half) / IMAGE_SIZE),
      Math.min(1, (centre.x + half) / IMAGE_SIZE), Math.min(1, (centre.y + half) / IMAGE_SIZE),
    ];
    const q = (v: number): number => Math.round(v * 100) / 100;
    const qbox = box.map(q) as [number, number, number, number];
    const bg = rng.bool(0.35) ? rng.pick(BACKGROUNDS) : null;
    const target: Scene = { background: bg ?? DEFAULT_BACKGROUND, objects: [{ ...spec, x: centre.x, y: centre.y }] };
    const phrase = describeObject(spec, rng.bool(0.5));
    const segments: Segment[] = [
      { kind: "text", text: `<s><grounding>${rng.bool(0.3) ? " an image of" : ""} <phrase> ${phrase} </phrase> <object>` },
      { kind: "image", image: { kind: "mask", mask: { box: qbox, thicknessPx: this.boxMaskThicknessPx } } },
      { kind: "text", text: `</object>${bg ? ` on a ${bg} background` : ""}` },
    ];
    const ex = this.withGenerated("grounded", index, segments, target);
    ex.expect = { kind: "grounded", box: qbox, shape: spec.shape, color: spec.color };
    return ex;
  }

  /** Text → video: `[VIDEO]` then one `[IMG] [gIMG]×N [/IMG]` block per frame, all regressed. */
  private videoExample(rng: Rng, index: number): Example {
    const direction = rng.pick(DIRECTIONS);
    const horizontal = direction === "left" || direction === "right";
    const shape = rng.pick(SHAPES);
    const color = rng.pick(COLORS);
    const size = rng.bool(0.5) ? rng.pick(SIZES) : null;
    const bg = rng.bool(0.35) ? rng.pick(BACKGROUNDS) : null;
    // The lane across the grid: said in the prompt or the middle one by default.
    const lane = rng.bool(0.5) ? rng.int(3) : null;
    const laneText = lane === null
      ? ""
      : " " + (horizontal ? ["at the top", "in the middle", "at the bottom"] : ["on the left", "in the middle", "on the right"])[lane];
    const words = size ? [size, color, shape] : [color, shape];
    const object = `${/^[aeiou]/.test(words[0] as string) ? "an" : "a"} ${words.join(" ")}`;
    const text = `<s>${object} ${rng.pick(DIRECTION_PHRASES[direction])}${laneText}${bg ? ` on a ${bg} background` : ""} [VIDEO]`;
    const segments: Segment[] = [{ kind: "text", text }];
    const promptLength = segments.length;
    for (const scene of videoFrames({ shape, color, size: size ?? DEFAULT_SIZE }, direction, lane ?? 1, bg ?? DEFAULT_BACKGROUND, this.videoFrames)) {
      segments.push({ kind: "generate", image: { kind: "scene", scene }, slot: "frame" });
    }
    return { task: "video", index, segments, promptLength, expect: { kind: "video", direction, shape, color } };
  }

  private withGenerated(task: Task, index: number, segments: Segment[], target: Scene): Example {
    const promptLength = segments.length;
    segments.push({ kind: "generate", image: { kind: "scene", scene: target }, slot: "image" });
    const o = target.objects[0] as ShapeObject;
    return {
      task, index, segments, promptLength,
      expect: { kind: "image", shape: o.shape, color: o.color, cell: cellOfObject(o), background: target.background },
    };
  }
}

const FEWSHOT_ATTRS = ["shape", "color", "size"] as const;
/** The attribute a few-shot episode's nonce labels name (its `expect.attr`; the scorer breaks 2- and 4-shot down by it). */
export type FewshotAttr = (typeof FEWSHOT_ATTRS)[number];

/**
 * Whether few-shot demonstrations labelled by `attr` pin down the query's label: every attribute
 * under which the labels are consistent (same label exactly where the same value) and which some
 * demonstration shares with the query names the same label as `attr` does. The ideal learner of
 * `research/fewshot_ceiling.py` is then certain (it votes where they disagree).
 */
export function determinedByDemos(demos: ShapeObject[], query: ShapeObject, attr: (typeof FEWSHOT_ATTRS)[number]): boolean {
  const labelOf = (o: ShapeObject): string => o[attr];
  const answer = demos.find((d) => d[attr] === query[attr]);
  if (!answer) return false;
  return FEWSHOT_ATTRS.every((a) => {
    const consistent = demos.every((d) => demos.every((e) => (d[a] === e[a]) === (labelOf(d) === labelOf(e))));
    if (!consistent) return true;
    // An attribute no demonstration shares with the query is ruled out: the label is always shown.
    const named = demos.find((d) => d[a] === query[a]);
    return named === undefined || labelOf(named) === labelOf(answer);
  });
}

function cellOfObject(o: ShapeObject): number {
  const step = IMAGE_SIZE / 3;
  return Math.min(2, Math.floor(o.y / step)) * 3 + Math.min(2, Math.floor(o.x / step));
}

/** Frames of one shape crossing the grid along a lane (row for left/right, column for up/down). */
export function videoFrames(
  obj: { shape: ShapeObject["shape"]; color: ShapeObject["color"]; size: ShapeObject["size"] },
  direction: Direction, lane: number, background: Background, frames: number,
): Scene[] {
  const horizontal = direction === "left" || direction === "right";
  const start = cellCentre(0).x;
  const end = cellCentre(2).x;
  const out: Scene[] = [];
  for (let f = 0; f < frames; f++) {
    const t = frames === 1 ? 0 : f / (frames - 1);
    const forward = direction === "right" || direction === "down";
    const along = forward ? start + (end - start) * t : end - (end - start) * t;
    const across = horizontal ? cellCentre(lane * 3).y : cellCentre(lane).x;
    const p = clampCentre(obj, horizontal ? along : across, horizontal ? across : along);
    out.push({ background, objects: [{ ...obj, x: p.x, y: p.y }] });
  }
  return out;
}

/** Minimum displacement (px) between first and last frame that counts as motion. */
export const MIN_VIDEO_MOTION_PX = RADIUS.small;
