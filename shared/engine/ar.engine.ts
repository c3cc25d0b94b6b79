/**
 * The autoregressive engine: KV-cached generation of text (greedy, sampling, beam search, stops)
 * and regression of visual embeddings (IMAGE: tokens_per_image; VIDEO: frames × tokens_per_image),
 * as Emu2's predict-the-next-element. `ArBatch` runs many sequences together and lets new ones join
 * between decoding steps (continuous batching); each row carries its own state and callbacks.
 */
import type { Embeddings } from "./visual-encoder.engine.ts";
import type { KvCache, LanguageModel } from "./language-model.ts";
import { Rng } from "./random.ts";
import { chooseToken, DEFAULT_SAMPLING, logSoftmax, type SamplingParams } from "./sampling.ts";
import type { Sequence, SequenceBuilder } from "./sequence.ts";
import type { EmuTokenizer } from "./tokenizer.ts";

export type GenerationMode = "text" | "image" | "video";
export type FinishReason = "stop" | "length" | "canceled";

export interface TextOptions extends SamplingParams {
  maxNewTokens: number;
  stop: string[];
  seed: number;
  numBeams: number;
  lengthPenalty: number;
}

export interface GenerationRequest {
  /** Built by SequenceBuilder; for image/video it ends with [IMG] / [VIDEO]. */
  sequence: Sequence;
  /** Embeddings of `sequence.images`, in order. */
  images: Embeddings;
  mode: GenerationMode;
  text?: Partial<TextOptions>;
  /** Frames for video mode. */
  frames?: number;
  signal?: AbortSignal;
  onToken?: (token: number, textSoFar: string) => void;
  /** Called with each completed image / frame: tokens × dim floats. */
  onVisual?: (index: number, embeddings: Float32Array) => void;
}

export interface GenerationResult {
  tokens: number[];
  text: string;
  /** frames × tokens × dim (1 frame for image mode). */
  visual: Float32Array;
  finishReason: FinishReason;
  usage: { promptTokens: number; completionTokens: number };
}

export class AbortedError extends Error {
  readonly code = "canceled";
  constructor() {
    super("generation was canceled");
  }
}

export interface ArEngineOptions {
  lm: LanguageModel;
  builder: SequenceBuilder;
  tokenizer: EmuTokenizer;
  /** Longest sequence (prompt + generated); from the manifest's max_positions. */
  maxPositions: number;
  defaults: { maxNewTokens: number; numBeams: number; temperature: number };
}

interface PendingInput {
  embed: Float32Array;
  /** Whether the output after this input is a visual slot to keep. */
  keep: boolean;
}

interface Row {
  req: GenerationRequest;
  opts: TextOptions;
  rng: Rng;
  mask: number[];
  nextPosition: number;
  promptTokens: number;
  seen: number[];
  generated: number[];
  visual: Float32Array;
  slots: number;
  totalSlots: number;
  pending: PendingInput[];
  resolve: (r: GenerationResult) => void;
  reject: (e: unknown) => void;
  finish?: FinishReason;
}

export class ArEngine {
  readonly lm: LanguageModel;
  readonly builder: SequenceBuilder;
  readonly tokenizer: EmuTokenizer;
  readonly maxPositions: number;
  private readonly defaults: ArEngineOptions["defaults"];
  private negative: Promise<Float32Array> | null = null;

  constructor(opts: ArEngineOptions) {
    this.lm = opts.lm;
    this.builder = opts.builder;
    this.tokenizer = opts.tokenizer;
    this.maxPositions = opts.maxPositions;
    this.defaults = opts.defaults;
  }

  textOptions(partial: Partial<TextOptions> = {}): TextOptions {
    return {
      ...DEFAULT_SAMPLING,
      maxNewTokens: this.defaults.maxNewTokens,
      numBeams: this.defaults.numBeams,
      temperature: this.defaults.temperature,
      stop: [],
      seed: 0,
      lengthPenalty: 1,
      ...Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)),
    };
  }

  /** Runs one request to completion (beam search when numBeams > 1). */
  async generate(req: GenerationRequest): Promise<GenerationResult> {
    if (req.mode === "text" && this.textOptions(req.text).numBeams > 1) return this.beamSearch(req);
    const batch = new ArBatch(this);
    const done = batch.add(req);
    while (batch.size > 0) await batch.step();
    return done;
  }

  /**
   * The unconditional visual tokens for classifier-free guidance: the regression after `<s>[IMG]`,
   * computed once and cached (Emu2 caches its negative prompt the same way).
   */
  async unconditional(): Promise<Float32Array> {
    this.negative ??= this.generate({
      sequence: this.builder.build("image", []),
      images: { count: 0, tokens: this.builder.tokensPerImage, dim: this.lm.shape.dim, data: new Float32Array(0) },
      mode: "image",
    }).then((r) => r.visual);
    return this.negative;
  }

  /**
   * Input embeddings of a sequence with its image slots spliced (project_up of the encoder tokens)
   * and, for a model with an image summary, each image's summary added at its closing `[/IMG]`.
   */
  async embedSequence(seq: Sequence, images: Embeddings): Promise<Float32Array> {
    this.builder.check(seq);
    if (images.count !== seq.images.length) throw new Error(`${seq.images.length} images in the sequence, ${images.count} embedded`);
    const h = this.lm.shape.hidden;
    const x = await this.lm.embed([seq.ids]);
    const up = await this.lm.projectUp(images.data, images.count * images.tokens);
    const summaries = await this.lm.summarize(images.data, images.count, images.tokens);
    let k = 0;
    seq.ids.forEach((id, i) => {
      if (id === this.builder.ids.image || id === this.builder.ids.frame) {
        x.set(up.subarray(k * h, (k + 1) * h), i * h);
        k++;
      } else if (id === this.builder.ids.imgEnd && summaries.length > 0 && (seq.ids[i - 1] === this.builder.ids.image || seq.ids[i - 1] === this.builder.ids.frame)) {
        addInto(x, i * h, summaries.subarray((k / images.tokens - 1) * h, (k / images.tokens) * h));
      }
    });
    return x;
  }

  private async beamSearch(req: GenerationRequest): Promise<GenerationResult> {
    const opts = this.textOptions(req.text);
    const beams = opts.numBeams;
    const lm = this.lm;
    const v = lm.shape.vocab;
    const prompt = await this.embedSequence(req.sequence, req.images);
    const t = req.sequence.ids.length;
    this.checkLength(t, opts.maxNewTokens);
    let out = await lm.forward(prompt, 1, t, [new Array<number>(t).fill(1)], [Array.from({ length: t }, (_, i) => i)], lm.emptyCache(1));
    let cache = lm.gatherRows(out.present, new Array<number>(beams).fill(0));
    let lastLogits = [out.logits.subarray((t - 1) * v, t * v)];
    let hyps: { tokens: number[]; score: number }[] = [{ tokens: [], score: 0 }];
    const finished: { tokens: number[]; score: number }[] = [];
    const stopIds = this.stopIds();
    const lengthScore = (sum: number, len: number): number => sum / Math.pow(Math.max(1, len), opts.lengthPenalty);
    for (let step = 0; step < opts.maxNewTokens; step++) {
      if (req.signal?.aborted) throw new AbortedError();
      const cands: { beam: number; token: number; score: number }[] = [];
      hyps.forEach((hyp, b) => {
        const logits = Float32Array.from(lastLogits[b] as Float32Array);
        if (opts.repetitionPenalty !== 1) for (const id of new Set([...req.sequence.ids, ...hyp.tokens])) logits[id] = (logits[id] as number) > 0 ? (logits[id] as number) / opts.repetitionPenalty : (logits[id] as number) * opts.repetitionPenalty;
        const lp = logSoftmax(logits);
        const order = Array.from(lp.keys()).sort((a, c) => (lp[c] as number) - (lp[a] as number)).slice(0, 2 * beams);
        for (const tok of order) cands.push({ beam: b, token: tok, score: hyp.score + (lp[tok] as number) });
      });
      cands.sort((a, c) => c.score - a.score);
      const next: { beam: number; token: number; score: number }[] = [];
      for (const c of cands) {
        const tokens = [...(hyps[c.beam] as { tokens: number[] }).tokens, c.token];
        if (stopIds.has(c.token)) finished.push({ tokens, score: lengthScore(c.score, tokens.length) });
        else next.push(c);
        if (next.length === beams) break;
      }
      const bestFinished = finished.reduce((m, f) => Math.max(m, f.score), -Infinity);
      const bestOpen = next.length ? lengthScore(next[0]!.score, hyps[next[0]!.beam]!.tokens.length + 1) : -Infinity;
      if (next.length === 0 || (finished.length >= beams && bestFinished >= bestOpen)) break;
      hyps = next.map((c) => ({ tokens: [...(hyps[c.beam] as { tokens: number[] }).tokens, c.token], score: c.score }));
      cache = lm.gatherRows(cache, next.map((c) => c.beam));
      const x = await lm.embed(next.map((c) => [c.token]));
      const len = t + step + 1;
      out = await lm.forward(x, next.length, 1, next.map(() => new Array<number>(len).fill(1)), next.map(() => [len - 1]), cache);
      cache = out.present;
      lastLogits = next.map((_, b) => out.logits.subarray(b * v, (b + 1) * v));
    }
    const pool = finished.length ? finished : hyps.map((hyp) => ({ tokens: hyp.tokens, score: lengthScore(hyp.score, hyp.tokens.length) }));
    const best = pool.reduce((a, b) => (b.score > a.score ? b : a));
    const tokens = best.tokens.filter((tk) => !stopIds.has(tk));
    const { text, cut } = this.applyStops(tokens, opts.stop);
    return {
      tokens: cut, text, visual: new Float32Array(0), finishReason: finished.length ? "stop" : "length",
      usage: { promptTokens: t, completionTokens: best.tokens.length },
    };
  }

  /** Token ids that end text generation: EOS, and `[IMG]` (the model asking to draw, which text mode cannot). */
  stopIds(): Set<number> {
    return new Set([this.builder.ids.eos, this.builder.ids.imgStart]);
  }

  /** Cuts decoded text at the first stop string. */
  applyStops(tokens: number[], stops: string[]): { text: string; cut: number[]; stopped: boolean } {
    const text = this.tokenizer.decode(tokens);
    for (const s of stops) {
      const i = s ? text.indexOf(s) : -1;
      if (i >= 0) {
        // Keep the tokens whose decoded text lies before the stop string.
        let cut = tokens.length;
        while (cut > 0 && this.tokenizer.decode(tokens.slice(0, cut)).length > i) cut--;
        return { text: text.slice(0, i).trimEnd(), cut: tokens.slice(0, cut), stopped: true };
      }
    }
    return { text, cut: tokens, stopped: false };
  }

  checkLength(promptTokens: number, extra: number): void {
    if (promptTokens + extra > this.maxPositions) {
      throw new SequenceTooLongError(`the prompt is ${promptTokens} tokens and ${extra} more are needed; the model reads at most ${this.maxPositions}`);
    }
  }
}

export class SequenceTooLongError extends Error {
  readonly code = "prompt_too_long";
}

/**
 * A running batch. `add` prefills new sequences and merges them into the batch; `step` advances
 * every row by one position. Rows leave when they finish; their promises settle then.
 */
export class ArBatch {
  private rows: Row[] = [];
  private cache: KvCache;
  private joining: { row: Row; promptEmbeds: Promise<Float32Array>; queuedAt: number }[] = [];

  /** `onAdmit` gets each request's wait between `add` and the prefill that admits it. */
  constructor(private readonly engine: ArEngine, private readonly hooks: { onAdmit?: (waitMs: number) => void } = {}) {
    this.cache = engine.lm.emptyCache(0);
  }

  get size(): number {
    return this.rows.length + this.joining.length;
  }

  /** Queues a request; it joins the batch at the next step. Resolves when it finishes. */
  add(req: GenerationRequest): Promise<GenerationResult> {
    const e = this.engine;
    const opts = e.textOptions(req.text);
    const tpi = e.builder.tokensPerImage;
    const frames = req.mode === "video" ? Math.max(1, req.frames ?? 1) : 1;
    const totalSlots = req.mode === "text" ? 0 : frames * tpi;
    const extra = req.mode === "text" ? opts.maxNewTokens : totalSlots + 3 * frames;
    e.checkLength(req.sequence.ids.length, extra);
    return new Promise<GenerationResult>((resolve, reject) => {
      const row: Row = {
        req, opts, rng: new Rng(opts.seed), mask: [], nextPosition: 0, promptTokens: req.sequence.ids.length,
        seen: [...req.sequence.ids], generated: [], visual: new Float32Array(totalSlots * e.lm.shape.dim), slots: 0, totalSlots,
        pending: [], resolve, reject,
      };
      // Video: the prompt ends with [VIDEO]; the first frame opens with [IMG].
      const seq = req.mode === "video" ? { ...req.sequence, ids: [...req.sequence.ids, e.builder.ids.imgStart] } : req.sequence;
      this.joining.push({ row, promptEmbeds: e.embedSequence(seq, req.images), queuedAt: Date.now() });
      row.promptTokens = seq.ids.length;
    });
  }

  private async admit(): Promise<void> {
    if (this.joining.length === 0) return;
    const e = this.engine;
    const joining = this.joining;
    this.joining = [];
    const h = e.lm.shape.hidden;
    const ready: { row: Row; x: Float32Array }[] = [];
    const now = Date.now();
    for (const j of joining) this.hooks.onAdmit?.(now - j.queuedAt);
    for (const j of joining) {
      try {
        ready.push({ row: j.row, x: await j.promptEmbeds });
      } catch (err) {
        j.row.reject(err);
      }
    }
    if (ready.length === 0) return;
    const t = Math.max(...ready.map((r) => r.row.promptTokens));
    const x = new Float32Array(ready.length * t * h);
    const mask: number[][] = [];
    const pos: number[][] = [];
    ready.forEach(({ row, x: emb }, r) => {
      const pad = t - row.promptTokens;
      x.set(emb, (r * t + pad) * h);
      mask.push([...new Array<number>(pad).fill(0), ...new Array<number>(row.promptTokens).fill(1)]);
      pos.push(Array.from({ length: t }, (_, i) => Math.max(0, i - pad)));
    });
    const out = await e.lm.forward(x, ready.length, t, mask, pos, e.lm.emptyCache(ready.length));
    // Merge: existing rows' masks gain left padding if the new cache is longer, and vice versa.
    const length = Math.max(this.cache.length, t);
    for (const row of this.rows) row.mask = [...new Array<number>(length - row.mask.length).fill(0), ...row.mask];
    this.cache = e.lm.concatRows(this.cache, out.present);
    const v = e.lm.shape.vocab;
    const d = e.lm.shape.dim;
    const newRows: Row[] = [];
    ready.forEach(({ row }, r) => {
      row.mask = [...new Array<number>(length - t).fill(0), ...(mask[r] as number[])];
      row.nextPosition = row.promptTokens;
      this.rows.push(row);
      newRows.push(row);
    });
    await this.consume(newRows, (r) => out.logits.subarray((r * t + t - 1) * v, (r * t + t) * v), (r) => out.visual.subarray((r * t + t - 1) * d, (r * t + t) * d), true);
  }

  /** Rejects every row (an engine failure) and empties the batch. */
  failAll(err: unknown): void {
    for (const r of this.rows) r.reject(err);
    for (const j of this.joining) j.row.reject(err);
    this.rows = [];
    this.joining = [];
    this.cache = this.engine.lm.emptyCache(0);
  }

  /** One decoding step for every row (after admitting queued requests). */
  async step(): Promise<void> {
    await this.admit();
    this.dropFinished();
    if (this.rows.length === 0) return;
    const e = this.engine;
    const h = e.lm.shape.hidden;
    const b = this.rows.length;
    const x = new Float32Array(b * h);
    this.rows.forEach((row, r) => x.set((row.pending[0] as PendingInput).embed, r * h));
    const mask = this.rows.map((row) => [...row.mask, 1]);
    const pos = this.rows.map((row) => [row.nextPosition]);
    const out = await e.lm.forward(x, b, 1, mask, pos, this.cache);
    this.cache = out.present;
    const rows = this.rows;
    rows.forEach((row, r) => {
      row.mask = mask[r] as number[];
      row.nextPosition++;
    });
    const v = e.lm.shape.vocab;
    const d = e.lm.shape.dim;
    await this.consume(rows, (r) => out.logits.subarray(r * v, (r + 1) * v), (r) => out.visual.subarray(r * d, (r + 1) * d), false);
    this.dropFinished();
  }

  /** Reads each row's new output and queues its next input. */
  private async consume(rows: Row[], logitsOf: (r: number) => Float32Array, visualOf: (r: number) => Float32Array, first: boolean): Promise<void> {
    const e = this.engine;
    const stopIds = e.stopIds();
    const textRows: { row: Row; token: number }[] = [];
    const visRows: { row: Row; vec: Float32Array }[] = [];
    rows.forEach((row, r) => {
      if (row.req.signal?.aborted) { row.finish = "canceled"; return; }
      if (row.req.mode === "text") {
        const token = chooseToken(Float32Array.from(logitsOf(r)), row.opts, row.seen, row.rng);
        if (stopIds.has(token)) { row.finish = "stop"; return; }
        row.generated.push(token);
        row.seen.push(token);
        const { stopped, text } = e.applyStops(row.generated, row.opts.stop);
        row.req.onToken?.(token, text);
        if (stopped) { row.finish = "stop"; return; }
        if (row.generated.length >= row.opts.maxNewTokens) { row.finish = "length"; return; }
        textRows.push({ row, token });
        return;
      }
      const keep = first || (row.pending.shift() as PendingInput).keep;
      if (!keep) { visRows.push({ row, vec: new Float32Array(0) }); return; }
      const vec = Float32Array.from(visualOf(r));
      const dim = e.lm.shape.dim;
      row.visual.set(vec, row.slots * dim);
      row.slots++;
      const tpi = e.builder.tokensPerImage;
      if (row.slots % tpi === 0) row.req.onVisual?.(row.slots / tpi - 1, row.visual.subarray((row.slots - tpi) * dim, row.slots * dim));
      if (row.slots >= row.totalSlots) { row.finish = "stop"; return; }
      visRows.push({ row, vec });
    });
    if (textRows.length) {
      const emb = await e.lm.embed(textRows.map((t) => [t.token]));
      const h = e.lm.shape.hidden;
      textRows.forEach((t, i) => { t.row.pending = [{ embed: emb.subarray(i * h, (i + 1) * h), keep: false }]; });
    }
    const toProject = visRows.filter((v) => v.vec.length > 0);
    if (toProject.length) {
      const d = e.lm.shape.dim;
      const h = e.lm.shape.hidden;
      const flat = new Float32Array(toProject.length * d);
      toProject.forEach((v, i) => flat.set(v.vec, i * d));
      const up = await e.lm.projectUp(flat, toProject.length);
      const frameEnd = await e.lm.embed([[e.builder.ids.imgEnd], [e.builder.ids.imgStart]]);
      const tpi = e.builder.tokensPerImage;
      // Frames that end here: their [/IMG] carries the summary of the frame just regressed.
      const ending = toProject.filter((v) => v.row.slots % tpi === 0);
      const frames = new Float32Array(ending.length * tpi * d);
      ending.forEach((v, i) => frames.set(v.row.visual.subarray((v.row.slots - tpi) * d, v.row.slots * d), i * tpi * d));
      const summaries = await e.lm.summarize(frames, ending.length, tpi);
      let j = 0; // index into `ending` (same order as toProject)
      toProject.forEach((v, i) => {
        const embed = up.subarray(i * h, (i + 1) * h);
        if (v.row.slots % tpi !== 0) {
          v.row.pending.push({ embed, keep: true });
        } else {
          // End of a frame: read the last slot, close with [/IMG], open the next frame with [IMG].
          const close = Float32Array.from(frameEnd.subarray(0, h));
          if (summaries.length > 0) addInto(close, 0, summaries.subarray(j * h, (j + 1) * h));
          j++;
          v.row.pending.push({ embed, keep: false }, { embed: close, keep: false }, { embed: frameEnd.subarray(h, 2 * h), keep: true });
        }
      });
    }
  }

  private dropFinished(): void {
    const keep: number[] = [];
    const e = this.engine;
    this.rows.forEach((row, i) => {
      if (row.finish === undefined) { keep.push(i); return; }
      if (row.finish === "canceled") { row.reject(new AbortedError()); return; }
      const { text, cut } = row.req.mode === "text" ? e.applyStops(row.generated, row.opts.stop) : { text: "", cut: [] };
      row.resolve({
        tokens: cut, text, visual: row.visual, finishReason: row.finish,
        usage: { promptTokens: row.promptTokens, completionTokens: row.req.mode === "text" ? row.generated.length : row.slots },
      });
    });
    if (keep.length === this.rows.length) return;
    this.cache = keep.length ? e.lm.gatherRows(this.cache, keep) : e.lm.emptyCache(0);
    this.rows = keep.map((i) => this.rows[i] as Row);
    // Positions every remaining row masks out on the left can go.
    const minPad = this.rows.length ? Math.min(...this.rows.map((r) => r.mask.indexOf(1))) : 0;
    if (minPad > 0) {
      this.cache = trimLeft(this.cache, minPad, e.lm.shape.heads, e.lm.shape.headDim);
      for (const r of this.rows) r.mask = r.mask.slice(minPad);
    }
  }
}

/** dst[offset + i] += src[i]. */
function addInto(dst: Float32Array, offset: number, src: Float32Array): void {
  for (let i = 0; i < src.length; i++) dst[offset + i] = (dst[offset + i] as number) + (src[i] as number);
}

function trimLeft(cache: KvCache, n: number, heads: number, headDim: number): KvCache {
  const length = cache.length - n;
  const cut = (src: Float32Array): Float32Array => {
    const dst = new Float32Array(cache.batch * heads * length * headDim);
    for (let bh = 0; bh < cache.batch * heads; bh++) {
      dst.set(src.subarray((bh * cache.length + n) * headDim, (bh + 1) * cache.length * headDim), bh * length * headDim);
    }
    return dst;
  };
  return { batch: cache.batch, length, keys: cache.keys.map(cut), values: cache.values.map(cut) };
}
